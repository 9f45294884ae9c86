"""The parity gate: PyTorch and ONNX Runtime must agree, or the export fails.

Compared on held-out validation images and on random inputs, each at batch 1 and at a larger
batch: output names and shapes first, then values (max abs diff, max rel diff, top-1 agreement).
``max_rel_diff`` is max|ort - torch| / max|torch| over a case, a scale-free view of the error.
"""

from __future__ import annotations

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


def _compare(name: str, model: nn.Module, session: ort.InferenceSession, spec: ExportSpec,
             inputs: np.ndarray, batch_size: int) -> ParityCase:
    abs_max, ref_max, agree, n = 0.0, 0.0, 0, 0
    out_names = [o.name for o in session.get_outputs()]
    if out_names != [spec.output_name]:
        raise ParityError("model.onnx", f"outputs {out_names}, spec expects [{spec.output_name!r}]")
    for i in range(0, len(inputs), batch_size):
        x = np.ascontiguousarray(inputs[i:i + batch_size], dtype=np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        got = session.run(None, {spec.input_name: x})[0]
        if got.shape != ref.shape:
            raise ParityError("model.onnx", f"{name}: output shape {got.shape}, PyTorch gives {ref.shape}")
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        abs_max = max(abs_max, float(diff.max()) if not np.isnan(diff).any() else float("inf"))
        ref_max = max(ref_max, float(np.abs(ref).max()))
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        n += len(x)
    return ParityCase(name, batch_size, n, abs_max, abs_max / max(ref_max, 1e-12), agree / n)


def check_parity(model: nn.Module, session: ort.InferenceSession, spec: ExportSpec,
                 held_out: np.ndarray, seed: int = 0) -> ParityReport:
    """Run both runtimes on ``held_out`` (normalized NCHW float32) and random inputs.

    Returns the report when it passes; raises ParityError carrying the report otherwise.
    """
    model = model.eval().float().cpu()
    rng = np.random.default_rng(seed)
    shape = held_out.shape[1:]
    random_inputs = rng.standard_normal((2 * spec.large_batch, *shape)).astype(np.float32)
    report = ParityReport(spec.atol, session.get_providers())
    report.cases += [
        _compare("validation images, batch 1", model, session, spec, held_out[:8], 1),
        _compare(f"validation images, batch {spec.large_batch}", model, session, spec, held_out, spec.large_batch),
        _compare("random inputs, batch 1", model, session, spec, random_inputs[:4], 1),
        _compare(f"random inputs, batch {spec.large_batch}", model, session, spec, random_inputs, spec.large_batch),
    ]
    if not report.passed:
        raise ParityError("model.onnx", report.summary(), report)
    return report


def parity_line(parity: dict) -> str:
    """One line for a saved parity report (a manifest's ``parity`` dict)."""
    return (f"parity {'PASSED' if parity['passed'] else 'FAILED'}: max abs diff {parity['max_abs_diff']:.2e} "
            f"(tolerance {parity['atol']:.0e}), top-1 agreement {parity['top1_agreement']:.0%}")
