"""Precision variants of an exported model (FP16, INT8), each gated on the run's held-out data.

    fp32 model.onnx (parity-gated) ──build (ONNX Runtime's tools)──▶ candidate
        ──accuracy gate on held-out data, against the fp32 ONNX model──▶ kept, or the next step of
        the variant's recovery ladder; a variant whose every step fails is dropped with the reason
    kept variants ──latency at batch 1 and 32, side by side──▶ speedups, flags, the default variant

- INT8, image models: static QDQ, calibrated on the run's class-stratified training images
  (``calibration.safetensors``; at least ``MIN_CALIBRATION``). Text encoders: dynamic (int8
  weights, activations quantized per batch at run time): no calibration.
- FP16: ONNX Runtime's float16 converter with fp32 inputs and outputs, and the overflow-prone ops
  (normalizations, softmax, reductions, exp/pow/log) kept in fp32.
- The gate (``specs.VARIANT_GATES``), on the run's held-out set (its validation set up to 2,000
  samples / 128 MB): no NaN or Inf on any held-out sample, accuracy and macro-F1
  within the allowed drop of the fp32 model's, and for INT8 top-1 agreement with fp32.
- Ladders, tried in order, each logged: INT8 static (U8S8): per-channel MinMax, percentile
  calibration, the first and last layers (stem, classifier head) in fp32, then also the sensitive
  nodes (found by comparing every intermediate tensor with fp32) in fp32, then U8U8 with
  reduce_range. INT8 dynamic: per-tensor, per-channel, then the same exclusions, then U8U8
  reduce_range. FP16: the default block list, then the sensitive nodes too.

Everything runs on the CPU execution provider: it is deterministic, and it is what a device
without an accelerator runs (fp16 on a CPU runs through casts: accuracy is checked, speed is not
its point there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgetune.errors import FailedPrecondition, InvalidArgument
from edgetune.progress import LogLine, ProgressSink, silent
from edgetune.trainers.metrics import confusion_matrix, summarize

from .latency import median_ms
from .parity import Feed
from .specs import FP16, FP32, INT8, THREADS_ENV, VARIANT_GATES, VariantGate

MIN_CALIBRATION = 100  # fewer calibration images than this: INT8 is refused, not guessed
CALIBRATION_BATCH = 20  # equal batches (histogram calibrators need them): 300 = 15 x 20
HELDOUT_BATCH = 32
LATENCY_BATCHES = (1, 32)
SPEEDUP_FLOOR = 1.1  # a variant slower than this over fp32 at batch 1 is flagged, never the default
SENSITIVE_SHARE = 0.2  # share of the candidate nodes the sensitivity steps keep in fp32 (at least 1)
FILES = {FP32: "model.onnx", FP16: "model.fp16.onnx", INT8: "model.int8.onnx"}

# Kept in fp32 by the FP16 converter (besides its own default list): where fp16's range overflows
# or its precision sums badly.
FP16_BLOCK_LIST = ["LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                   "BatchNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "LogSoftmax",
                   "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt",
                   "Reciprocal", "Exp", "Log", "Range", "CumSum", "Erf"]
QUANTIZED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "Attention"}


@dataclass
class HeldOut:
    """Held-out inputs in batches, with every sample's true class index."""

    feeds: list[Feed]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class VariantInputs:
    """What building and gating variants needs from the task's builder."""

    heldout: HeldOut
    timing: dict[int, Feed]  # batch size -> a feed to time
    calibration: list[Feed] | None  # static INT8 calibration batches; None: dynamic INT8 (text)
    calibration_samples: int = 0


@dataclass(frozen=True)
class Step:
    """One rung of a ladder: a description, the tool's settings, and what stays in fp32: the first
    and last quantizable layers (``keep_ends``: the stem and the classifier head, the usual
    suspects), and the sensitive nodes found against the first attempt (``exclude_sensitive``)."""

    name: str
    settings: dict = field(default_factory=dict)
    exclude_sensitive: bool = False
    keep_ends: bool = False


# U8S8 first: ONNX Runtime's x86 kernels are fastest with uint8 activations and int8 weights
# (ResNet-18 at 32 px, batch 1: S8S8 4.3x slower than fp32 here, U8S8 faster than it). Without
# VNNI, U8S8 can saturate: reduce_range (7-bit weights) is the ladder's answer, then U8U8.
# ImageNet EfficientNet-Lite0 tuned on digits needed the third step (1.9 pt lost with everything
# quantized).
_U8S8 = {"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8"}
STATIC_INT8 = (
    Step("static QDQ U8S8, per-channel weights, MinMax calibration", {**_U8S8, "calibrate_method": "MinMax"}),
    Step("static QDQ U8S8, per-channel weights, percentile calibration (99.999)",
         {**_U8S8, "calibrate_method": "Percentile"}),
    Step("static QDQ U8S8, per-channel, MinMax, first and last layers in fp32",
         {**_U8S8, "calibrate_method": "MinMax"}, keep_ends=True),
    Step("static QDQ U8S8, per-channel, MinMax, first and last layers and the sensitive nodes in fp32",
         {**_U8S8, "calibrate_method": "MinMax"}, True, True),
    Step("static QDQ U8U8, per-channel, reduce_range, percentile, first/last layers and sensitive nodes in fp32",
         {**_U8S8, "weight_type": "QUInt8", "calibrate_method": "Percentile", "reduce_range": True}, True, True),
)
DYNAMIC_INT8 = (
    Step("dynamic, int8 weights per tensor", {"per_channel": False, "weight_type": "QInt8"}),
    Step("dynamic, int8 weights per channel", {"per_channel": True, "weight_type": "QInt8"}),
    Step("dynamic, per channel, first and last layers in fp32", {"per_channel": True, "weight_type": "QInt8"},
         keep_ends=True),
    Step("dynamic, per channel, first/last layers and sensitive nodes in fp32",
         {"per_channel": True, "weight_type": "QInt8"}, True, True),
    Step("dynamic U8U8, per channel, reduce_range, first/last layers and sensitive nodes in fp32",
         {"per_channel": True, "weight_type": "QUInt8", "reduce_range": True}, True, True),
)
FP16_STEPS = (
    Step("float16, fp32 inputs/outputs, overflow-prone ops in fp32", {"keep_io_types": True}),
    Step("float16, overflow-prone ops and the sensitive nodes in fp32", {"keep_io_types": True}, True),
)


def ladder(precision: str, static: bool) -> tuple[Step, ...]:
    if precision == FP16:
        return FP16_STEPS
    return STATIC_INT8 if static else DYNAMIC_INT8


# ---- the gate ---------------------------------------------------------------------------------

def session_threads() -> int:
    """Intra-op threads of the export's sessions: its share of the cores in a batch, else all of them."""
    return max(1, int(os.environ.get(THREADS_ENV) or 0) or (os.cpu_count() or 1))


def cpu_session(model: str | Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = session_threads()
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def logits_of(session: ort.InferenceSession, feeds: list[Feed]) -> np.ndarray:
    return np.concatenate([session.run(None, feed)[0] for feed in feeds]).astype(np.float64)


def metrics_of(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and macro-F1 of logits against true class indices (NaN rows count as wrong)."""
    classes = logits.shape[1]
    predicted = np.where(np.isfinite(logits).all(axis=1), np.nan_to_num(logits).argmax(axis=1), -1)
    wrong = predicted < 0
    cm = confusion_matrix(labels, np.where(wrong, (labels + 1) % max(classes, 2), predicted), max(classes, 2))
    return summarize(cm)


def gate_report(gate: VariantGate, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict:
    """The held-out gate of one candidate against the fp32 model's logits (JSON-safe)."""
    ref_m, got_m = metrics_of(reference, labels), metrics_of(candidate, labels)
    nonfinite = int((~np.isfinite(candidate).all(axis=1)).sum())
    agreement = float((reference.argmax(1) == np.nan_to_num(candidate).argmax(1)).mean()) if len(labels) else 0.0
    drop = {k: round(100 * (ref_m[k] - got_m[k]), 4) for k in ("accuracy", "macro_f1")}
    failures = []
    if nonfinite:
        failures.append(f"{nonfinite} held-out samples give NaN or Inf")
    for k, d in drop.items():
        if d > gate.max_drop_pt:
            failures.append(f"{k.replace('_', '-')} drops {d:.2f} pt (allowed {gate.max_drop_pt} pt)")
    if gate.min_agreement is not None and agreement < gate.min_agreement:
        failures.append(f"top-1 agreement with fp32 {agreement:.2%} (needs {gate.min_agreement:.0%})")
    return {"passed": not failures, "samples": int(len(labels)), "fp32": ref_m, "variant": got_m,
            "drop_pt": drop, "top1_agreement": agreement, "nonfinite": nonfinite,
            "rule": gate.to_dict(), "failures": failures, "provider": "CPUExecutionProvider"}


# ---- building ---------------------------------------------------------------------------------

def without_value_info(fp32: Path, out: Path) -> Path:
    """The model without the exporter's intermediate shape annotations: some of the torch exporter's
    sample-batch shapes contradict ONNX's own inference, which the conversion tools then refuse."""
    model = onnx.load(str(fp32))
    del model.graph.value_info[:]
    onnx.save_model(model, str(out))
    return out


def preprocess_for_quantization(fp32: Path, work: Path) -> Path:
    """ONNX Runtime's pre-processing (ONNX shape inference, graph optimizations) before quantizing;
    the model as it is when that pre-processing cannot handle it. Not its symbolic shape inference:
    where that fails it dumps a model into the working directory, and ONNX's suffices here."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    clean = without_value_info(fp32, work / "clean.onnx")
    out = work / "pre.onnx"
    with _quiet():
        try:
            quant_pre_process(str(clean), str(out), skip_symbolic_shape=True)
            return out
        except Exception:  # noqa: BLE001 - the quantizer then works on the model as exported
            return clean


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a fixed list of feeds (rewindable)."""

    def __init__(self, feeds: list[Feed]):
        self.feeds, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0


def build_int8(source: Path, out: Path, step: Step, calibration: list[Feed] | None, exclude: list[str]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    s = step.settings
    common = {"per_channel": s["per_channel"], "reduce_range": s.get("reduce_range", False),
              "weight_type": QuantType[s["weight_type"]], "nodes_to_exclude": list(exclude)}
    with _quiet():
        if calibration is None:
            quantize_dynamic(str(source), str(out), op_types_to_quantize=["MatMul", "Gemm", "Gather", "Attention"],
                             **common)
        else:
            quantize_static(str(source), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType[s["activation_type"]],
                            calibrate_method=CalibrationMethod[s["calibrate_method"]], **common)
    return out


def build_fp16(source: Path, out: Path, step: Step, exclude: list[str]) -> Path:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    with _quiet():
        model = convert_float_to_float16(model, keep_io_types=step.settings["keep_io_types"],
                                         op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCK_LIST)),
                                         node_block_list=list(exclude))
    _drop_repeated_nodes(model.graph)
    _sort_topologically(model.graph)
    onnx.save_model(model, str(out))
    onnx.checker.check_model(str(out))
    return out


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Order nodes so each comes after the producers of its inputs (the converter appends its Casts
    where it makes them); a stable sort: already-ordered nodes keep their order."""
    produced_by = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    order, state = [], [0] * len(graph.node)  # 0 new, 1 on the stack, 2 placed

    def visit(start: int) -> None:
        stack = [(start, iter(graph.node[start].input))]
        state[start] = 1
        while stack:
            i, inputs = stack[-1]
            for name in inputs:
                j = produced_by.get(name)
                if j is not None and state[j] == 0:
                    state[j] = 1
                    stack.append((j, iter(graph.node[j].input)))
                    break
            else:
                stack.pop()
                state[i] = 2
                order.append(graph.node[i])

    for i in range(len(graph.node)):
        if state[i] == 0:
            visit(i)
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_repeated_nodes(graph: onnx.GraphProto) -> None:
    """The float16 converter inserts one Cast per consumer of an initializer that blocked ops read,
    all with one name and output (an invalid graph when a weight is shared): keep the first."""
    seen, keep = set(), []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            keep.append(node)
    if len(keep) < len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools print progress and log advice; a job log wants neither."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def end_nodes(model: Path, op_types: set[str] | None) -> list[str]:
    """The first and the last node of ``op_types`` (every node when None), in graph order, that
    read a float weight (a matrix or a kernel): the stem and the head, not a shape Gather."""
    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer if len(t.dims) >= 2 and
               t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    nodes = [n.name for n in graph.node if n.name and (op_types is None or n.op_type in op_types)
             and any(i in weights for i in n.input)]
    return list(dict.fromkeys(nodes[:1] + nodes[-1:]))


def sensitive_nodes(reference: Path, candidate: Path, feeds: list[Feed], op_types: set[str] | None,
                    share: float = SENSITIVE_SHARE) -> list[str]:
    """Nodes of ``reference`` (of ``op_types``; every node when None) that add the most error in
    ``candidate``: every intermediate tensor both graphs compute is compared, and a node's score is
    its output's relative error minus the largest of its inputs'. The top ``share`` (at least one)."""
    ref_model = onnx.load(str(reference))
    cand_names = {o for n in onnx.load(str(candidate), load_external_data=False).graph.node for o in n.output}
    tensors = [o for n in ref_model.graph.node for o in n.output if o and o in cand_names]
    if not tensors:
        return []
    ref_session, cand_session = _with_outputs(reference, tensors), _with_outputs(candidate, tensors)
    sums: dict[str, list[float]] = {}  # tensor -> [squared error, squared reference], batch by batch
    skip: set[str] = set()
    for feed in feeds:  # one batch at a time: intermediates of a big model at once would not fit
        ref = dict(zip([o.name for o in ref_session.get_outputs()], ref_session.run(None, feed)))
        cand = dict(zip([o.name for o in cand_session.get_outputs()], cand_session.run(None, feed)))
        for name in tensors:
            r, c = ref.get(name), cand.get(name)
            if not isinstance(r, np.ndarray) or not isinstance(c, np.ndarray) or r.dtype.kind != "f" or \
                    r.shape != c.shape:
                skip.add(name)
                continue
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.square(c.astype(np.float64) - r).sum())
            acc[1] += float(np.square(r.astype(np.float64)).sum())
        del ref, cand
    error = {name: math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else float("inf"))
             for name, (num, den) in sums.items() if name not in skip}
    nodes = [n for n in ref_model.graph.node if n.name and (op_types is None or n.op_type in op_types)]
    consumers: dict[str, list] = {}
    for n in ref_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def output_error(names, hops: int = 2) -> float | None:
        """The error at a node's outputs; where the quantizer fused them away (Conv + Clip into one
        quantized range), at the nearest tensors after them."""
        found = [error[o] for o in names if o in error]
        if found or hops == 0:
            return max(found, default=None)
        return max((e for o in names for c in consumers.get(o, []) if (e := output_error(c.output, hops - 1))
                    is not None), default=None)

    scored = []
    for node in nodes:
        out = output_error(list(node.output))
        if out is None:
            continue
        added = out - max((error.get(i, 0.0) for i in node.input), default=0.0)
        if not np.isfinite(added):
            added = float("inf")
        scored.append((added, node.name))
    scored.sort(reverse=True)
    k = max(1, math.ceil(share * len(scored)))
    return [name for added, name in scored[:k] if added > 0]


def _with_outputs(path: Path, tensors: list[str]) -> ort.InferenceSession:
    """A session on ``path`` that also outputs ``tensors``."""
    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in outputs:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return cpu_session(model.SerializeToString())


# ---- the whole pass ---------------------------------------------------------------------------

@dataclass
class VariantResult:
    precision: str
    kept: bool
    entry: dict  # the manifest's description of the variant (or of why it was dropped)


def check_inputs(precisions: list[str], inputs: VariantInputs | None, task: str) -> None:
    """Refuse early, before any work, what cannot be built."""
    wanted = [p for p in precisions if p != FP32]
    if not wanted:
        return
    if inputs is None:
        raise InvalidArgument("precision", f"{task} bundles are exported in fp32 only; "
                                           f"{', '.join(wanted)} variants are built for classifiers")
    if INT8 in wanted and inputs.calibration is not None and inputs.calibration_samples < MIN_CALIBRATION:
        raise FailedPrecondition("precision", f"INT8 calibration needs at least {MIN_CALIBRATION} training images; "
                                              f"the run kept {inputs.calibration_samples}")


def build_variants(fp32: Path, folder: Path, precisions: list[str], inputs: VariantInputs,
                   progress: ProgressSink = silent) -> list[VariantResult]:
    """Build, gate and (when they pass) write each non-fp32 precision into ``folder``."""
    work = folder / ".variants"  # inside the export's temp folder: a killed export leaves it there only
    work.mkdir(exist_ok=True)
    try:
        reference = cpu_session(fp32)
        ref_logits = logits_of(reference, inputs.heldout.feeds)
        results = []
        for precision in precisions:
            if precision != FP32:
                results.append(_one_variant(precision, fp32, folder, work, inputs, ref_logits, progress))
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_variant(precision: str, fp32: Path, folder: Path, work: Path, inputs: VariantInputs,
                 ref_logits: np.ndarray, progress: ProgressSink) -> VariantResult:
    static = inputs.calibration is not None
    gate = VARIANT_GATES[precision]
    if precision == INT8:
        source, op_types = preprocess_for_quantization(fp32, work), QUANTIZED_OPS
    else:
        source, op_types = without_value_info(fp32, work / "clean.onnx"), None
    probe = (inputs.calibration or inputs.heldout.feeds)[:4]
    attempts, sensitive, first = [], None, None
    candidate = work / FILES[precision]
    for step in ladder(precision, static):
        t0 = time.monotonic()
        exclude: list[str] = end_nodes(source, op_types) if step.keep_ends else []
        if step.exclude_sensitive:
            if sensitive is None:
                try:
                    sensitive = sensitive_nodes(source, first, probe, op_types) if first is not None else []
                except Exception as e:  # noqa: BLE001 - e.g. the first attempt's graph does not load
                    progress(LogLine(f"{precision}: no sensitive nodes found ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200]})"))
                    sensitive = []
            exclude = [*exclude, *(n for n in sensitive if n not in exclude)]
        try:
            if precision == INT8:
                build_int8(source, candidate, step, inputs.calibration, exclude)
            else:
                build_fp16(source, candidate, step, exclude)
            got = logits_of(cpu_session(candidate), inputs.heldout.feeds)
            report = gate_report(gate, ref_logits, got, inputs.heldout.labels)
        except Exception as e:  # noqa: BLE001 - a tool that fails is a failed attempt, recorded
            report = {"passed": False, "failures": [f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"]}
        if first is None and candidate.exists():
            first = work / f"first.{FILES[precision]}"
            shutil.copyfile(candidate, first)
        attempt = {"step": step.name, "settings": step.settings, "excluded_nodes": exclude,
                   "seconds": round(time.monotonic() - t0, 2), **report}
        attempts.append(attempt)
        progress(LogLine(f"{precision}: {step.name}: " + ("PASSED " + _gate_line(report) if report["passed"]
                                                            else "failed: " + "; ".join(report["failures"]))))
        if report["passed"]:
            shutil.move(str(candidate), folder / FILES[precision])
            return VariantResult(precision, True, {"file": FILES[precision], "method": step.name,
                                                   "settings": step.settings, "excluded_nodes": exclude,
                                                   "gate": report, "attempts": attempts})
    last = attempts[-1]["failures"] if attempts else ["no attempt ran"]
    reason = f"failed its held-out gate on every step of the ladder ({len(attempts)}); last: {'; '.join(last)}"
    progress(LogLine(f"{precision}: dropped from the bundle: {reason}"))
    return VariantResult(precision, False, {"reason": reason, "attempts": attempts})


def _gate_line(report: dict) -> str:
    return (f"(accuracy {report['variant']['accuracy']:.2%} vs fp32 {report['fp32']['accuracy']:.2%}, "
            f"top-1 agreement {report['top1_agreement']:.2%}, {report['samples']} held-out samples)")


# ---- speed ------------------------------------------------------------------------------------

def cpu_description() -> dict:
    """The exporting machine's CPU: name, the vector instruction sets ONNX Runtime's kernels use, cores."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                    name = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    isa = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"),
                                     ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8"), ("asimd", "NEON"),
                                     ("asimddp", "NEON dot product")) if flag in flags]
    return {"name": name, "isa": isa, "cores": os.cpu_count()}


def measure_latency(files: dict[str, Path], timing: dict[int, Feed], rounds: int = 3,
                    budget_s: float = 2.0) -> dict[str, dict[str, float]]:
    """Median ms per precision and batch size on the CPU provider, the variants interleaved round
    by round so machine noise hits them alike; iterations per round sized to ~``budget_s`` total."""
    sessions = {p: cpu_session(path) for p, path in files.items()}
    out: dict[str, dict[str, list[float]]] = {p: {} for p in files}
    for batch, feed in sorted(timing.items()):
        first = {}
        for p, s in sessions.items():  # warm up, and size the iterations
            s.run(None, feed)
            first[p] = median_ms(lambda: s.run(None, feed), 2)
        iters = max(2, min(50, int(budget_s * 1000 / max(sum(first.values()), 1e-3) / rounds)))
        for _ in range(rounds):
            for p, s in sessions.items():
                out[p].setdefault(str(batch), []).append(median_ms(lambda: s.run(None, feed), iters))
    return {p: {b: round(statistics.median(v), 4) for b, v in per.items()} for p, per in out.items()}


def choose_default(latency: dict[str, dict[str, float]]) -> tuple[str, dict[str, list[str]], dict]:
    """The default variant (fastest at batch 1 with a real gain over fp32), each variant's flags,
    and each one's speedups over fp32."""
    base = latency[FP32]
    speedup = {p: {b: round(base[b] / ms, 3) if ms > 0 else None for b, ms in per.items()}
               for p, per in latency.items()}
    flags: dict[str, list[str]] = {p: [] for p in latency}
    best, best_gain = FP32, 1.0
    for p in latency:
        if p == FP32:
            continue
        gain = speedup[p].get("1") or 0.0
        if gain < SPEEDUP_FLOOR:
            flags[p].append(f"no speed benefit on this CPU at batch 1 ({gain:.2f}x fp32)"
                            + ("; fp16 is for GPU and NPU providers" if p == FP16 else ""))
        elif gain > best_gain:
            best, best_gain = p, gain
    return best, flags, speedup


def variants_lines(manifest: dict) -> list[str]:
    """One line per variant of a bundle manifest: file size, gate, latency, flags; then the dropped."""
    lines = []
    default = manifest.get("default_variant", FP32)
    for p, v in (manifest.get("variants") or {}).items():
        gate = v.get("gate", {})
        acc = (f", held-out accuracy {gate['variant']['accuracy']:.2%} (fp32 {gate['fp32']['accuracy']:.2%}), "
               f"agreement {gate['top1_agreement']:.2%}" if "variant" in gate else "")
        ms = v.get("latency_ms") or {}
        speed = "".join(f", batch {b}: {t:.2f} ms ({(v.get('speedup_vs_fp32') or {}).get(b) or 0:.2f}x)"
                        for b, t in ms.items())
        lines.append(f"{p}{' (default)' if p == default else ''}: {v['file']}, {v['bytes'] / 1e6:.1f} MB{acc}{speed}"
                     + "".join(f"; {f}" for f in v.get("flags", [])))
    for p, d in (manifest.get("dropped_variants") or {}).items():
        lines.append(f"{p}: dropped: {d['reason']}")
    return lines
