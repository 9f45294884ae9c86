"""Precision variants side by side, per architecture: PyTorch eager, ONNX Runtime fp32, fp16 and
INT8 (static QDQ for images, dynamic for MiniLM), each gated on held-out data.

Image models are fine-tuned on scikit-learn's digits (``--size`` px, ``--epochs``); MiniLM
(all-MiniLM-L6-v2, real weights) with LoRA on SMS spam (``../shared/data/sms_spam``, ``--sms-rows``
rows). Each is exported with fp32,fp16,int8 through ``export_bundle``: the table reads each
variant's held-out accuracy, top-1 agreement with fp32, model size, and the latency the export
measured (median, variants interleaved, batch 1 and 32, CPU provider) beside PyTorch eager timed
on the same inputs in the same process. A dropped variant is listed with the reason.

    .venv/bin/python bench/variants.py [--archs resnet18,efficientnet_lite0,...] [--size 64]
                                       [--epochs 2] [--sms-rows 2000] [--speed-size 224] [--speed-only]
                                       [--json OUT]

A second table times each architecture at ``--speed-size`` (224: where devices run them) with
INT8 calibrated on random inputs: speed only, no accuracy claimed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
ARCHS = {"resnet18": "random", "efficientnet_lite0": "catalog", "mobilenetv3_large_100": "random",
         "vit_tiny_patch16_224": "random"}


def _eager_ms(model, feed: dict, names: list[str], iters: int = 10) -> float:
    import torch

    tensors = [torch.from_numpy(feed[n]) for n in names]
    times = []
    with torch.inference_mode():
        model(*tensors)
        for _ in range(iters):
            t = time.perf_counter()
            model(*tensors)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _rows(name: str, bundle_dir: Path, model, timing: dict, input_names: list[str], seconds: float) -> list[dict]:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    fp32_accuracy = next((v["gate"]["fp32"]["accuracy"] for v in manifest["variants"].values() if "fp32" in v["gate"]),
                         None)  # the fp32 model's held-out accuracy, as each variant's gate measured it
    rows = [{"model": name, "variant": "pytorch eager", "mb": None, "accuracy": None, "agreement": None,
             **{f"ms_b{b}": round(_eager_ms(model, feed, input_names), 3) for b, feed in timing.items()}}]
    for p, v in manifest["variants"].items():
        gate = v["gate"]
        rows.append({"model": name, "variant": f"ort {p}", "mb": round(v["bytes"] / 1e6, 2),
                     "accuracy": gate.get("variant", {}).get("accuracy") if p != "fp32" else fp32_accuracy,
                     "agreement": gate.get("top1_agreement"), "method": v.get("method", ""),
                     "flags": v.get("flags", []), "default": p == manifest["default_variant"],
                     **{f"ms_b{b}": v["latency_ms"][b] for b in v["latency_ms"]},
                     **{f"x_b{b}": v["speedup_vs_fp32"][b] for b in v["speedup_vs_fp32"]}})
    for p, d in manifest.get("dropped_variants", {}).items():
        rows.append({"model": name, "variant": f"ort {p} DROPPED", "reason": d["reason"]})
    rows[0]["export_seconds"] = round(seconds, 1)
    rows[0]["cpu"] = manifest["latency"]["cpu"]
    return rows


def bench_image(arch: str, weights: str, size: int, epochs: int, tmp: Path, digits: Path) -> list[dict]:
    from edgetune.errors import EdgetuneError
    from edgetune.export.bundle import BUILDERS, export_bundle
    from edgetune.export.specs import EXPORT_SPECS
    from edgetune.trainers.config import load_config
    from edgetune.trainers.recipes.image_classification import train_image
    from edgetune.trainers.run import load_run

    cfg = load_config(overrides={"data.path": str(digits), "data.image_size": size, "model.arch": arch,
                                 "model.weights": weights, "optim.epochs": epochs, "device": "cpu"})
    run = train_image(cfg, tmp / arch).run_dir
    t0 = time.monotonic()
    try:
        bundle = export_bundle(run, tmp / f"{arch}.bundle", device="cpu", precisions="fp32,fp16,int8").dir
    except EdgetuneError as e:  # the fp32 parity gate (or another refusal) stops this export, not the bench
        return [{"model": arch, "variant": "export FAILED", "reason": f"{e.subject}: {e.message[:300]}"}]
    seconds = time.monotonic() - t0
    spec = EXPORT_SPECS["image_classification"]
    (tmp / f"{arch}.probe").mkdir()
    _, _, inputs = BUILDERS[spec.task](run, tmp / f"{arch}.probe", spec, "cpu", arch)
    return _rows(arch, bundle, load_run(run).model, inputs(["fp32", "fp16"]).timing, spec.input_names, seconds)


def bench_minilm(rows: int, tmp: Path) -> list[dict]:
    from edgetune.export.bundle import BUILDERS, export_bundle
    from edgetune.export.specs import EXPORT_SPECS
    from edgetune.trainers.config import load_config
    from edgetune.trainers.recipes.text_classification import train_text
    from edgetune.trainers.run import load_run

    lines = SMS.read_text().splitlines()
    subset = tmp / "sms.tsv"
    subset.write_text("\n".join(lines[:rows + 1]) + "\n")  # the header and the first ``rows`` messages
    cfg = load_config(overrides={"task": "text_classification", "method": "lora", "model.arch": "bert",
                                 "model.weights": "all-minilm-l6-v2", "data.path": str(subset), "optim.epochs": 1,
                                 "data.max_length": 64, "device": "cpu", "data.text_field": "SMS",
                                 "data.label_field": "Label"})
    run = train_text(cfg, tmp / "minilm").run_dir
    t0 = time.monotonic()
    bundle = export_bundle(run, tmp / "minilm.bundle", device="cpu", precisions="fp32,fp16,int8").dir
    seconds = time.monotonic() - t0
    spec = EXPORT_SPECS["text_classification"]
    (tmp / "minilm.probe").mkdir()
    _, _, inputs = BUILDERS[spec.task](run, tmp / "minilm.probe", spec, "cpu", "minilm")
    return _rows("all-MiniLM-L6-v2 (SMS)", bundle, load_run(run).model, inputs(["fp32", "fp16"]).timing, spec.input_names, seconds)


def speed_at(arch: str, size: int, tmp: Path) -> list[dict]:
    """Speed only, at a deployment size: the architecture (local ImageNet weights where the catalog
    has them, else random: latency does not depend on the values) exported at ``size``, its INT8
    calibrated on random inputs and FP16 converted with the same tools and first ladder step as an
    export; no gate (there is no held-out data at this size), so no accuracy is claimed."""
    import numpy as np
    import torch

    from edgetune.export.onnx_export import export_onnx
    from edgetune.export.specs import EXPORT_SPECS
    from edgetune.export.variants import (FP16_STEPS, STATIC_INT8, build_fp16, build_int8, measure_latency,
                                          preprocess_for_quantization)
    sys.path.insert(0, str(ROOT / "bench"))
    from latency import build

    folder = tmp / f"{arch}.{size}"
    folder.mkdir()
    spec = EXPORT_SPECS["image_classification"]
    model = build(arch, size)
    x = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
    fp32 = export_onnx(model, (torch.from_numpy(x[:2]),), spec, folder / "model.onnx")
    calibration = [{"pixel_values": np.random.default_rng(i).standard_normal((8, 3, size, size)).astype(np.float32)}
                   for i in range(4)]
    int8 = build_int8(preprocess_for_quantization(fp32, folder), folder / "model.int8.onnx", STATIC_INT8[0],
                      calibration, [])
    fp16 = build_fp16(fp32, folder / "model.fp16.onnx", FP16_STEPS[0], [])
    timing = {1: {"pixel_values": x[:1]}, 32: {"pixel_values": x}}
    latency = measure_latency({"fp32": fp32, "fp16": fp16, "int8": int8}, timing)
    rows = [{"model": f"{arch} @{size}", "variant": "pytorch eager", "mb": None, "accuracy": None, "agreement": None,
             **{f"ms_b{b}": round(_eager_ms(model, feed, ["pixel_values"]), 3) for b, feed in timing.items()}}]
    for p, path in (("fp32", fp32), ("fp16", fp16), ("int8", int8)):
        rows.append({"model": f"{arch} @{size}", "variant": f"ort {p}", "mb": round(path.stat().st_size / 1e6, 2),
                     "accuracy": None, "agreement": None, **{f"ms_b{b}": t for b, t in latency[p].items()},
                     **{f"x_b{b}": round(latency["fp32"][b] / t, 3) for b, t in latency[p].items()}})
    return rows


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], what: str) -> None:
    cpu = next((r["cpu"] for r in rows if "cpu" in r), {"name": "?", "isa": [], "cores": None})
    print(f"CPU: {cpu['name']} ({', '.join(cpu['isa'])}), {cpu['cores']} cores; {what}")
    print(f"{'model':26} {'variant':18} {'MB':>6} {'acc':>7} {'agree':>7} {'b1 ms':>8} {'b32 ms':>8} "
          f"{'x b1':>5} {'x b32':>5}  notes")
    for r in rows:
        if "reason" in r:
            print(f"{r['model']:26} {r['variant']:18} {r['reason']}")
            continue
        acc = r.get("accuracy") if r.get("accuracy") is not None else r.get("fp32_accuracy")
        notes = "; ".join([*(["default"] if r.get("default") else []), *r.get("flags", [])])
        print(f"{r['model']:26} {r['variant']:18} {_fmt(r.get('mb'), '.1f'):>6} {_fmt(acc, '.2%'):>7} "
              f"{_fmt(r.get('agreement'), '.1%'):>7} {_fmt(r.get('ms_b1')):>8} {_fmt(r.get('ms_b32')):>8} "
              f"{_fmt(r.get('x_b1')):>5} {_fmt(r.get('x_b32')):>5}  {notes}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sms-rows", type=int, default=2000, help="0 skips MiniLM")
    p.add_argument("--speed-size", type=int, default=224, help="also time each architecture at this size (0: no)")
    p.add_argument("--speed-only", action="store_true", help="only the speed table")
    p.add_argument("--json")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from edgetune.export.variants import cpu_description
    from edgetune.quiet import quiet_libraries
    from edgetune.trainers.data.digits import write_digits_imagefolder

    quiet_libraries()
    rows: list[dict] = []
    speed: list[dict] = []
    archs = [a for a in args.archs.split(",") if a]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.speed_only:
            digits = write_digits_imagefolder(tmp / "digits")
            for arch in archs:
                rows += bench_image(arch, ARCHS.get(arch, "random"), args.size, args.epochs, tmp, digits)
            if args.sms_rows and SMS.is_file():
                rows += bench_minilm(args.sms_rows, tmp)
        for arch in archs if args.speed_size else []:
            speed += speed_at(arch, args.speed_size, tmp)
    if rows:
        print_table(rows, f"images {args.size}px, digits held-out; MiniLM on {args.sms_rows} SMS rows")
    if speed:
        print()
        print_table([{**speed[0], "cpu": cpu_description()}, *speed[1:]],
                    f"speed only at {args.speed_size}px (no gate: random calibration)")
    rows += speed
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
