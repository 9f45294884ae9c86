"""`edgetune serve` and the remote commands (`edgetune remote ...`), built on the Python client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgetune.errors import EdgetuneError
from edgetune.tasks import IMAGE_CLASSIFICATION, METHODS, TASKS


def _env(name: str, default):
    """An ``EDGETUNE_*`` setting as the type of its default (booleans: 1/true/yes/on, 0/false/no/off)."""
    value = os.environ.get(name)
    if value is None:
        return default
    if isinstance(default, bool):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("", "0", "false", "no", "off"):
            return False
    else:
        try:
            return type(default)(value)
        except ValueError:
            pass
    raise EdgetuneError(name, f"cannot read {value[:40]!r} as {type(default).__name__}")


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="run the gRPC service (SQLite + local disk; binds 127.0.0.1)")
    serve.add_argument("--host", default=_env("EDGETUNE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=_env("EDGETUNE_PORT", 50051), help="0 picks a free port")
    serve.add_argument("--data-dir", default=_env("EDGETUNE_DATA_DIR", "edgetune-data"))
    serve.add_argument("--slots", type=int, default=_env("EDGETUNE_SLOTS", 0),
                       help="concurrent jobs (default: the GPUs handed out, 1 on CPU)")
    serve.add_argument("--gpus", default=_env("EDGETUNE_GPUS", "auto"),
                       help="GPUs handed to jobs: auto (all this process sees), none, or ids such as 0,1,3")
    serve.add_argument("--max-queued", type=int, default=_env("EDGETUNE_MAX_QUEUED", 32))
    serve.add_argument("--max-queued-per-principal", type=int, default=_env("EDGETUNE_MAX_QUEUED_PER_PRINCIPAL", 16))
    serve.add_argument("--max-upload-mb", type=int, default=_env("EDGETUNE_MAX_UPLOAD_MB", 2048))
    serve.add_argument("--storage-quota-mb", type=int, default=_env("EDGETUNE_STORAGE_QUOTA_MB", 65536),
                       help="what one principal's datasets may hold on disk")
    serve.add_argument("--upload-idle-s", type=float, default=_env("EDGETUNE_UPLOAD_IDLE_S", 60.0),
                       help="an upload stream silent this long is dropped")
    serve.add_argument("--stall-timeout", type=float, default=_env("EDGETUNE_STALL_TIMEOUT_S", 1800.0),
                       help="seconds without progress after which a job's worker counts as hung")
    serve.add_argument("--grace", type=float, default=_env("EDGETUNE_GRACE_S", 10.0),
                       help="seconds in-flight RPCs get on SIGTERM")
    serve.add_argument("--reflection", action="store_true", default=_env("EDGETUNE_REFLECTION", False),
                       help="enable server reflection (grpcurl, Postman)")
    serve.add_argument("--metrics-port", type=int, default=_env("EDGETUNE_METRICS_PORT", -1),
                       help="serve Prometheus metrics on this port (0: a free one; default off)")
    serve.add_argument("--metrics-host", default=_env("EDGETUNE_METRICS_HOST", "127.0.0.1"))
    serve.add_argument("--log-format", choices=("text", "json"), default=_env("EDGETUNE_LOG_FORMAT", "text"),
                       help="json: one JSON object per log line")
    sec = serve.add_argument_group("security (a host beyond loopback needs tokens and TLS, or --insecure)")
    sec.add_argument("--auth-tokens", metavar="FILE", default=_env("EDGETUNE_AUTH_TOKENS", ""),
                     help="token file (see `edgetune token add`): every RPC but health needs a bearer token")
    sec.add_argument("--tls-cert", metavar="PEM", default=_env("EDGETUNE_TLS_CERT", ""))
    sec.add_argument("--tls-key", metavar="PEM", default=_env("EDGETUNE_TLS_KEY", ""))
    sec.add_argument("--tls-client-ca", metavar="PEM", default=_env("EDGETUNE_TLS_CLIENT_CA", ""),
                     help="require client certificates signed by this CA (mutual TLS)")
    sec.add_argument("--insecure", action="store_true", default=_env("EDGETUNE_INSECURE", False),
                     help="serve beyond loopback without tokens or TLS (logged as a warning)")

    token = sub.add_parser("token", help="manage the server's bearer tokens").add_subparsers(dest="token",
                                                                                             required=True)
    add = token.add_parser("add", help="make a token for a principal, print it once, store only its hash")
    add.add_argument("name", help="the principal: owns what its calls create ([A-Za-z0-9._@-], <= 64)")
    add.add_argument("--scopes", required=True, help="comma list of inference, jobs, admin")
    add.add_argument("--file", required=True, help="the token file the server reads (--auth-tokens)")

    remote = sub.add_parser("remote", help="drive a server over gRPC").add_subparsers(dest="remote", required=True)
    for name, help_ in [("models", "list base models"), ("upload", "upload a dataset"), ("submit", "create a job"),
                        ("watch", "stream a job's events"), ("jobs", "list jobs"), ("cancel", "cancel a job"),
                        ("export", "export a job"), ("download", "download a bundle"), ("predict", "classify"),
                        ("generate", "stream a completion")]:
        p = remote.add_parser(name, help=help_)
        p.add_argument("--server", default=_env("EDGETUNE_SERVER", "127.0.0.1:50051"))
        p.add_argument("--token", default=_env("EDGETUNE_TOKEN", ""), help="bearer token (env EDGETUNE_TOKEN)")
        p.add_argument("--tls-ca", metavar="PEM", default=_env("EDGETUNE_TLS_CA", ""),
                       help="use TLS, trusting this CA for the server's certificate")
        p.add_argument("--tls-cert", metavar="PEM", default=_env("EDGETUNE_TLS_CLIENT_CERT", ""),
                       help="client certificate (mutual TLS)")
        p.add_argument("--tls-key", metavar="PEM", default=_env("EDGETUNE_TLS_CLIENT_KEY", ""))
        p.add_argument("--server-name", default=_env("EDGETUNE_TLS_SERVER_NAME", ""),
                       help="the name the server's certificate must carry (default: the --server host)")
        if name == "upload":
            p.add_argument("path", help="ImageFolder directory, .zip or .tar.gz; or a .jsonl/.csv/.tsv of text rows")
            p.add_argument("--name")
            for column in ("text", "label", "prompt", "response"):
                p.add_argument(f"--{column}-field", metavar="COLUMN",
                               help=f"text rows: the column holding the {column} (default {column!r})")
        elif name == "submit":
            p.add_argument("--dataset", required=True)
            p.add_argument("--task", default=IMAGE_CLASSIFICATION, choices=list(TASKS))
            p.add_argument("--model", default="", help="architecture; default: the task's ("
                           + ", ".join(t.default_arch for t in TASKS.values()) + ")")
            p.add_argument("--method", default="full", choices=METHODS)
            p.add_argument("--weights", default="catalog")
            p.add_argument("--epochs", type=int, help="default: the method's (images 5, text 3)")
            p.add_argument("--lr", type=float, help="default: the method's")
            p.add_argument("--batch-size", type=int, help="default 32")
            p.add_argument("--image-size", type=int, help="images; default 224")
            p.add_argument("--max-length", type=int, help="text: tokens per example; default 128")
            p.add_argument("--gpus", type=int, default=0,
                           help="GPUs to train on, one process each (default: one when the server has any)")
            p.add_argument("--idempotency-key", default="")
            p.add_argument("--watch", action="store_true", help="then stream its events to the end")
        elif name in ("watch", "cancel"):
            p.add_argument("job_id")
        elif name == "export":
            p.add_argument("job_id", nargs="+", help="SUCCEEDED jobs (several: one BatchExportModels call)")
            p.add_argument("--no-wait", action="store_true", help="print the queued export id(s) and return")
            p.add_argument("--allow-degenerate", action="store_true",
                           help="export a job whose model is flagged degenerate (Job.warnings)")
            p.add_argument("--precision", default="fp32", metavar="LIST",
                           help="comma-separated, of fp32 (always), fp16, int8: variants kept only if they "
                                "pass their held-out accuracy gate")
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
            p.add_argument("--top-k", type=int, default=0, help="default: 5, or every class when fewer")
            p.add_argument("--variant", default="", choices=("", "fp32", "fp16", "int8"),
                           help="which of the export's variants runs (default: its default variant)")


def run_serve(args) -> int:
    import logging

    from edgetune.server.service import ServerConfig
    from edgetune.server.transport.grpc_app import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_format == "json":
        from edgetune.server.metrics import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("edgetune").setLevel(logging.INFO)  # not the exporters' INFO chatter
    from edgetune.server.service.config import server_gpus

    from edgetune.server.transport.grpc_app import Security
    from edgetune.server.transport.tls import TlsFiles

    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        raise EdgetuneError("--tls-cert", "TLS needs both --tls-cert and --tls-key (and they for --tls-client-ca)")
    tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key),
                   Path(args.tls_client_ca) if args.tls_client_ca else None) if args.tls_cert else None
    security = Security(Path(args.auth_tokens) if args.auth_tokens else None, tls, args.insecure)
    gpus = server_gpus(args.gpus)
    slots = args.slots if args.slots > 0 else max(1, len(gpus))
    cfg = ServerConfig(data_dir=Path(args.data_dir), slots=slots, max_queued=args.max_queued,
                       max_queued_per_principal=args.max_queued_per_principal,
                       max_upload_bytes=args.max_upload_mb * 1024 * 1024, stall_timeout_s=args.stall_timeout,
                       storage_quota_bytes=args.storage_quota_mb * 1024 * 1024, upload_idle_s=args.upload_idle_s,
                       gpus=gpus)
    serve(cfg, args.host, args.port, args.reflection, args.grace, on_ready=lambda m: print(m, flush=True),
          security=security, metrics_address=(args.metrics_host, args.metrics_port) if args.metrics_port >= 0 else None)
    return 0


def run_token(args) -> int:
    from edgetune.server.auth import add_token

    token = add_token(args.file, args.name, [s.strip() for s in args.scopes.split(",") if s.strip()])
    print(token)
    print(f"# {args.name}: token above is shown once; {args.file} keeps only its hash", file=sys.stderr)
    return 0


def job_event(e, epochs: int):
    """A JobEvent as the progress event it was in the worker (for ``TerminalProgress``)."""
    from edgetune.progress import EpochEnd, LogLine, StepProgress
    from edgetune.v1 import jobs_pb2

    kind = e.WhichOneof("kind")
    if kind == "state":
        return LogLine(f"job {e.job_id}: {jobs_pb2.JobState.Name(e.state).removeprefix('JOB_STATE_')}")
    if kind == "step":
        s = e.step
        return StepProgress(s.epoch, s.epochs, s.step, s.steps, s.loss, s.learning_rate, s.eta_seconds)
    if kind == "epoch":
        m = e.epoch
        metrics = {"train_loss": m.train_loss, "val_loss": m.val_loss, "val_accuracy": m.val_accuracy}
        # Generation reports perplexity (> 0) and has no macro-F1; classifiers the other way round.
        metrics.update({"val_perplexity": m.val_perplexity} if m.val_perplexity else {"val_macro_f1": m.val_macro_f1})
        return EpochEnd(m.epoch, epochs, metrics, m.seconds, False)
    return LogLine(e.log)


def _watch(client, job_id: str) -> None:
    from edgetune.progress import TerminalProgress

    show, epochs = TerminalProgress(sys.stdout), client.get_job(job_id).epochs
    for e in client.watch(job_id):
        show(job_event(e, epochs))


def run_remote(args) -> int:
    import grpc

    from edgetune.server.transport.client import EdgetuneClient

    try:
        client = EdgetuneClient(args.server, token=args.token or None, tls_ca=args.tls_ca or None,
                                tls_cert=args.tls_cert or None, tls_key=args.tls_key or None,
                                server_name=args.server_name or None)
    except ValueError as e:
        raise EdgetuneError("--tls-cert", str(e)) from None
    except OSError as e:  # a TLS file that cannot be read
        raise EdgetuneError(getattr(e, "filename", None) or "--tls-ca", e.strerror or str(e)) from None
    try:
        return _REMOTE[args.remote](client, args) or 0
    except grpc.RpcError as e:
        raise EdgetuneError(e.code().name, e.details() or "") from None
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main ends quietly
    except OSError as e:
        raise EdgetuneError(getattr(e, "filename", None) or "file", e.strerror or str(e)) from None
    finally:
        client.close()


def _models(client, args) -> None:
    for m in client.list_base_models():
        print(m.arch, m.family, ", ".join(f"{w.name}{'' if w.available else ' (missing)'}" for w in m.weights))


def _upload(client, args) -> None:
    from edgetune.v1 import jobs_pb2

    columns = {c: getattr(args, f"{c}_field") for c in ("text", "label", "prompt", "response")
               if getattr(args, f"{c}_field")}
    d = client.upload_dataset(args.path, args.name, columns=columns)
    task = jobs_pb2.Task.Name(d.report.task).removeprefix("TASK_").lower()
    classes = f", {len(d.report.classes)} classes" if d.report.classes else ""
    print(f"{d.id}: {task}, {d.report.rows} examples ({d.report.split} split){classes}")


def _submit(client, args) -> int:
    from edgetune.v1 import jobs_pb2

    hyper = {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
             "image_size": args.image_size, "max_length": args.max_length}
    for flag, value in hyper.items():
        # The API reads 0 as "unset": a 0 typed on the command line is an error, not a default.
        if value is not None and value <= 0:
            raise EdgetuneError(f"--{flag.replace('_', '-')}".replace("learning-rate", "lr"),
                                f"must be > 0, got {value}")
    job = client.create_job(args.dataset, args.model, args.method, args.weights, args.idempotency_key,
                            task=args.task, gpus=args.gpus, **{k: v for k, v in hyper.items() if v is not None})
    print(job.id)
    if args.watch:
        _watch(client, job.id)
        return 0 if client.get_job(job.id).state == jobs_pb2.JOB_STATE_SUCCEEDED else 1
    return 0


def _cancel(client, args) -> None:
    from edgetune.v1 import jobs_pb2

    before = client.get_job(args.job_id).state
    state = client.cancel_job(args.job_id).state
    name = jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_")
    if before in (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED):
        print(f"job {args.job_id} had already ended {name}: nothing was cancelled")
    elif state == jobs_pb2.JOB_STATE_RUNNING:
        print("cancel requested; the worker stops within seconds (watch the job for CANCELLED)")
    else:
        print(f"job {args.job_id}: {name}")


def _export(client, args) -> int:
    """Queue one export per job (several in one BatchExportModels call), follow them to the end,
    and print each: exit 3 if any failed (or was refused)."""
    from edgetune.v1 import exports_pb2, jobs_pb2

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if len(args.job_id) == 1:
        queued = [(client.exports.ExportModel(exports_pb2.ExportModelRequest(
            job_id=args.job_id[0], allow_degenerate=args.allow_degenerate, precisions=precisions), timeout=30), "")]
    else:
        response = client.export_many([{"job_id": j, "allow_degenerate": args.allow_degenerate,
                                        "precisions": precisions} for j in args.job_id])
        queued = [(r.export if r.code == 0 else None, r.message) for r in response.results]
    failed = 0
    for job_id, (exp, refused) in zip(args.job_id, queued):
        if exp is None:
            print(f"{job_id}: refused: {refused}")
            failed += 1
            continue
        if args.no_wait:
            print(f"{exp.id} {jobs_pb2.JobState.Name(exp.state).removeprefix('JOB_STATE_')} (job {job_id})")
            continue
        done = client.wait_export(exp.id, timeout=24 * 3600, on_event=lambda e: e.WhichOneof("kind") == "log" and
                                  print(f"  {exp.id}: {e.log}", flush=True))
        failed += _print_export(done)
    return 3 if failed else 0


def _print_export(exp) -> int:
    """One finished export; returns 1 when it is not valid."""
    p = exp.parity
    decisions = (f"top-1 agreement {p.top1_agreement:.0%} over {p.top1_compared} held-out decisions"
                 if p.top1_compared else "no held-out decision outside the tolerance")
    print(f"{exp.id} {'valid' if exp.valid else 'INVALID'}: parity margin {p.margin:.3g} of the tolerance "
          f"(max abs diff {p.max_abs_diff:.2e}), {decisions}" + (f"; {exp.error}" if exp.error else ""))
    for v in exp.variants:
        gate = (f", held-out accuracy {v.accuracy:.2%} (fp32 {v.fp32_accuracy:.2%}), agreement {v.top1_agreement:.2%}"
                if v.precision != "fp32" else "")
        print(f"  {v.precision}{' (default)' if v.precision == exp.default_variant else ''}: {v.file}, "
              f"{v.bytes / 1e6:.1f} MB{gate}" + "".join(f"; {f}" for f in v.flags))
    for d in exp.dropped_variants:
        print(f"  {d.precision}: dropped: {d.reason}")
    return 0 if exp.valid else 1


def _generate(client, args) -> None:
    for piece in client.generate(args.export_id, args.prompt, args.max_new_tokens):
        print(piece.text, end="", flush=True)
    print()


def _predict(client, args) -> None:
    if args.text:
        results = client.predict(args.export_id, top_k=args.top_k, texts=args.inputs, variant=args.variant)
    else:
        results = client.predict(args.export_id, [Path(p).read_bytes() for p in args.inputs], args.top_k,
                                 variant=args.variant)
    for source, r in zip(args.inputs, results):
        print(f"{source}: " + ", ".join(f"{t.label} {t.score:.4f}" for t in r.top))


_REMOTE = {"models": _models, "upload": _upload, "submit": _submit, "watch": lambda c, a: _watch(c, a.job_id),
           "jobs": lambda c, a: _print_jobs(c.list_jobs()), "cancel": _cancel, "export": _export,
           "download": lambda c, a: print(c.download(a.export_id, a.out)), "generate": _generate,
           "predict": _predict}


def _print_jobs(jobs) -> None:
    from edgetune.v1 import jobs_pb2

    rows = [("JOB", "STATE", "TASK", "MODEL", "METHOD", "PROGRESS", "NOTE")]
    for j in jobs:
        state = jobs_pb2.JobState.Name(j.state).removeprefix("JOB_STATE_")
        # ``epoch`` counts finished epochs: a running job is in the next one.
        progress = f"epoch {min(j.epoch + 1, j.epochs)}/{j.epochs}" if state == "RUNNING" else \
            f"{j.epoch}/{j.epochs} epochs"
        rows.append((j.id, state, jobs_pb2.Task.Name(j.task).removeprefix("TASK_").lower(), j.base_model,
                     jobs_pb2.Method.Name(j.method).removeprefix("METHOD_").lower(), progress,
                     j.error or "; ".join(f"WARNING: {w}" for w in j.warnings)))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6])
