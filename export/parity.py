"""The parity gate: PyTorch and ONNX Runtime must agree, or the export fails.

Compared on held-out validation samples and on random inputs, each at batch 1 and at a larger
batch: input / output names and shapes first, then values (max abs diff, max rel diff, top-1
agreement). Every comparison is a ``ParityCase`` between two runners; text exports add a third
party (the unmerged peft model) in ``text_parity.py``.
``max_rel_diff`` is max|ort - torch| / max|torch| over a case, a scale-free view of the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from edgetune.errors import ParityError

from .specs import ExportSpec


@dataclass
class ParityCase:
    name: str
    batch_size: int
    samples: int
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    compared: str = "pytorch vs onnxruntime"


@dataclass
class ParityReport:
    atol: float
    providers: list[str]
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.cases)

    @property
    def max_rel_diff(self) -> float:
        return max(c.max_rel_diff for c in self.cases)

    @property
    def top1_agreement(self) -> float:
        return min(c.top1_agreement for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.max_abs_diff <= self.atol and self.top1_agreement == 1.0

    def to_dict(self) -> dict:
        return {"passed": self.passed, "atol": self.atol, "max_abs_diff": self.max_abs_diff,
                "max_rel_diff": self.max_rel_diff, "top1_agreement": self.top1_agreement,
                "providers": self.providers, "cases": [asdict(c) for c in self.cases]}

    def summary(self) -> str:
        return (f"parity {'PASSED' if self.passed else 'FAILED'}: max abs diff {self.max_abs_diff:.3e} "
                f"(tolerance {self.atol:.0e}), max rel diff {self.max_rel_diff:.3e}, "
                f"top-1 agreement {self.top1_agreement:.2%} over {sum(c.samples for c in self.cases)} samples")


Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], np.ndarray]  # one feed -> float logits [batch, classes]


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


def compare(name: str, reference: Runner, candidate: Runner, feeds: list[Feed],
            compared: str = "pytorch vs onnxruntime") -> ParityCase:
    """Max abs / rel difference and top-1 agreement of two runners over ``feeds``."""
    abs_max, ref_max, agree, n, batch = 0.0, 0.0, 0, 0, 0
    for feed in feeds:
        ref, got = reference(feed), candidate(feed)
        if got.shape != ref.shape:
            raise ParityError("model.onnx", f"{name}: output shape {got.shape}, reference gives {ref.shape}")
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        abs_max = max(abs_max, float(diff.max()) if not np.isnan(diff).any() else float("inf"))
        ref_max = max(ref_max, float(np.abs(ref).max()))
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        n += len(ref)
        batch = max(batch, len(ref))
    return ParityCase(name, batch, n, abs_max, abs_max / max(ref_max, 1e-12), agree / max(n, 1), compared)


def _image_feeds(spec: ExportSpec, x: np.ndarray, batch_size: int) -> list[Feed]:
    name = spec.input_names[0]
    return [{name: np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)}
            for i in range(0, len(x), batch_size)]


def check_parity(model: nn.Module, session: ort.InferenceSession, spec: ExportSpec,
                 held_out: np.ndarray, seed: int = 0) -> ParityReport:
    """Image classifiers: run both runtimes on ``held_out`` (normalized NCHW float32) and random inputs.

    Returns the report when it passes; raises ParityError carrying the report otherwise.
    """
    model = model.eval().float().cpu()
    rng = np.random.default_rng(seed)
    random_inputs = rng.standard_normal((2 * spec.large_batch, *held_out.shape[1:])).astype(np.float32)
    ref, got = torch_runner(model, spec.input_names), ort_runner(session, spec)
    big = spec.large_batch
    report = ParityReport(spec.atol, session.get_providers())
    report.cases += [
        compare("validation images, batch 1", ref, got, _image_feeds(spec, held_out[:8], 1)),
        compare(f"validation images, batch {big}", ref, got, _image_feeds(spec, held_out, big)),
        compare("random inputs, batch 1", ref, got, _image_feeds(spec, random_inputs[:4], 1)),
        compare(f"random inputs, batch {big}", ref, got, _image_feeds(spec, random_inputs, big)),
    ]
    return raise_unless_passed(report)


def raise_unless_passed(report: ParityReport) -> ParityReport:
    if not report.passed:
        raise ParityError("model.onnx", report.summary(), report)
    return report


def parity_line(parity: dict) -> str:
    """One line for a saved parity report (a manifest's ``parity`` dict)."""
    return (f"parity {'PASSED' if parity['passed'] else 'FAILED'}: max abs diff {parity['max_abs_diff']:.2e} "
            f"(tolerance {parity['atol']:.0e}), top-1 agreement {parity['top1_agreement']:.0%}")
