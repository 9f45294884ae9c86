"""The ``edgetune`` command. Every subcommand calls the same functions the server and tests use.

Errors a user can cause print one line (``edgetune: error: FIELD: message``) and exit 2;
a failed parity gate exits 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edgetune.errors import EdgetuneError, InvalidArgument, NotFound
from edgetune.launch import EXIT_STOPPED  # SIGTERM: resume state saved, --resume continues
from edgetune.tasks import DEVICES, IMAGE_CLASSIFICATION, TASKS, TEXT_CLASSIFICATION, TEXT_GENERATION

# CLI flag -> dotted config field; everything else goes through --set.
_FLAG_FIELDS = {
    "data": "data.path", "val_data": "data.val_path", "model": "model.arch", "method": "method",
    "weights": "model.weights", "init_from": "model.init_from", "epochs": "optim.epochs",
    "lr": "optim.lr", "batch_size": "optim.batch_size", "optimizer": "optim.optimizer",
    "image_size": "data.image_size", "seed": "seed", "device": "device",
    "patience": "optim.early_stopping_patience", "max_length": "data.max_length",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgetune", description="Fine-tune models and export verified ONNX bundles.")
    p.add_argument("--verbose", action="store_true", help="show third-party warnings, load reports and progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a model").add_subparsers(dest="task", required=True)
    img = train.add_parser("image", help="fine-tune a timm image classifier")
    img.add_argument("--data", help="ImageFolder dir, .zip/.tar.gz of one, or CSV manifest (path,label)")
    _common_train_args(img, IMAGE_CLASSIFICATION, "a weights file/dir")
    img.add_argument("--image-size", type=int)
    img.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images instead of failing")
    img.add_argument("--no-augment", action="store_true", help="turn training augmentation off")
    txt = train.add_parser("text", help="fine-tune a transformers text model (classification or instruction tuning)")
    txt.add_argument("--task", dest="text_task", choices=["classification", "generation"],
                     help="classification (default): (text, label) rows on an encoder; generation: "
                          "(prompt, response) rows on a decoder")
    txt.add_argument("--data", help=".jsonl, .csv or .tsv file of (text, label) or (prompt, response) rows")
    _common_train_args(txt, TEXT_CLASSIFICATION, "a local HF directory")
    txt.add_argument("--max-length", type=int, help="tokens per example (default 128)")
    txt.add_argument("--skip-corrupt", action="store_true", help="skip invalid rows instead of failing")

    exp = sub.add_parser("export", help="export runs to verified ONNX bundles",
                         description="One run: --out is the bundle. Several runs (or --from): --out is a folder that "
                                     "gets one bundle per run; they export in parallel, bundles already up to date "
                                     "are skipped, a failing run does not stop the others, and the exit status is "
                                     "non-zero if any failed.")
    exp.add_argument("run", nargs="*", help="run directories")
    exp.add_argument("--from", dest="batch_file", metavar="FILE",
                     help="a batch file: one run directory per line, or a JSON list of {run, out?, precision?, "
                          "allow_degenerate?, allow_unfinished?}")
    exp.add_argument("--jobs", type=int, default=0, help="batch: exports at a time (default: half the cores, >= 1)")
    exp.add_argument("--out", required=True, help="the bundle directory (one run) or the folder of bundles (a batch)")
    exp.add_argument("--device", default="auto", choices=DEVICES)
    exp.add_argument("--force", action="store_true", help="replace an existing bundle")
    exp.add_argument("--atol", type=float, help="parity tolerance, absolute part (default: the task's, see "
                                                "export/specs.py); per output |ort - torch| <= atol + rtol*|torch|")
    exp.add_argument("--rtol", type=float, help="parity tolerance, relative part (default: the task's)")
    exp.add_argument("--allow-degenerate", action="store_true",
                     help="export a run whose training report flags the model as degenerate")
    exp.add_argument("--allow-unfinished", action="store_true",
                     help="export the best checkpoint so far of a run that has not finished training")
    exp.add_argument("--precision", default="fp32", metavar="LIST",
                     help="comma-separated, of fp32 (always), fp16, int8: variants built beside model.onnx, each "
                          "kept only if it passes its held-out accuracy gate (default: fp32)")

    pred = sub.add_parser("predict", help="classify images or texts with a bundle in ONNX Runtime")
    pred.add_argument("bundle")
    pred.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="image files; or texts for a text bundle ('-' reads one text per line from stdin)")
    pred.add_argument("--top-k", type=int, default=5)
    pred.add_argument("--device", default="auto", choices=DEVICES)
    pred.add_argument("--variant", choices=("fp32", "fp16", "int8"),
                      help="which of the bundle's variants runs (default: the manifest's default_variant)")
    pred.add_argument("--json", action="store_true", help="print JSON lines")

    gen = sub.add_parser("generate", help="complete a prompt with a text generation bundle in ONNX Runtime")
    gen.add_argument("bundle")
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, help="default: the bundle's")
    gen.add_argument("--device", default="auto", choices=DEVICES)

    sub.add_parser("models", help="list architectures and the local base weights for each")

    data = sub.add_parser("data", help="dataset helpers").add_subparsers(dest="data_command", required=True)
    digits = data.add_parser("digits", help="write scikit-learn's digits as an ImageFolder")
    digits.add_argument("out")

    from edgetune.cli.remote import add_parsers

    add_parsers(sub)

    demo = sub.add_parser("demo", help="start the service and, through it, fine-tune EfficientNet-Lite0 on "
                                       "digits, export, verify and predict")
    demo.add_argument("--workdir", default="demo-output")
    demo.add_argument("--epochs", type=int, default=3)
    return p


def _common_train_args(p: argparse.ArgumentParser, task: str, weights_path: str) -> None:
    methods = TASKS[task].methods if task == IMAGE_CLASSIFICATION else tuple(
        dict.fromkeys(TASKS[TEXT_CLASSIFICATION].methods + TASKS[TEXT_GENERATION].methods))
    defaults = {m: d["epochs"] for m, d in TASKS[task].method_defaults.items()}
    p.add_argument("--val-data", help="explicit validation set (default: stratified split of --data)")
    p.add_argument("--model", help="architecture (see `edgetune models`)")
    p.add_argument("--method", choices=methods, help="default: full")
    p.add_argument("--weights", help=f"catalog (default), random, a catalog entry name, or {weights_path}")
    p.add_argument("--init-from", help="re-tune an earlier run (same labels)")
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set optim.label_smoothing=0.0")
    p.add_argument("--epochs", type=int, help="default: the method's ("
                   + ", ".join(f"{m} {e}" for m, e in defaults.items()) + ")")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--gpus", type=int, metavar="K",
                   help="train on K GPUs of this node, one process each (DDP through torchrun; the same "
                        "global batch as one process); with --device cpu, K CPU processes")


_TEXT_TASKS = {"classification": TEXT_CLASSIFICATION, "generation": TEXT_GENERATION}


def _yaml_task(path: str | None) -> str | None:
    from edgetune.trainers.config import read_yaml

    tree = read_yaml(path, "config") if path else None
    return tree.get("task") if isinstance(tree, dict) else None


def _train(args) -> int:
    """``edgetune train``; SIGTERM saves the resume state at the next optimizer step and exits 75."""
    import signal

    from edgetune.progress import TrainingStopped, request_stop

    if args.gpus is not None and args.gpus < 1:
        raise EdgetuneError("--gpus", f"must be at least 1, got {args.gpus}")
    if (args.gpus or 1) > 1 and "WORLD_SIZE" not in os.environ:  # start the job's processes
        from edgetune.launch import launch

        _check_gpus(args)
        return launch(args.gpus, ["edgetune.cli", *args.argv])
    signal.signal(signal.SIGTERM, request_stop)
    out = args.resume or args.out
    try:
        return _train_run(args)
    except TrainingStopped:
        print(f"edgetune: stopped; the run's state is saved: continue with `edgetune train --resume {out}`",
              file=sys.stderr)
        return EXIT_STOPPED


def _check_gpus(args) -> None:
    """``--gpus K`` needs K GPUs, unless the processes run on the CPU (``--device cpu``)."""
    sets = dict(item.partition("=")[::2] for item in args.set)
    if (args.device or sets.get("device", "").strip()) == "cpu":
        return
    from edgetune.runtime.sessions import cuda_device_count

    have = cuda_device_count()
    if have < args.gpus:
        raise EdgetuneError("--gpus", f"{args.gpus} GPUs asked for, this machine has {have}"
                            + ("" if have else " (--device cpu runs the processes on the CPU)"))


def _train_run(args) -> int:
    from edgetune.progress import TerminalProgress
    from edgetune.trainers.config import load_config

    if args.resume:
        if not Path(args.resume).is_dir():
            raise NotFound(args.resume, "no such run directory")
        from edgetune.trainers.train import read_run_config, train

        _print_summary(train(read_run_config(args.resume), args.resume, TerminalProgress(), resume=True))
        return 0
    for name in ("data", "out"):
        if not getattr(args, name) and not args.config:
            raise EdgetuneError(f"--{name}", "is required (or use --resume RUN)")
    if not args.out:
        raise EdgetuneError("--out", "is required")
    cfg = load_config(args.config, _overrides(args))
    if not cfg.data.path:
        raise EdgetuneError("data.path", "is required (--data)")
    cfg.check_paths()  # before torch loads: a wrong path answers at once
    from edgetune.trainers.train import train

    _print_summary(train(cfg, args.out, TerminalProgress()))
    return 0


def _print_summary(result) -> None:
    if result.report:  # under DDP, rank 0's (the others return an empty one)
        print(result.summary())


def _overrides(args) -> dict:
    """Flags, the task, and ``--set`` items as dotted config fields."""
    overrides = {f: getattr(args, a) for a, f in _FLAG_FIELDS.items() if getattr(args, a, None) is not None}
    if args.task == "image":
        overrides["task"] = IMAGE_CLASSIFICATION
    elif args.text_task or _yaml_task(args.config) not in _TEXT_TASKS.values():
        overrides["task"] = _TEXT_TASKS[args.text_task or "classification"]  # else the YAML's text task
    if args.skip_corrupt:
        overrides["data.skip_corrupt"] = True
    if getattr(args, "no_augment", False):
        overrides["data.augment"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise EdgetuneError("--set", f"expected SECTION.FIELD=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _export(args) -> int:
    if args.batch_file or len(args.run) > 1:
        return _export_batch(args)
    if len(args.run) != 1:
        raise InvalidArgument("run", "give a run directory (or several, or --from FILE)")
    args.run = args.run[0]
    if not Path(args.run).is_dir():
        raise NotFound(args.run, "no such run directory")
    from edgetune.export.bundle import export_bundle
    from edgetune.export.parity import parity_line
    from edgetune.export.variants import variants_lines
    from edgetune.progress import TerminalProgress

    result = export_bundle(args.run, args.out, device=args.device, force=args.force, atol=args.atol, rtol=args.rtol,
                           allow_degenerate=args.allow_degenerate, allow_unfinished=args.allow_unfinished,
                           progress=TerminalProgress(), precisions=args.precision)
    source = result.manifest["source_run"]
    print(f"exported epoch {source['epoch']} of {source['epochs']}"
          + ("" if source["finished"] else " (training had not finished)")
          + "".join(f"; exported despite: {k}" for k in source["exported_despite"]))
    print(parity_line(result.parity))
    for line in variants_lines(result.manifest):
        print(line)
    print(f"bundle: {result.dir}")
    return 0


def _export_batch(args) -> int:
    from edgetune.export.batch import FAILED, BatchItem, export_batch, read_batch_file, results_table
    from edgetune.export.specs import parse_precisions

    out = Path(args.out)
    if out.is_dir() and (out / "manifest.json").is_file():
        raise InvalidArgument("out", f"{out} is a bundle; a batch writes one bundle per run under a folder")
    defaults = {"precisions": parse_precisions(args.precision), "allow_degenerate": args.allow_degenerate,
                "allow_unfinished": args.allow_unfinished, "atol": args.atol, "rtol": args.rtol}
    items = [BatchItem(Path(r), out / Path(r).resolve().name, **defaults) for r in args.run]
    if args.batch_file:
        items += read_batch_file(args.batch_file, out, defaults)
    for item in items:
        item.device = args.device
    workers = args.jobs or max(1, (os.cpu_count() or 1) // 2)
    print(f"exporting {len(items)} run(s), {min(workers, len(items))} at a time, into {out}", flush=True)
    results = export_batch(items, workers, on_result=lambda r: print(f"{r.status}: {r.run} -> {r.out}"
                                                                     f" ({r.detail})", flush=True))
    print(results_table(results))
    return 1 if any(r.status == FAILED for r in results) else 0


def _predict(args) -> int:
    from edgetune.runtime import TextGenerator, TextPredictor, load_predictor

    predictor = load_predictor(args.bundle, device=args.device, variant=args.variant)
    if isinstance(predictor, TextGenerator):
        raise EdgetuneError("bundle", f"{args.bundle} generates text; use `edgetune generate`")
    if isinstance(predictor, TextPredictor):
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.inputs == ["-"] else args.inputs
        predictions, key = predictor.predict_texts(texts, top_k=args.top_k), "text"
    else:
        predictions, key = predictor.predict_files(args.inputs, top_k=args.top_k), "path"
    for p in predictions:
        if args.json:
            print(json.dumps({key: p.source, "top": [{"label": lab, "score": s} for lab, s in p.top]}))
        else:
            print(f"{p.source}: " + ", ".join(f"{lab} {s:.4f}" for lab, s in p.top))
    return 0


def _generate(args) -> int:
    from edgetune.runtime import TextGenerator

    for _, piece in TextGenerator(args.bundle, device=args.device).stream(args.prompt, args.max_new_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def _models(args) -> int:
    from edgetune.trainers.models.catalog import list_base_models

    for row in list_base_models():
        weights = ", ".join(f"{w['name']} ({'available' if w['available'] else 'not installed'})"
                            for w in row["weights"]) or "none in catalog (use --weights FILE or random)"
        print(f"{row['arch']:<24} {row['task']:<22} {weights}")
    return 0


def _demo(args) -> int:
    from edgetune.cli.demo import run_demo
    from edgetune.progress import TerminalProgress

    run_demo(args.workdir, TerminalProgress(sys.stdout), epochs=args.epochs)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()  # defaults come from EDGETUNE_* settings, which may not parse
    except EdgetuneError as e:
        print(f"edgetune: error: {e.subject}: {e.message}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from edgetune.cli.remote import run_remote, run_serve, run_token
    from edgetune.quiet import quiet_libraries

    quiet_libraries(args.verbose)
    handlers = {"train": _train, "export": _export, "predict": _predict, "generate": _generate, "models": _models,
                "demo": _demo,
                "data": lambda a: _digits(a), "serve": run_serve, "remote": run_remote, "token": run_token}
    from edgetune.launch import record_exit

    try:
        return record_exit(handlers[args.command](args))
    except EdgetuneError as e:
        print(f"edgetune: error: {e.subject}: {e.message}", file=sys.stderr)
        return record_exit(e.exit_code)
    except KeyboardInterrupt:
        print("edgetune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edgetune remote watch JOB | head -1`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        return 0


def _digits(args) -> int:
    from edgetune.trainers.data.digits import write_digits_imagefolder

    out = write_digits_imagefolder(args.out)
    counts = {d.name: len(list(d.glob("*.png"))) for d in sorted(out.iterdir()) if d.is_dir()}
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out} "
          f"({min(counts.values())}-{max(counts.values())} per class)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
