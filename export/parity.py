"""The parity gate: an exported model must compute what PyTorch computes, or the export fails.

The rules, the same for every task (image and text classifiers, the three-way peft gate, greedy
generation):

- Values: every output value must satisfy ``|got - ref| <= atol + rtol * |ref|`` with the
  spec's ``Tolerance`` for the bundle's precision. A case reports its ``margin``, the largest
  ``|got - ref| / (atol + rtol * |ref|)``: it passes at margin <= 1.
- Decisions: on held-out real samples the label a device reads (the bundle's labels at the
  candidate's argmax) must equal the reference's, counting only samples whose reference top-2
  gap exceeds what the tolerance lets both values move. A tie within rounding is no decision,
  and random inputs check values only.
- Every held-out sample is compared at batch 1 and at the spec's large batch.

Each ``ParityCase`` names what it compares with what; the report names the precision and the
ONNX Runtime providers, so a later fp16 or int8 variant fits the same structure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from edgetune.errors import ParityError
from edgetune.runtime.imaging import Preprocessing, normalize

from .specs import FP32, ExportSpec, Tolerance

Feed = dict[str, np.ndarray]
Runner = Callable[[Any], np.ndarray]  # one batch -> float logits [batch, classes]


@dataclass
class ParityCase:
    """One comparison of a candidate runtime against a reference over a set of inputs."""

    name: str  # which inputs, at which batch size
    reference: str  # e.g. "pytorch", "peft unmerged"
    candidate: str  # e.g. "onnxruntime"
    batch_size: int
    samples: int
    max_abs_diff: float
    max_rel_diff: float  # max |got - ref| / max |ref|: a scale-free view of the error
    margin: float  # max |got - ref| / (atol + rtol |ref|); passes at <= 1
    top1_compared: int = 0  # held-out samples whose reference top-2 gap is a decision
    top1_agreed: int = 0
    ties: int = 0  # held-out samples whose top-2 gap is within the tolerance (not counted)

    @property
    def compared(self) -> str:
        return f"{self.reference} vs {self.candidate}"

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_agreed / self.top1_compared if self.top1_compared else None

    @property
    def passed(self) -> bool:
        return self.margin <= 1.0 and self.top1_agreed == self.top1_compared

    def to_dict(self) -> dict:
        return {**_finite(asdict(self)), "compared": self.compared, "top1_agreement": self.top1_agreement,
                "passed": self.passed}


@dataclass
class ParityReport:
    precision: str
    tolerance: Tolerance
    providers: list[str]
    cases: list[ParityCase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed checks that are not value comparisons

    @property
    def margin(self) -> float:
        return max((c.margin for c in self.cases), default=float("inf"))

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=float("inf"))

    @property
    def max_rel_diff(self) -> float:
        return max((c.max_rel_diff for c in self.cases), default=float("inf"))

    @property
    def top1_compared(self) -> int:
        return sum(c.top1_compared for c in self.cases)

    @property
    def top1_agreement(self) -> float | None:
        compared = self.top1_compared
        return sum(c.top1_agreed for c in self.cases) / compared if compared else None

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases) and not self.problems

    def to_dict(self) -> dict:
        """JSON-safe (strict JSON has no inf or NaN: a non-finite error is written as null)."""
        return {"passed": self.passed, "precision": self.precision, **self.tolerance.to_dict(),
                **_finite({"margin": self.margin, "max_abs_diff": self.max_abs_diff,
                           "max_rel_diff": self.max_rel_diff}),
                "top1_agreement": self.top1_agreement, "top1_compared": self.top1_compared,
                "providers": self.providers, "problems": self.problems,
                "cases": [c.to_dict() for c in self.cases]}

    def summary(self) -> str:
        return parity_line(self.to_dict())


def _finite(values: dict) -> dict:
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in values.items()}


def _num(value: float | None, fmt: str) -> str:
    return "non-finite" if value is None else format(value, fmt)


def parity_line(parity: dict) -> str:
    """One line for a parity report (``ParityReport.to_dict()``, as saved in a manifest)."""
    if "margin" not in parity:  # a gate that stopped before comparing values
        return f"parity FAILED: {parity.get('error', 'no comparison ran')}"
    agreement = parity["top1_agreement"]
    decisions = (f"top-1 agreement {agreement:.2%} over {parity['top1_compared']} held-out decisions"
                 if agreement is not None else "no held-out decision outside the tolerance")
    ties = sum(c.get("ties", 0) for c in parity["cases"])
    line = (f"parity {'PASSED' if parity['passed'] else 'FAILED'} ({parity['precision']}, "
            f"{', '.join(parity['providers'])}): margin {_num(parity['margin'], '.3g')} of the tolerance "
            f"|diff| <= {parity['atol']:.0e} + {parity['rtol']:.0e}*|ref| (max abs diff "
            f"{_num(parity['max_abs_diff'], '.3e')}), {decisions}" + (f", {ties} ties not counted" if ties else ""))
    failed = [c for c in parity["cases"] if not c.get("passed", True)]
    if failed:
        c = failed[0]
        line += (f"; first failing case: {c['compared']}, {c['name']} (margin {_num(c['margin'], '.3g')}, "
                 f"top-1 {c['top1_agreed']}/{c['top1_compared']})")
    if parity.get("problems"):
        line += "; " + "; ".join(parity["problems"][:3])
    return line


def value_margin(ref: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> tuple[float, float]:
    """(max abs diff, margin) of ``got`` against ``ref``; NaN or inf anywhere gives inf."""
    if got.shape != ref.shape:
        raise ParityError("model.onnx", f"output shape {got.shape}, reference gives {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    if not np.isfinite(diff).all():
        return float("inf"), float("inf")
    if diff.size == 0:
        return 0.0, 0.0
    return float(diff.max()), float((diff / tolerance.allowed(ref)).max())


def decisive(ref: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """Per row of ``ref`` ([..., classes]): is its top-1 ahead of its top-2 by more than the
    tolerance lets both values move? Rows with one class always decide."""
    if ref.shape[-1] < 2:
        return np.ones(ref.shape[:-1], dtype=bool)
    top2 = np.sort(ref.astype(np.float64), axis=-1)[..., -2:]
    allowed = tolerance.allowed(top2)
    return top2[..., 1] - top2[..., 0] > allowed[..., 0] + allowed[..., 1]


@dataclass
class CaseBuilder:
    """Accumulates one ``ParityCase`` batch by batch."""

    name: str
    reference: str
    candidate: str
    tolerance: Tolerance
    batch_size: int = 0
    samples: int = 0
    max_abs: float = 0.0
    ref_max: float = 0.0
    margin: float = 0.0
    top1_compared: int = 0
    top1_agreed: int = 0
    ties: int = 0

    def add_values(self, ref: np.ndarray, got: np.ndarray, samples: int, batch_size: int) -> None:
        """Outputs of one run of both sides over ``samples`` inputs fed ``batch_size`` at a time."""
        abs_diff, margin = value_margin(ref, got, self.tolerance)
        self.max_abs, self.margin = max(self.max_abs, abs_diff), max(self.margin, margin)
        self.ref_max = max(self.ref_max, float(np.abs(ref).max()) if ref.size else 0.0)
        self.samples += samples
        self.batch_size = max(self.batch_size, batch_size)

    def add_decision(self, ref_row: np.ndarray, agreed: bool) -> None:
        """One top-1 choice: counted when ``ref_row`` decides, else a tie."""
        if not decisive(ref_row, self.tolerance):
            self.ties += 1
            return
        self.top1_compared += 1
        self.top1_agreed += int(agreed)

    def add_decisions(self, ref: np.ndarray, got: np.ndarray, ref_labels: Sequence, got_labels: Sequence) -> None:
        """Top-1 of each row of ``[rows, classes]`` logits, read through each side's labels."""
        for ref_row, got_row in zip(ref, got):
            self.add_decision(ref_row, _label(ref_labels, ref_row.argmax()) == _label(got_labels, got_row.argmax()))

    def build(self) -> ParityCase:
        rel = self.max_abs / self.ref_max if self.ref_max > 0 else (0.0 if self.max_abs == 0 else float("inf"))
        return ParityCase(self.name, self.reference, self.candidate, self.batch_size, self.samples, self.max_abs,
                          rel, self.margin, self.top1_compared, self.top1_agreed, self.ties)


def _label(labels: Sequence, index: int):
    return labels[index] if 0 <= index < len(labels) else f"<output {index} has no label>"


def compare(name: str, reference: Runner, candidate: Runner, batches: list, tolerance: Tolerance,
            labels: tuple[Sequence, Sequence] | None = None, parties: tuple[str, str] = ("pytorch", "onnxruntime")
            ) -> ParityCase:
    """Run both runners on every batch: values always; top-1 decisions when ``labels`` (the
    reference's and the candidate's class names) are given, i.e. on held-out real samples."""
    case = CaseBuilder(name, *parties, tolerance)
    for batch in batches:
        ref, got = reference(batch), candidate(batch)
        case.add_values(ref, got, len(ref), len(ref))
        if labels is not None:
            case.add_decisions(ref, got, *labels)
    return case.build()


def batches_of(x: Sequence, batch_size: int) -> list:
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def torch_runner(model: nn.Module, names: list[str]) -> Runner:
    """Run an eval-mode fp32 CPU module on a feed (inputs passed positionally, in ``names`` order)."""

    def run(feed: Feed) -> np.ndarray:
        with torch.inference_mode():
            return model(*(torch.from_numpy(feed[n]) for n in names)).float().numpy()

    return run


def ort_runner(session: ort.InferenceSession, spec: ExportSpec) -> Runner:
    out_names = [o.name for o in session.get_outputs()]
    if out_names != list(spec.outputs):
        raise ParityError("model.onnx", f"outputs {out_names}, spec expects {list(spec.outputs)}")
    in_names = [i.name for i in session.get_inputs()]
    if in_names != spec.input_names:
        raise ParityError("model.onnx", f"inputs {in_names}, spec expects {spec.input_names}")
    return lambda feed: session.run(None, feed)[0]


@dataclass(frozen=True)
class ImageContract:
    """What turns held-out pixels into a named class: preprocessing and labels in output order.
    The reference's comes from the training run, the candidate's from the bundle's manifest."""

    preprocessing: Preprocessing
    labels: list[str]


def check_parity(model: nn.Module, session: ort.InferenceSession, spec: ExportSpec, pixels: np.ndarray,
                 reference: ImageContract, device: ImageContract, precision: str = FP32,
                 seed: int = 0, problems: Sequence[str] = ()) -> ParityReport:
    """Image classifiers: held-out images through training's pipeline (torch normalization,
    PyTorch) and the device's (the bundle's preprocessing in numpy, ONNX Runtime), then random
    normalized inputs through both runtimes.

    Args:
        pixels: held-out images, uint8 NHWC at the model's input size.
        problems: failed checks found before this one (e.g. metadata that disagrees); they fail the gate.

    Returns the report when it passes; raises ParityError carrying the report otherwise.
    """
    from edgetune.trainers.loop import Normalizer

    model = model.eval().float().cpu()
    tolerance = spec.tolerance(precision)
    norm = Normalizer(reference.preprocessing.mean, reference.preprocessing.std)
    names = spec.input_names
    torch_float, ort_float = torch_runner(model, names), ort_runner(session, spec)

    def torch_pixels(x: np.ndarray) -> np.ndarray:  # as in training and validation
        with torch.inference_mode():
            return model(norm(torch.from_numpy(x).permute(0, 3, 1, 2))).float().numpy()

    def ort_pixels(x: np.ndarray) -> np.ndarray:  # as on a device
        return ort_float({names[0]: normalize(x, device.preprocessing)})

    rng = np.random.default_rng(seed)
    big = spec.large_batch
    noise = rng.standard_normal((2 * big, 3, *pixels.shape[1:3])).astype(np.float32)
    labels = (reference.labels, device.labels)
    report = ParityReport(precision, tolerance, session.get_providers())
    report.problems += [*problems, *label_problems(reference.labels, device.labels)]
    report.cases += [
        compare("held-out images, batch 1", torch_pixels, ort_pixels, batches_of(pixels, 1), tolerance, labels),
        compare(f"held-out images, batch {big}", torch_pixels, ort_pixels, batches_of(pixels, big), tolerance,
                labels),
        compare("random inputs, batch 1", torch_float, ort_float,
                [{names[0]: b} for b in batches_of(noise[:4], 1)], tolerance),
        compare(f"random inputs, batch {big}", torch_float, ort_float,
                [{names[0]: b} for b in batches_of(noise, big)], tolerance),
    ]
    return raise_unless_passed(report)


def label_problems(trained: Sequence[str], device: Sequence[str]) -> list[str]:
    """The labels a device reads must be training's, in output order."""
    for i, (a, b) in enumerate(zip(trained, device)):
        if a != b:
            return [f"labels differ from training's: output {i} is {b!r}, training's is {a!r}"]
    if len(trained) != len(device):
        return [f"labels differ from training's: {len(device)} labels, training has {len(trained)}"]
    return []


def raise_unless_passed(report: ParityReport) -> ParityReport:
    if not report.passed:
        raise ParityError("model.onnx", report.summary(), report)
    return report
