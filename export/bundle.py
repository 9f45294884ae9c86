"""Bundles: ``export_bundle(run_dir, out_dir)`` turns a run into a verified, self-describing folder.

BUNDLE/
  model.onnx      fp32; labels, preprocessing / tokenization and task also in its metadata_props
  model.int8.onnx, model.fp16.onnx   the variants asked for that passed their held-out gates
  tokenizer/      text bundles: tokenizer.json and its config (how to tokenize is in the manifest)
  manifest.json   labels, preprocessing or tokenization, input/output names and shapes, opset,
                  sha256 of each file, source run (which epoch of how many, finished, degenerate,
                  what was exported despite), parity report, the variants (file, gate, ladder
                  attempts, latency, flags; those dropped and why), the default variant, ``valid: true``

The manifest holds no paths of the exporting machine (``schemas/bundle-manifest.schema.json``).

Unfinished and degenerate runs (``run_status``) are refused unless allowed explicitly.

Built in a temp folder and renamed into place only when the parity gate passes. On failure the
folder is kept as ``BUNDLE.invalid`` (manifest ``valid: false``) for diagnosis and ParityError
is raised, so no bundle is ever marked valid without passing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import edgetune
from edgetune.errors import FailedPrecondition, InvalidArgument, NotFound, ParityError
from edgetune.runtime.imaging import Preprocessing, normalize
from edgetune.progress import LogLine, ProgressSink, silent
from edgetune.tasks import IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION, TEXT_GENERATION
from edgetune.integrity import sha256_file
from edgetune.atomic import default_mode
from edgetune.trainers.checkpoint import save_json
from edgetune.trainers.run import (RunFiles, RunModel, RunStatus, heldout_images, kept_samples, load_run,
                                   read_model_meta, read_tensors, run_status)

from .provenance import export_key
from .onnx_export import export_onnx, metadata_problems
from .parity import ImageContract, ParityReport, batches_of, check_parity
from edgetune.runtime.manifest import BUNDLE_FORMAT
from edgetune.runtime.sessions import create_session
from .specs import EXPORT_SPECS, FP32, INT8, ExportSpec, Tolerance, parse_precisions
from .variants import (CALIBRATION_BATCH, FILES, HELDOUT_BATCH, LATENCY_BATCHES, MIN_CALIBRATION, HeldOut,
                       VariantInputs, build_variants, check_inputs, choose_default, cpu_description,
                       measure_latency, session_threads)

PRECISION = FP32  # model.onnx's precision; INT8 / FP16 variants sit beside it (export/variants.py)


@dataclass
class BundleResult:
    dir: Path
    manifest: dict

    @property
    def parity(self) -> dict:
        return self.manifest["parity"]


def held_out_pixels(run_dir: Path) -> np.ndarray:
    """The run's saved validation images (uint8 NHWC at the model's input size)."""
    path = RunFiles(run_dir).parity_samples
    if not path.is_file():
        raise NotFound(str(run_dir), "run has no parity_samples.safetensors")
    return read_tensors(path, numpy=True)["pixels"]


def held_out_inputs(run_dir: Path, preprocessing) -> np.ndarray:
    """The run's saved validation images, normalized exactly as on a device."""
    return normalize(held_out_pixels(run_dir), preprocessing)


def held_out_paths(run_dir: Path) -> list[str]:
    """Source files of the saved validation images."""
    from safetensors import safe_open

    with safe_open(str(RunFiles(run_dir).parity_samples), "np") as f:
        return json.loads((f.metadata() or {}).get("paths", "[]"))


def export_bundle(run_dir: str | Path, out_dir: str | Path, device: str = "auto", force: bool = False,
                  atol: float | None = None, rtol: float | None = None, allow_degenerate: bool = False,
                  allow_unfinished: bool = False, progress: ProgressSink = silent,
                  precisions: str | list[str] = (FP32,), source: str | None = None) -> BundleResult:
    """Export a run's best checkpoint, gate it on parity, and write the bundle.

    Args:
        precisions: fp32 (always) and any of fp16, int8: variants built beside model.onnx, each
            kept only if it passes its held-out gate (``export/variants.py``).
        source: how the manifest names the run (default: its folder's name); never a path.
        atol, rtol: override the spec's fp32 tolerance (``|ort - torch| <= atol + rtol * |torch|``).
        allow_degenerate: export a run whose training report flags the model as degenerate
            (constant outputs, or accuracy not above the majority class); refused otherwise.
        allow_unfinished: export the best checkpoint so far of a run still training (or stopped
            before its last epoch); refused otherwise.

    Raises:
        FailedPrecondition: the run is unfinished or degenerate and that was not allowed; a
            variant needs data the run did not keep (held-out set, >= 100 calibration images).
        ParityError: ONNX Runtime disagrees with PyTorch; nothing valid is written.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_out_dir(run_dir, out_dir, force)
    task, spec, precisions, status = preflight(run_dir, precisions, atol, rtol, allow_degenerate, allow_unfinished)
    meta = read_model_meta(run_dir)
    source = source or run_dir.resolve().name
    options = {"precisions": precisions, "allow_degenerate": allow_degenerate, "allow_unfinished": allow_unfinished,
               "atol": atol, "rtol": rtol}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*"):  # what an export killed here left behind
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(default_mode(directory=True))  # mkdtemp makes it 0700; a bundle follows the one rule
    try:
        t0 = time.monotonic()
        fields, check, variant_inputs = BUILDERS[task](run_dir, tmp, spec, device, source)
        inputs = variant_inputs(precisions) if len(precisions) > 1 else None
        check_inputs(precisions, inputs, task)
        progress(LogLine(f"exported ONNX opset {spec.opset} in {time.monotonic() - t0:.1f}s; checking parity"))
        manifest = {
            "format": BUNDLE_FORMAT, "valid": False, "task": task, "precision": PRECISION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgetune_version": edgetune.__version__, **fields, "opset": spec.opset,
            "export": {"key": export_key(run_dir, options), "options": options},
            "source_run": {"name": source, "arch": meta["arch"], "method": meta.get("method"),
                           "task": task, "base_weights": without_paths(meta.get("weights")), **status.to_dict(),
                           "exported_despite": [k for k, allowed in (("unfinished", allow_unfinished),
                                                                     ("degenerate", allow_degenerate))
                                                if allowed and getattr(status, k)],
                           "val_metrics": meta.get("metrics")},
        }
        try:
            report = check()
        except ParityError as e:
            manifest["parity"] = e.report.to_dict() if e.report is not None else {"passed": False,
                                                                                  "error": e.message}
            _finish(tmp, manifest)
            invalid = out_dir.with_name(out_dir.name + ".invalid")
            shutil.rmtree(invalid, ignore_errors=True)
            tmp.rename(invalid)
            raise ParityError(e.subject, f"{e.message}; failed bundle kept at {invalid}", e.report) from None
        manifest["parity"] = report.to_dict()
        if inputs is not None:
            manifest.update(_variants(tmp, precisions, inputs, progress))
        else:
            manifest.update(variants={FP32: _fp32_entry(tmp)}, default_variant=FP32)
        manifest["valid"] = True
        _finish(tmp, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return BundleResult(out_dir, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


VARIANT_TASKS = (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION)


def preflight(run_dir: Path, precisions, atol: float | None = None, rtol: float | None = None,
              allow_degenerate: bool = False, allow_unfinished: bool = False
              ) -> tuple[str, ExportSpec, list[str], RunStatus]:
    """Everything an export refuses before doing any work (the server checks it before queueing
    one): the task, the tolerances, the precisions and the data they need, the run's status.
    Returns (task, spec, precisions, status)."""
    meta = read_model_meta(run_dir)
    task = meta["task"]
    if task not in BUILDERS:
        raise InvalidArgument("run", f"exporting {task} runs is not supported yet")
    spec = _with_tolerance(EXPORT_SPECS[task], atol, rtol)
    precisions = parse_precisions(precisions)
    if len(precisions) > 1 and task not in VARIANT_TASKS:
        raise InvalidArgument("precision", f"{task} bundles are exported in fp32 only; fp16 and int8 variants are "
                                           "built for classifiers")
    if len(precisions) > 1:
        kept = kept_samples(run_dir)  # raises FailedPrecondition when the run kept none
        if kept["heldout"] == 0:
            raise FailedPrecondition("precision", "the run's held-out set is empty: FP16 / INT8 variants have "
                                                  "nothing to be gated on")
        if INT8 in precisions and task == IMAGE_CLASSIFICATION and kept["calibration"] < MIN_CALIBRATION:
            raise FailedPrecondition("precision", f"INT8 calibration needs at least {MIN_CALIBRATION} training "
                                                  f"images; the run kept {kept['calibration']}")
    status = run_status(run_dir)
    _check_status(status, allow_degenerate, allow_unfinished)
    return task, spec, precisions, status


def _fp32_entry(folder: Path) -> dict:
    return {"file": FILES[FP32], "precision": FP32, "bytes": (folder / FILES[FP32]).stat().st_size,
            "gate": {"kind": "parity against PyTorch (the manifest's parity)", "passed": True}}


def _variants(folder: Path, precisions: list[str], inputs: VariantInputs, progress: ProgressSink) -> dict:
    """Build and gate the variants, time every kept one beside fp32, and pick the default."""
    results = build_variants(folder / FILES[FP32], folder, precisions, inputs, progress)
    variants = {FP32: _fp32_entry(folder)}
    for r in results:
        if r.kept:
            variants[r.precision] = {"file": r.entry["file"], "precision": r.precision,
                                     "bytes": (folder / r.entry["file"]).stat().st_size, **r.entry}
    progress(LogLine(f"timing {', '.join(variants)} at batch {' and '.join(map(str, LATENCY_BATCHES))}"))
    latency = measure_latency({p: folder / v["file"] for p, v in variants.items()}, inputs.timing)
    default, flags, speedup = choose_default(latency)
    for p, v in variants.items():
        v.update(latency_ms=latency[p], speedup_vs_fp32=speedup[p], flags=flags[p])
    return {"variants": variants, "default_variant": default,
            "dropped_variants": {r.precision: r.entry for r in results if not r.kept},
            "latency": {"provider": "CPUExecutionProvider", "cpu": cpu_description(), "threads": session_threads(),
                        "batches": list(LATENCY_BATCHES),
                        "method": "median ms over 3 interleaved rounds, default session options"}}


def without_paths(text: str | None) -> str | None:
    """``text`` with every absolute path cut to its last component: manifests name no server paths."""
    import re

    if text is None:
        return None
    return re.sub(r"(?<![\w.])(?:/|[A-Za-z]:\\)[^\s()'\"]*", lambda m: Path(m.group(0)).name or m.group(0), text)


def _with_tolerance(spec: ExportSpec, atol: float | None, rtol: float | None) -> ExportSpec:
    """``spec`` with its fp32 tolerance overridden where asked (finite, atol > 0, rtol >= 0)."""
    if atol is None and rtol is None:
        return spec
    base = spec.tolerance(PRECISION)
    if atol is not None and not (0 < atol < 1):  # also refuses inf/nan: the gate cannot be switched off
        raise InvalidArgument("atol", f"must be in (0, 1), got {atol}")
    if rtol is not None and not (0 <= rtol < 1):
        raise InvalidArgument("rtol", f"must be in [0, 1), got {rtol}")
    tolerance = Tolerance(base.atol if atol is None else atol, base.rtol if rtol is None else rtol)
    return dataclasses.replace(spec, tolerances={**spec.tolerances, PRECISION: tolerance})


def _check_status(status: RunStatus, allow_degenerate: bool, allow_unfinished: bool) -> None:
    if status.unfinished and not allow_unfinished:
        raise FailedPrecondition("run", f"training has not finished: the best checkpoint so far is from epoch "
                                        f"{status.epoch} of {status.epochs}; export refused unless allowed "
                                        "explicitly (--allow-unfinished)")
    if status.degenerate and not allow_degenerate:
        raise FailedPrecondition("run", "the model is degenerate: " + "; ".join(status.degenerate) +
                                 "; export refused unless allowed explicitly (--allow-degenerate, or "
                                 "allow_degenerate in ExportModelRequest)")


def _image_contents(run_dir: Path, folder: Path, spec: ExportSpec, device: str, source: str
                    ) -> tuple[dict, Callable[[], ParityReport], Callable[[], VariantInputs]]:
    """Write an image classifier's model.onnx; return its manifest fields, its parity gate, and
    what the INT8 / FP16 variants are calibrated, gated and timed on."""
    run = load_run(run_dir)
    pixels = held_out_pixels(run_dir)
    metadata = {"edgetune.task": spec.task, "edgetune.labels": run.classes,
                "edgetune.preprocessing": run.preprocessing.to_dict(),
                "edgetune.source_run": source, "edgetune.version": edgetune.__version__}
    # Batch 2 at least, so the exporter cannot specialise the batch axis to 1.
    sample = torch.from_numpy(normalize(np.resize(pixels, (2, *pixels.shape[1:])), run.preprocessing))
    model_path = export_onnx(run.model, (sample,), spec, folder / "model.onnx", metadata)
    session = create_session(model_path, device)
    fields = image_fields(run, spec)

    def check() -> ParityReport:
        # The candidate side reads what a device reads: the manifest's preprocessing and labels as
        # JSON will hold them, which the model file's metadata must repeat.
        written = json.loads(json.dumps(fields))
        device_side = ImageContract(Preprocessing.from_dict(written["preprocessing"]), written["labels"])
        return check_parity(run.model, session, spec, pixels, ImageContract(run.preprocessing, run.classes),
                            device_side, PRECISION, problems=metadata_problems(model_path, {
                                "labels": written["labels"], "preprocessing": written["preprocessing"]}))

    def variant_inputs(precisions: list[str]) -> VariantInputs:
        device_prep = Preprocessing.from_dict(json.loads(json.dumps(fields))["preprocessing"])
        held, labels = heldout_images(run_dir)
        x = normalize(held, device_prep)
        name = spec.input_names[0]
        calibration = heldout_images(run_dir, calibration=True)[0] if INT8 in precisions else held[:0]
        return VariantInputs(
            HeldOut([{name: b} for b in batches_of(x, HELDOUT_BATCH)], labels),
            {b: {name: np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))} for b in LATENCY_BATCHES},
            [{name: b} for b in batches_of(normalize(calibration, device_prep), CALIBRATION_BATCH)
             if len(b) == CALIBRATION_BATCH],  # the histogram calibrators need equal batches: a short tail is left
            len(calibration))

    return fields, check, variant_inputs


def image_fields(run: RunModel, spec: ExportSpec) -> dict:
    """An image bundle's manifest fields: labels, preprocessing, input and output shapes."""
    size = run.preprocessing.size
    return {
        "labels": run.classes, "preprocessing": run.preprocessing.to_dict(),
        "inputs": [{"name": spec.input_names[0], "dtype": "float32", "shape": ["batch", 3, size, size]}],
        "outputs": [{"name": spec.outputs[0], "dtype": "float32", "shape": ["batch", len(run.classes)]}],
    }


def _text_contents(run_dir: Path, folder: Path, spec: ExportSpec, device: str, source: str):
    from .text_bundle import text_classifier_contents

    return text_classifier_contents(run_dir, folder, spec, device, source)


def _generator_contents(run_dir: Path, folder: Path, spec: ExportSpec, device: str, source: str):
    from .generation_bundle import text_generator_contents

    return text_generator_contents(run_dir, folder, spec, device, source)


BUILDERS = {IMAGE_CLASSIFICATION: _image_contents, TEXT_CLASSIFICATION: _text_contents,
            TEXT_GENERATION: _generator_contents}


def _check_out_dir(run_dir: Path, out_dir: Path, force: bool) -> None:
    """Refuse to write over anything but an earlier bundle, and never over the run itself."""
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents:
        raise InvalidArgument("out", f"{out_dir} would overwrite the run {run_dir}")
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not force:
        raise InvalidArgument("out", f"{out_dir} exists; pass --force to replace it")
    if not out_dir.is_dir() or not (out_dir / "manifest.json").is_file():
        raise InvalidArgument("out", f"{out_dir} is not a bundle; --force only replaces bundles")


def _finish(folder: Path, manifest: dict) -> None:
    manifest["files"] = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    save_json(folder / "manifest.json", manifest)
