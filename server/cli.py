"""`edgetune serve` and the remote commands (`edgetune remote ...`), built on the Python client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgetune.errors import EdgetuneError


def _env(name: str, default):
    value = os.environ.get(name)
    return type(default)(value) if value is not None else default


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="run the gRPC service (SQLite + local disk; binds 127.0.0.1)")
    serve.add_argument("--host", default=_env("EDGETUNE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=_env("EDGETUNE_PORT", 50051), help="0 picks a free port")
    serve.add_argument("--data-dir", default=_env("EDGETUNE_DATA_DIR", "edgetune-data"))
    serve.add_argument("--slots", type=int, default=_env("EDGETUNE_SLOTS", 0),
                       help="concurrent jobs (default: GPU count, 1 on CPU)")
    serve.add_argument("--max-queued", type=int, default=_env("EDGETUNE_MAX_QUEUED", 32))
    serve.add_argument("--max-upload-mb", type=int, default=_env("EDGETUNE_MAX_UPLOAD_MB", 2048))
    serve.add_argument("--stall-timeout", type=float, default=_env("EDGETUNE_STALL_TIMEOUT_S", 1800.0),
                       help="seconds without progress after which a job's worker counts as hung")
    serve.add_argument("--grace", type=float, default=_env("EDGETUNE_GRACE_S", 10.0),
                       help="seconds in-flight RPCs get on SIGTERM")
    serve.add_argument("--reflection", action="store_true", default=bool(_env("EDGETUNE_REFLECTION", 0)),
                       help="enable server reflection (grpcurl, Postman)")

    remote = sub.add_parser("remote", help="drive a server over gRPC").add_subparsers(dest="remote", required=True)
    for name, help_ in [("models", "list base models"), ("upload", "upload a dataset"), ("submit", "create a job"),
                        ("watch", "stream a job's events"), ("jobs", "list jobs"), ("cancel", "cancel a job"),
                        ("export", "export a job"), ("download", "download a bundle"), ("predict", "classify"),
                        ("generate", "stream a completion")]:
        p = remote.add_parser(name, help=help_)
        p.add_argument("--server", default=_env("EDGETUNE_SERVER", "127.0.0.1:50051"))
        if name == "upload":
            p.add_argument("path", help="ImageFolder directory, .zip or .tar.gz; or a .jsonl/.csv/.tsv of text rows")
            p.add_argument("--name")
        elif name == "submit":
            p.add_argument("--dataset", required=True)
            p.add_argument("--task", default="image_classification",
                           choices=["image_classification", "text_classification", "text_generation"])
            p.add_argument("--model", default="", help="architecture; default: the task's (efficientnet_lite0, bert, llama)")
            p.add_argument("--method", default="full", choices=["full", "linear_probe", "lora", "ia3", "prompt_tuning"])
            p.add_argument("--weights", default="catalog")
            p.add_argument("--epochs", type=int, help="default: the method's (5)")
            p.add_argument("--lr", type=float, help="default: the method's")
            p.add_argument("--batch-size", type=int, help="default 32")
            p.add_argument("--image-size", type=int, help="images; default 224")
            p.add_argument("--max-length", type=int, help="text: tokens per example; default 128")
            p.add_argument("--idempotency-key", default="")
            p.add_argument("--watch", action="store_true", help="then stream its events to the end")
        elif name in ("watch", "cancel", "export"):
            p.add_argument("job_id")
            if name == "export":
                p.add_argument("--allow-degenerate", action="store_true",
                               help="export a job whose model is flagged degenerate (Job.warnings)")
        elif name == "download":
            p.add_argument("export_id")
            p.add_argument("--out", default=".")
        elif name == "generate":
            p.add_argument("export_id")
            p.add_argument("prompt")
            p.add_argument("--max-new-tokens", type=int, default=0, help="default: the export's")
        elif name == "predict":
            p.add_argument("export_id")
            p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, or texts with --text")
            p.add_argument("--text", action="store_true", help="the inputs are texts (a text classification export)")
            p.add_argument("--top-k", type=int, default=5)


def run_serve(args) -> int:
    import logging

    from .grpc_app import serve
    from .service import ServerConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edgetune").setLevel(logging.INFO)  # not the exporters' INFO chatter
    slots = args.slots
    if slots <= 0:
        import torch

        slots = max(1, torch.cuda.device_count())
    cfg = ServerConfig(data_dir=Path(args.data_dir), slots=slots, max_queued=args.max_queued,
                       max_upload_bytes=args.max_upload_mb * 1024 * 1024, stall_timeout_s=args.stall_timeout)
    serve(cfg, args.host, args.port, args.reflection, args.grace, on_ready=lambda m: print(m, flush=True))
    return 0


def _print_event(e) -> None:
    from edgetune.v1 import jobs_pb2

    kind = e.WhichOneof("kind")
    if kind == "state":
        print(f"[{e.id}] state {jobs_pb2.JobState.Name(e.state)}")
    elif kind == "epoch":
        m = e.epoch
        print(f"[{e.id}] epoch {m.epoch}: train_loss {m.train_loss:.4f} val_loss {m.val_loss:.4f} "
              f"val_accuracy {m.val_accuracy:.4f} val_macro_f1 {m.val_macro_f1:.4f}")
    elif kind == "step":
        s = e.step
        print(f"[{e.id}] epoch {s.epoch}/{s.epochs} step {s.step}/{s.steps} loss {s.loss:.4f} ETA {s.eta_seconds:.0f}s")
    else:
        print(f"[{e.id}] {e.log}")
    sys.stdout.flush()


def run_remote(args) -> int:
    import grpc

    from edgetune.v1 import jobs_pb2

    from .client import EdgetuneClient

    client = EdgetuneClient(args.server)
    try:
        cmd = args.remote
        if cmd == "models":
            for m in client.list_base_models():
                print(m.arch, m.family, ", ".join(f"{w.name}{'' if w.available else ' (missing)'}" for w in m.weights))
        elif cmd == "upload":
            d = client.upload_dataset(args.path, args.name)
            examples = d.report.rows or sum(c.train + c.val for c in d.report.classes)
            print(d.id, jobs_pb2.Task.Name(d.report.task), f"{len(d.report.classes)} classes,", examples, "examples")
        elif cmd == "submit":
            hyper = {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
                     "image_size": args.image_size, "max_length": args.max_length}
            for flag, value in hyper.items():
                # The API reads 0 as "unset": a 0 typed on the command line is an error, not a default.
                if value is not None and value <= 0:
                    raise EdgetuneError(f"--{flag.replace('_', '-')}".replace("learning-rate", "lr"),
                                        f"must be > 0, got {value}")
            job = client.create_job(args.dataset, args.model, args.method, args.weights, args.idempotency_key,
                                    task=args.task, **{k: v for k, v in hyper.items() if v is not None})
            print(job.id)
            if args.watch:
                for e in client.watch(job.id):
                    _print_event(e)
                return 0 if client.get_job(job.id).state == jobs_pb2.JOB_STATE_SUCCEEDED else 1
        elif cmd == "watch":
            for e in client.watch(args.job_id):
                _print_event(e)
        elif cmd == "jobs":
            for j in client.list_jobs():
                print(j.id, jobs_pb2.JobState.Name(j.state), j.base_model, f"epoch {j.epoch}/{j.epochs}",
                      j.error or "; ".join(f"WARNING: {w}" for w in j.warnings))
        elif cmd == "cancel":
            state = client.cancel_job(args.job_id).state
            if state == jobs_pb2.JOB_STATE_RUNNING:
                print("cancel requested; the worker stops within seconds (watch the job for CANCELLED)")
            else:
                print(jobs_pb2.JobState.Name(state))
        elif cmd == "export":
            exp = client.export(args.job_id, allow_degenerate=args.allow_degenerate)
            print(exp.id, "valid" if exp.valid else "INVALID", f"parity margin {exp.parity.margin:.3g} of the "
                  f"tolerance (max abs diff {exp.parity.max_abs_diff:.2e}), top-1 agreement "
                  f"{exp.parity.top1_agreement:.0%} over {exp.parity.top1_compared} decisions", exp.error)
            return 0 if exp.valid else 3
        elif cmd == "download":
            print(client.download(args.export_id, args.out))
        elif cmd == "generate":
            for piece in client.generate(args.export_id, args.prompt, args.max_new_tokens):
                print(piece.text, end="", flush=True)
            print()
        elif cmd == "predict":
            if args.text:
                results = client.predict(args.export_id, top_k=args.top_k, texts=args.inputs)
            else:
                results = client.predict(args.export_id, [Path(p).read_bytes() for p in args.inputs], args.top_k)
            for source, r in zip(args.inputs, results):
                print(f"{source}: " + ", ".join(f"{t.label} {t.score:.4f}" for t in r.top))
        return 0
    except grpc.RpcError as e:
        raise EdgetuneError(e.code().name, e.details() or "") from None
    except OSError as e:
        raise EdgetuneError(getattr(e, "filename", None) or "file", e.strerror or str(e)) from None
    finally:
        client.close()
