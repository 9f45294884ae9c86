"""Protobuf messages <-> the service's plain values. Only transport modules import this."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from edgetune.errors import InvalidArgument
from edgetune import tasks
from edgetune.v1 import datasets_pb2, exports_pb2, jobs_pb2, models_pb2

# Enum values follow the names in edgetune.tasks: "text_classification" <-> TASK_TEXT_CLASSIFICATION.
TASKS = {jobs_pb2.Task.Value(f"TASK_{name.upper()}"): name for name in tasks.TASKS}
METHODS = {jobs_pb2.Method.Value(f"METHOD_{name.upper()}"): name for name in tasks.METHODS}
STATES = {jobs_pb2.JOB_STATE_QUEUED: "QUEUED", jobs_pb2.JOB_STATE_RUNNING: "RUNNING",
          jobs_pb2.JOB_STATE_SUCCEEDED: "SUCCEEDED", jobs_pb2.JOB_STATE_FAILED: "FAILED",
          jobs_pb2.JOB_STATE_CANCELLED: "CANCELLED"}
FORMATS = {datasets_pb2.DATASET_FORMAT_ZIP: "zip", datasets_pb2.DATASET_FORMAT_TAR_GZ: "tar.gz",
           datasets_pb2.DATASET_FORMAT_JSONL: "jsonl", datasets_pb2.DATASET_FORMAT_CSV: "csv",
           datasets_pb2.DATASET_FORMAT_TSV: "tsv"}
_INV = {name: {v: k for k, v in table.items()} for name, table in
        (("task", TASKS), ("method", METHODS), ("state", STATES), ("format", FORMATS))}


def ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def job_request(req: jobs_pb2.CreateJobRequest) -> dict:
    """A CreateJobRequest as the plain dict the service validates and stores."""
    if req.task not in TASKS:
        raise InvalidArgument("task", f"must be one of {', '.join(jobs_pb2.Task.Name(t) for t in TASKS)}")
    if req.method not in METHODS:
        raise InvalidArgument("method", f"must be one of {', '.join(jobs_pb2.Method.Name(m) for m in METHODS)}")
    hp = req.hyperparameters
    hyper = {}
    for name in ("epochs", "learning_rate", "batch_size", "image_size", "optimizer", "early_stopping_patience",
                 "seed", "max_length"):
        value = getattr(hp, name)
        if value:  # proto3 zero = unset = the method's default
            hyper[name] = value
    for name in ("weight_decay", "label_smoothing", "augment"):
        if hp.HasField(name):
            hyper[name] = getattr(hp, name)
    return {"task": TASKS[req.task], "base_model": req.base_model, "weights": req.weights or "catalog",
            "method": METHODS[req.method], "hyperparameters": hyper, "dataset_id": req.dataset_id, "gpus": req.gpus}


def job(row) -> jobs_pb2.Job:
    r = row.request
    msg = jobs_pb2.Job(id=row.id, state=_INV["state"][row.state], task=_INV["task"][r["task"]],
                       base_model=r["base_model"] or tasks.TASKS[r["task"]].default_arch, weights=r["weights"], method=_INV["method"][r["method"]],
                       hyperparameters=jobs_pb2.Hyperparameters(**r["hyperparameters"]),
                       dataset_id=row.dataset_id, idempotency_key=row.idempotency_key or "",
                       error=row.error, epoch=row.epoch, epochs=row.epochs, attempts=row.attempts,
                       create_time=ts(row.create_time), start_time=ts(row.start_time), end_time=ts(row.end_time),
                       warnings=row.warnings, gpus=r.get("gpus", 0), owner=row.owner,
                       cancel_requested=row.cancel_requested)
    if r.get("resolved"):
        msg.resolved_hyperparameters.CopyFrom(jobs_pb2.Hyperparameters(**r["resolved"]))
    if row.best:
        msg.best.CopyFrom(epoch_metrics(row.best))
    return msg


def epoch_metrics(m: dict) -> jobs_pb2.EpochMetrics:
    return jobs_pb2.EpochMetrics(epoch=m["epoch"], train_loss=m["train_loss"], val_loss=m["val_loss"],
                                 val_accuracy=m["val_accuracy"], val_macro_f1=m.get("val_macro_f1", 0.0),
                                 seconds=m.get("seconds", 0.0), val_perplexity=m.get("val_perplexity", 0.0))


def event(e) -> jobs_pb2.JobEvent:
    msg = jobs_pb2.JobEvent(id=e.id, job_id=e.job_id, time=ts(e.time))
    p = e.payload
    if e.kind == "state":
        msg.state = _INV["state"][p["state"]]
    elif e.kind == "epoch":
        msg.epoch.CopyFrom(epoch_metrics(p))
    elif e.kind == "step":
        msg.step.CopyFrom(jobs_pb2.StepProgress(epoch=p["epoch"], epochs=p["epochs"], step=p["step"],
                                                steps=p["steps"], loss=p["loss"], learning_rate=p["lr"],
                                                eta_seconds=p["eta_s"]))
    else:
        msg.log = p["message"]
    return msg


def state_filter(state: int) -> str | None:
    if state == jobs_pb2.JOB_STATE_UNSPECIFIED:
        return None
    if state not in STATES:
        raise InvalidArgument("state", f"unknown state {state}")
    return STATES[state]


def dataset(row: dict) -> datasets_pb2.Dataset:
    rep = row["report"]
    report = datasets_pb2.ValidationReport(
        classes=[datasets_pb2.ClassCount(**c) for c in rep["classes"]], split=rep["split"],
        corrupt_files=rep["corrupt_files"], duplicate_groups=rep["duplicate_groups"],
        leaked_images=rep["leaked_images"], warnings=rep["warnings"],
        task=_INV["task"][rep.get("task", tasks.IMAGE_CLASSIFICATION)], rows=rep.get("rows", 0))
    return datasets_pb2.Dataset(id=row["id"], name=row["name"], format=_INV["format"][row["format"]],
                                size_bytes=row["size_bytes"], sha256=row["sha256"], owner=row.get("owner", ""),
                                create_time=ts(row["create_time"]), report=report)


def export_request(r: exports_pb2.ExportModelRequest) -> dict:
    """ExportModelRequest as ``Exports.create``'s arguments (0 tolerances: the task's default)."""
    return {"job_id": r.job_id, "atol": r.atol or None, "rtol": r.rtol or None, "allow_degenerate": r.allow_degenerate,
            "precisions": list(r.precisions)}


def export(row: dict, labels: bool = True) -> exports_pb2.Export:
    m = row["manifest"] or {}
    parity = m.get("parity") or {}
    msg = exports_pb2.Export(id=row["id"], job_id=row["job_id"], create_time=ts(row["create_time"]),
                             valid=row["valid"], labels=m.get("labels", []) if labels else [],
                             state=_INV["state"][row["state"]], owner=row.get("owner", ""),
                             precisions=(row.get("options") or {}).get("precisions", []),
                             image_size=(m.get("preprocessing") or {}).get("size", 0), opset=m.get("opset", 0),
                             error=row["error"], task=_INV["task"].get(m.get("task"), 0),
                             max_length=(m.get("tokenization") or {}).get("max_length", 0))
    if parity.get("cases"):
        msg.parity.CopyFrom(parity_report(parity))
    if row.get("end_time"):
        msg.end_time.CopyFrom(ts(row["end_time"]))
    model = (m.get("files") or {}).get("model.onnx")
    if model:
        msg.model_sha256, msg.model_bytes = model["sha256"], model["bytes"]
    msg.variants.extend(export_variant(p, v) for p, v in (m.get("variants") or {}).items())
    msg.default_variant = m.get("default_variant") or ("fp32" if m else "")
    msg.dropped_variants.extend(exports_pb2.DroppedVariant(precision=p, reason=d.get("reason", ""))
                                for p, d in (m.get("dropped_variants") or {}).items())
    cpu = (m.get("latency") or {}).get("cpu")
    if cpu:
        msg.latency_cpu = f"{cpu['name']} ({', '.join(cpu['isa']) or 'no vector extensions found'})"
    return msg


def export_variant(precision: str, v: dict) -> exports_pb2.ExportVariant:
    gate, ms, speed = v.get("gate") or {}, v.get("latency_ms") or {}, v.get("speedup_vs_fp32") or {}
    return exports_pb2.ExportVariant(
        precision=precision, file=v.get("file", ""), bytes=v.get("bytes", 0), method=v.get("method", ""),
        accuracy=(gate.get("variant") or {}).get("accuracy", 0.0), fp32_accuracy=(gate.get("fp32") or {}).get(
            "accuracy", 0.0), top1_agreement=gate.get("top1_agreement", 0.0),
        latency_ms_batch1=ms.get("1", 0.0), latency_ms_batch32=ms.get("32", 0.0),
        speedup_batch1=speed.get("1") or 0.0, speedup_batch32=speed.get("32") or 0.0, flags=v.get("flags", []))


_CASE_FIELDS = tuple(exports_pb2.ParityCase.DESCRIPTOR.fields_by_name)
_REPORT_FIELDS = ("passed", "atol", "rtol", "margin", "max_abs_diff", "max_rel_diff", "top1_compared", "precision",
                  "providers", "problems")


def parity_report(parity: dict) -> exports_pb2.ParityReport:
    """A manifest's parity dict as the message; an unmeasured top-1 agreement or a non-finite
    error (null in the manifest) is 0. Manifests from before per-case verdicts take the report's."""
    cases = [exports_pb2.ParityCase(**{"passed": parity["passed"],
                                       **{k: v for k, v in c.items() if k in _CASE_FIELDS and v is not None}})
             for c in parity["cases"]]
    return exports_pb2.ParityReport(**{k: parity[k] for k in _REPORT_FIELDS if parity.get(k) is not None},
                                    top1_agreement=parity.get("top1_agreement") or 0.0, cases=cases)


def base_model(row: dict) -> models_pb2.BaseModel:
    return models_pb2.BaseModel(arch=row["arch"], family=row["family"], task=_INV["task"][row["task"]],
                                methods=[_INV["method"][m] for m in tasks.TASKS[row["task"]].methods],
                                weights=[models_pb2.BaseWeights(**w) for w in row["weights"]])
