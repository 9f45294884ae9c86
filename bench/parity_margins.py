"""The parity gate's false-failure rate, measured: export every registry architecture that has
weights or a tiny config, over several seeds, with a trained and an untrained head, and report
per architecture the largest margin observed (observed error / allowed error; the gate fails
above 1). Goal: no failure, and the largest margin <= 0.5.

Then the other direction: tampered exports must fail. For one run per image architecture the
gate is run with a bundle-side preprocessing that normalizes differently, with two labels
swapped, and with N(0, 1e-3) noise on the classifier weights in the ONNX graph; for text, with a
saved adapter whose LoRA B matrices moved by 0.5 (a wrong merge).

Runs (CPU, fp32): images on scikit-learn's digits (400 images, 32 px; EfficientNet-Lite0 from its
ImageNet weights, the others random-init), text classification on SMS spam
(``../shared/data/sms_spam``, 600 rows; MiniLM from its weights, tiny bert / distilbert / roberta
random-init), instruction tuning on generated word-reversal pairs (tiny gpt2 / llama / qwen2).
Trained head: one epoch (images: full fine-tune; text: LoRA, the three-way gate). Untrained head:
the same run at lr 1e-12, so the checkpoint is the initialisation.

    .venv/bin/python bench/parity_margins.py [--seeds 0 1] [--only image text generation] [--json OUT]
    .venv/bin/python bench/parity_margins.py --demo-seeds 10   # the README demo's path, 10 seeds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest's data writers

SMS = REPO.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
UNTRAINED_LR = 1e-12


def _export(run_dir: Path, out: Path) -> dict:
    from edgetune.errors import ParityError
    from edgetune.export.bundle import export_bundle

    t0 = time.monotonic()
    try:
        parity = export_bundle(run_dir, out, device="cpu", allow_degenerate=True).parity
    except ParityError as e:
        parity = e.report.to_dict() if e.report is not None else {"passed": False, "margin": float("inf"),
                                                                    "max_abs_diff": float("inf")}
    return {"passed": parity["passed"], "margin": parity["margin"], "max_abs_diff": parity["max_abs_diff"],
            "top1_compared": parity.get("top1_compared", 0), "export_s": round(time.monotonic() - t0, 1)}


def _train(overrides: dict, out: Path) -> Path:
    from edgetune.trainers.config import load_config
    from edgetune.trainers.train import train

    return train(load_config(overrides=overrides), out).run_dir


def image_runs(work: Path, seeds: list[int], archs: list[str] | None = None):
    from edgetune.trainers.data.digits import write_digits_imagefolder
    from edgetune.trainers.models.registry import ARCHITECTURES

    data = write_digits_imagefolder(work / "digits", limit_per_class=40)
    for arch in archs or ARCHITECTURES:
        weights = "catalog" if arch == "efficientnet_lite0" else "random"
        for seed in seeds:
            for head in ("trained", "untrained"):
                over = {"data.path": str(data), "data.image_size": 32, "model.arch": arch, "model.weights": weights,
                        "method": "full", "optim.epochs": 1, "optim.batch_size": 32, "seed": seed, "device": "cpu"}
                if head == "untrained":
                    over["optim.lr"] = UNTRAINED_LR
                yield "image_classification", arch, weights, seed, head, over


def text_runs(work: Path, seeds: list[int]):
    import csv

    rows = list(csv.DictReader(SMS.open(newline=""), delimiter="\t"))[:600]
    data = work / "sms.jsonl"
    data.write_text("".join(json.dumps({"text": r["SMS"], "label": r["Label"]}) + "\n" for r in rows))
    for arch, weights in (("bert", "all-minilm-l6-v2"), ("bert", "random"), ("distilbert", "random"),
                          ("roberta", "random")):
        for seed in seeds:
            for head in ("trained", "untrained"):
                over = {"task": "text_classification", "data.path": str(data), "model.arch": arch,
                        "model.weights": weights, "method": "lora", "optim.epochs": 1, "data.max_length": 64,
                        "seed": seed, "device": "cpu"}
                if head == "untrained":
                    over["optim.lr"] = UNTRAINED_LR
                yield "text_classification", arch, weights, seed, head, over


def generation_runs(work: Path, seeds: list[int]):
    from tests.conftest import write_reverse_pairs

    data = write_reverse_pairs(work / "reverse.jsonl", rows=120)
    for arch in ("gpt2", "llama", "qwen2"):
        for seed in seeds:
            for head in ("trained", "untrained"):
                over = {"task": "text_generation", "data.path": str(data), "model.arch": arch,
                        "model.weights": "random", "method": "lora", "optim.epochs": 1, "optim.lr": 1e-2,
                        "optim.batch_size": 16, "data.max_length": 48, "seed": seed, "device": "cpu"}
                if head == "untrained":
                    over["optim.lr"] = UNTRAINED_LR
                yield "text_generation", arch, "random", seed, head, over


def tamper_image(run_dir: Path, bundle: Path) -> dict:
    """Margins and top-1 of three tampered image exports (each must fail)."""
    import onnx

    from edgetune.errors import ParityError
    from edgetune.export.bundle import held_out_pixels
    from edgetune.export.parity import ImageContract, check_parity
    from edgetune.runtime.sessions import create_session
    from edgetune.export.specs import EXPORT_SPECS
    from edgetune.runtime.imaging import Preprocessing
    from edgetune.trainers.run import load_run

    spec = EXPORT_SPECS["image_classification"]
    run = load_run(run_dir)
    pixels = held_out_pixels(run_dir)
    ref = ImageContract(run.preprocessing, run.classes)
    p = run.preprocessing
    imagenet = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    other = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) if tuple(p.mean) != (0.5, 0.5, 0.5) else imagenet
    swapped = [run.classes[1], run.classes[0], *run.classes[2:]]
    proto = onnx.load(str(bundle / "model.onnx"))
    head = next(t for t in proto.graph.initializer if len(t.dims) == 2 and t.dims[0] == len(run.classes))
    noise = np.random.default_rng(0).normal(0, 1e-3, tuple(head.dims)).astype(np.float32)
    head.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(head) + noise, head.name))
    shifted = bundle.parent / "shifted.onnx"
    onnx.save(proto, str(shifted))
    good = create_session(bundle / "model.onnx", "cpu")
    cases = {"normalization": (good, ImageContract(Preprocessing(p.size, *other), run.classes)),
             "swapped labels": (good, ImageContract(p, swapped)),
             "head weights + N(0, 1e-3)": (create_session(shifted, "cpu"), ref)}
    out = {}
    for name, (session, device) in cases.items():
        try:
            report = check_parity(run.model, session, spec, pixels, ref, device)
            out[name] = {"failed": False, "margin": report.margin, "top1": report.top1_agreement}
        except ParityError as e:
            out[name] = {"failed": True, "margin": e.report.margin, "top1": e.report.top1_agreement}
    return out


def tamper_text(run_dir: Path, work: Path) -> dict:
    from tests.conftest import copy_with_broken_adapter

    broken = copy_with_broken_adapter(run_dir, work / "broken_run")
    result = _export(broken, work / "broken_bundle")
    shutil.rmtree(broken)
    return {"broken adapter (LoRA B + 0.5)": {"failed": not result["passed"], "margin": result["margin"]}}


def measure(seeds: list[int], only: list[str], archs: list[str] | None = None) -> dict:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    sources = {"image": lambda work, seeds: image_runs(work, seeds, archs), "text": text_runs,
               "generation": generation_runs}
    results, tampered = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in only:
            for task, arch, weights, seed, head, over in sources[kind](work, seeds):
                name = f"{arch}" + (f" ({weights})" if weights not in ("random",) else "")
                run_dir = work / f"run-{task}-{arch}-{weights}-{seed}-{head}"
                run = _train(over, run_dir)
                row = {"task": task, "arch": name, "seed": seed, "head": head, **_export(run, work / "bundle")}
                report = json.loads((run / "report.json").read_text())
                row["degenerate"] = bool(report.get("degenerate"))
                results.append(row)
                print(json.dumps(row), flush=True)
                key = f"{task}: {name}"
                if head == "trained" and seed == seeds[0] and key not in tampered:
                    if task == "image_classification":
                        tampered[key] = tamper_image(run, work / "bundle")
                    elif task == "text_classification":
                        tampered[key] = tamper_text(run, work)
                    if key in tampered:
                        print(json.dumps({key: tampered[key]}), flush=True)
                shutil.rmtree(work / "bundle", ignore_errors=True)
                shutil.rmtree(run_dir, ignore_errors=True)
    return {"exports": results, "tampered": tampered}


def demo_seeds(n: int) -> list[dict]:
    """The README demo's training and export (digits, EfficientNet-Lite0 from ImageNet weights,
    full fine-tune, 3 epochs at 64 px), in-process, with seeds 0..n-1."""
    from edgetune.trainers.data.digits import write_digits_imagefolder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_digits_imagefolder(work / "digits")
        for seed in range(n):
            over = {"data.path": str(data), "data.image_size": 64, "model.arch": "efficientnet_lite0",
                    "model.weights": "catalog", "method": "full", "optim.epochs": 3, "seed": seed}
            run = _train(over, work / f"run{seed}")
            report = json.loads((run / "report.json").read_text())
            from edgetune.errors import ParityError
            from edgetune.export.bundle import export_bundle

            try:
                parity, valid = export_bundle(run, work / f"bundle{seed}", device="cpu").parity, True
            except ParityError as e:
                parity, valid = e.report.to_dict(), False
            row = {"seed": seed, "valid": valid, "val_accuracy": report["final"]["accuracy"],
                   "margin": parity["margin"], "max_abs_diff": parity["max_abs_diff"],
                   "top1": f"{parity['top1_agreement']:.0%} of {parity['top1_compared']}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(results: list[dict]) -> str:
    lines = ["| task | architecture | exports (seeds x heads) | largest margin | largest abs diff | failures |",
             "| --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["arch"]), []).append(r)
    for (task, arch), rows in groups.items():
        seeds = len({r["seed"] for r in rows})
        lines.append(f"| {task} | {arch} | {len(rows)} ({seeds} x {len(rows) // seeds}) | "
                     f"{max(r['margin'] for r in rows):.2g} | {max(r['max_abs_diff'] for r in rows):.2e} | "
                     f"{sum(not r['passed'] for r in rows)} |")
    worst = max(r["margin"] for r in results)
    lines.append(f"\n{len(results)} exports, {sum(not r['passed'] for r in results)} false failures, "
                 f"largest margin {worst:.2g} (goal <= 0.5)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--only", nargs="+", default=["image", "text", "generation"],
                    choices=["image", "text", "generation"])
    ap.add_argument("--archs", nargs="+", help="image architectures (default: the whole registry)")
    ap.add_argument("--demo-seeds", type=int, help="instead: the demo path with this many seeds")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    if args.demo_seeds:
        rows = demo_seeds(args.demo_seeds)
        print(f"\ndemo path, {len(rows)} seeds: {sum(r['valid'] for r in rows)} valid bundles, largest margin "
              f"{max(r['margin'] for r in rows):.3f}")
        out = {"demo": rows}
    else:
        only = args.only
        if "text" in only and not SMS.is_file():
            print(f"text classification skipped: {SMS} not found (this part needs ../shared/data/sms_spam)")
            only = [k for k in only if k != "text"]
        out = measure(args.seeds, only, args.archs)
        print()
        print(table(out["exports"]))
        print("\ntampered exports (each must fail):")
        for key, cases in out["tampered"].items():
            print(f"  {key}: " + ", ".join(
                f"{k}: {'failed' if v['failed'] else 'PASSED'} (margin {v['margin']:.3g}"
                + (f", top-1 {v['top1']:.0%})" if v.get("top1") is not None else ")") for k, v in cases.items()))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
