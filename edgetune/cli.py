"""The ``edgetune`` command. Every subcommand calls the same functions the server and tests use.

Errors a user can cause print one line (``edgetune: error: FIELD: message``) and exit 2;
a failed parity gate exits 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgetune.errors import EdgetuneError

# CLI flag -> dotted config field; everything else goes through --set.
_FLAG_FIELDS = {
    "data": "data.path", "val_data": "data.val_path", "model": "model.arch", "method": "method",
    "weights": "model.weights", "init_from": "model.init_from", "epochs": "optim.epochs",
    "lr": "optim.lr", "batch_size": "optim.batch_size", "optimizer": "optim.optimizer",
    "image_size": "data.image_size", "seed": "seed", "device": "device",
    "patience": "optim.early_stopping_patience",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgetune", description="Fine-tune models and export verified ONNX bundles.")
    sub = p.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a model").add_subparsers(dest="task", required=True)
    img = train.add_parser("image", help="fine-tune a timm image classifier")
    img.add_argument("--data", help="ImageFolder dir, .zip/.tar.gz of one, or CSV manifest (path,label)")
    img.add_argument("--val-data", help="explicit validation set (default: stratified split of --data)")
    img.add_argument("--model", help="architecture (see `edgetune models`)")
    img.add_argument("--method", choices=["full", "linear_probe", "lora"])
    img.add_argument("--weights", help="catalog (default), random, a catalog entry name, or a weights file/dir")
    img.add_argument("--init-from", help="re-tune an earlier run (same labels)")
    img.add_argument("--out", help="run directory to create")
    img.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    img.add_argument("--config", help="YAML config file")
    img.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override any config field, e.g. --set optim.label_smoothing=0.0")
    img.add_argument("--epochs", type=int)
    img.add_argument("--lr", type=float)
    img.add_argument("--batch-size", type=int)
    img.add_argument("--optimizer", choices=["adamw", "sgd"])
    img.add_argument("--image-size", type=int)
    img.add_argument("--patience", type=int, help="early stopping patience in epochs (0 = off)")
    img.add_argument("--seed", type=int)
    img.add_argument("--device", choices=["auto", "cpu", "cuda"])
    img.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images instead of failing")
    img.add_argument("--no-augment", action="store_true", help="turn training augmentation off")

    exp = sub.add_parser("export", help="export a run to a verified ONNX bundle")
    exp.add_argument("run")
    exp.add_argument("--out", required=True, help="bundle directory to create")
    exp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    exp.add_argument("--force", action="store_true", help="replace an existing bundle")
    exp.add_argument("--atol", type=float, help="parity tolerance, max abs diff (default 1e-4)")

    pred = sub.add_parser("predict", help="classify images with a bundle in ONNX Runtime")
    pred.add_argument("bundle")
    pred.add_argument("images", nargs="+")
    pred.add_argument("--top-k", type=int, default=5)
    pred.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    pred.add_argument("--json", action="store_true", help="print JSON lines")

    sub.add_parser("models", help="list architectures and the local base weights for each")

    data = sub.add_parser("data", help="dataset helpers").add_subparsers(dest="data_command", required=True)
    digits = data.add_parser("digits", help="write scikit-learn's digits as an ImageFolder")
    digits.add_argument("out")

    from edgetune.server.cli import add_parsers

    add_parsers(sub)

    demo = sub.add_parser("demo", help="start the service and, through it, fine-tune EfficientNet-Lite0 on "
                                       "digits, export, verify and predict")
    demo.add_argument("--workdir", default="demo-output")
    demo.add_argument("--epochs", type=int, default=3)
    return p


def _train(args) -> int:
    from edgetune.progress import TerminalProgress
    from edgetune.trainers.config import config_from_dict, load_config
    from edgetune.trainers.image import ckpt_config, train_image
    from edgetune.trainers.run import RunFiles

    progress = TerminalProgress()
    if args.resume:
        cfg = config_from_dict(ckpt_config(RunFiles(Path(args.resume))))
        result = train_image(cfg, args.resume, progress, resume=True)
    else:
        for name in ("data", "out"):
            if not getattr(args, name) and not args.config:
                raise EdgetuneError(f"--{name}", "is required (or use --resume RUN)")
        if not args.out:
            raise EdgetuneError("--out", "is required")
        overrides = {f: getattr(args, a) for a, f in _FLAG_FIELDS.items() if getattr(args, a) is not None}
        if args.skip_corrupt:
            overrides["data.skip_corrupt"] = True
        if args.no_augment:
            overrides["data.augment"] = False
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise EdgetuneError("--set", f"expected SECTION.FIELD=VALUE, got {item!r}")
            overrides[key.strip()] = value.strip()
        cfg = load_config(args.config, overrides)
        if not cfg.data.path:
            raise EdgetuneError("data.path", "is required (--data)")
        result = train_image(cfg, args.out, progress)
    print(result.summary())
    return 0


def _export(args) -> int:
    from edgetune.export.bundle import export_bundle
    from edgetune.export.parity import parity_line
    from edgetune.progress import TerminalProgress

    result = export_bundle(args.run, args.out, device=args.device, force=args.force, atol=args.atol,
                           progress=TerminalProgress())
    print(parity_line(result.parity))
    print(f"bundle: {result.dir}")
    return 0


def _predict(args) -> int:
    from edgetune.export.runtime import BundlePredictor

    predictor = BundlePredictor(args.bundle, device=args.device)
    for p in predictor.predict_files(args.images, top_k=args.top_k):
        if args.json:
            print(json.dumps({"path": p.path, "top": [{"label": lab, "score": s} for lab, s in p.top]}))
        else:
            print(f"{p.path}: " + ", ".join(f"{lab} {s:.4f}" for lab, s in p.top))
    return 0


def _models(args) -> int:
    from edgetune.trainers.catalog import list_base_models

    for row in list_base_models():
        weights = ", ".join(f"{w['name']} ({'available' if w['available'] else 'not installed'})"
                            for w in row["weights"]) or "none in catalog (use --weights FILE or random)"
        print(f"{row['arch']:<24} {row['family']:<4} {weights}")
    return 0


def _demo(args) -> int:
    from edgetune.server.demo import run_demo
    from edgetune.progress import TerminalProgress

    run_demo(args.workdir, TerminalProgress(sys.stdout), epochs=args.epochs)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from edgetune.server.cli import run_remote, run_serve

    handlers = {"train": _train, "export": _export, "predict": _predict, "models": _models, "demo": _demo,
                "data": lambda a: _digits(a), "serve": run_serve, "remote": run_remote}
    try:
        return handlers[args.command](args)
    except EdgetuneError as e:
        print(f"edgetune: error: {e.subject}: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgetune: interrupted", file=sys.stderr)
        return 130


def _digits(args) -> int:
    from edgetune.digits import write_digits_imagefolder

    print(write_digits_imagefolder(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
