"""The main job on embedded defaults: digits -> fine-tune EfficientNet-Lite0 -> ONNX -> parity -> predict.

Everything local: the ImageNet weights and the digits come from installed packages.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from edgetune.digits import write_digits_imagefolder
from edgetune.export.bundle import export_bundle, held_out_inputs, held_out_paths
from edgetune.errors import InvalidArgument
from edgetune.export.runtime import BundlePredictor, create_session
from edgetune.latency import measure_latency
from edgetune.progress import LogLine, ProgressSink
from edgetune.trainers.config import load_config
from edgetune.trainers.image import train_image
from edgetune.trainers.run import load_run_model


def run_demo(workdir: str | Path, progress: ProgressSink, epochs: int = 3, image_size: int = 64,
             method: str = "full") -> dict:
    """Run the whole path and return the figures it printed."""
    t0 = time.monotonic()
    workdir = Path(workdir)
    marker = workdir / ".edgetune-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.is_file():
            raise InvalidArgument("--workdir", f"{workdir} is not empty and not an earlier demo's folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    data = write_digits_imagefolder(workdir / "digits")
    progress(LogLine(f"wrote scikit-learn digits to {data}"))
    cfg = load_config(overrides={"data.path": str(data), "data.image_size": image_size,
                                 "model.arch": "efficientnet_lite0", "method": method,
                                 "optim.epochs": epochs})
    run = train_image(cfg, workdir / "run", progress)
    progress(LogLine(run.summary()))
    bundle = export_bundle(run.run_dir, workdir / "bundle", progress=progress)
    predictor = BundlePredictor(bundle.dir)
    model = load_run_model(run.run_dir)
    cpu_session = create_session(bundle.dir / "model.onnx", "cpu")  # eager runs on the CPU too
    x = held_out_inputs(run.run_dir, model.preprocessing)
    lat = measure_latency(model.model, cpu_session, x[:1])
    held = held_out_paths(run.run_dir)  # validation images the model never trained on
    samples = [held[i] for i in (0, len(held) // 2, len(held) - 1)]
    preds = predictor.predict_files(samples, top_k=3)
    total = time.monotonic() - t0
    lines = ["", "=== edgetune demo ===",
             f"val accuracy {run.metrics['accuracy']:.4f}, macro-F1 {run.metrics['macro_f1']:.4f} "
             f"(best epoch {run.best_epoch} of {epochs})",
             bundle_parity_line(bundle.parity),
             f"latency batch 1 ({image_size}px, CPU): PyTorch eager {lat.eager_ms:.2f} ms, ONNX Runtime "
             f"{lat.ort_ms:.2f} ms ({lat.speedup:.1f}x)"]
    lines += [f"predict {p.path}: " + ", ".join(f"{lab} {s:.3f}" for lab, s in p.top) for p in preds]
    lines.append(f"bundle: {bundle.dir}  (total {total:.0f}s)")
    progress(LogLine("\n".join(lines)))
    return {"accuracy": run.metrics["accuracy"], "macro_f1": run.metrics["macro_f1"],
            "parity": bundle.parity, "eager_ms": lat.eager_ms, "ort_ms": lat.ort_ms, "seconds": total,
            "bundle": str(bundle.dir)}


def bundle_parity_line(parity: dict) -> str:
    return (f"parity {'PASSED' if parity['passed'] else 'FAILED'}: max abs diff {parity['max_abs_diff']:.2e} "
            f"(tolerance {parity['atol']:.0e}), top-1 agreement {parity['top1_agreement']:.0%}")
