"""The service's operations as plain Python (no grpc): what every RPC calls.

Datasets, jobs, exports and inference over the embedded store and local disk. Errors are the
domain errors of ``edgetune.errors``; the transport maps them to status codes.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgetune.errors import (AlreadyExists, DataError, FailedPrecondition, InvalidArgument,
                             NotFound, ParityError, ResourceExhausted, WeightsError)
from edgetune.export.bundle import export_bundle
from edgetune.runtime import PREDICTORS, Predictor, TextGenerator, TextPredictor, load_predictor
from edgetune.trainers.data.archives import extract_archive
from edgetune.trainers.models.catalog import list_base_models
from edgetune.trainers.data.images import load_image_data
from edgetune.trainers.data.texts import detect_text_task, load_text_data

from .jobspec import train_config
from .runner import JobRunner
from .store import SUCCEEDED, TERMINAL, EventRow, JobRow, Store, new_id

FORMATS = {"zip": ".zip", "tar.gz": ".tar.gz", "jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}
TEXT_FORMATS = ("jsonl", "csv", "tsv")
MAX_PAGE = 500
MAX_PREDICT_INPUTS = 64
ARTIFACT_CHUNK = 1 << 20


@dataclass
class ServerConfig:
    """Server settings; every one has a flag and an environment variable in ``edgetune serve``."""

    data_dir: Path = Path("edgetune-data")
    slots: int = 1  # concurrent jobs; default: GPU count, 1 on CPU
    max_queued: int = 32  # queued jobs beyond which CreateJob is RESOURCE_EXHAUSTED
    max_upload_bytes: int = 2 * 1024**3
    max_archive_entries: int = 200_000
    max_extracted_bytes: int = 20 * 1024**3
    predictor_cache: int = 4  # warm ONNX Runtime sessions kept
    max_attempts: int = 3  # restarts a running job survives
    stall_timeout_s: float = 1800.0  # a worker with no event for this long is hung: killed, job FAILED


def page_bounds(page_size: int, page_token: str) -> tuple[int, int]:
    if page_size < 0:
        raise InvalidArgument("page_size", "must be >= 0")
    limit = min(page_size or 50, MAX_PAGE)
    try:
        offset = int(page_token) if page_token else 0
        if not 0 <= offset < 2**62:
            raise ValueError
    except ValueError:
        raise InvalidArgument("page_token", "not a token from this server") from None
    return offset, limit


def next_token(offset: int, limit: int, got: int) -> str:
    return str(offset + limit) if got == limit else ""


class Upload:
    """An upload in progress: bytes go to a temp file, hashed and counted as they arrive."""

    def __init__(self, service: "EdgetuneService", name: str, fmt: str, total_size: int, sha256: str):
        cfg = service.config
        if not name or len(name) > 128:
            raise InvalidArgument("header.name", "must be 1-128 characters")
        if fmt not in FORMATS:
            raise InvalidArgument("header.format", f"must be one of {list(FORMATS)}")
        if total_size <= 0:
            raise InvalidArgument("header.total_size", "must be > 0")
        if total_size > cfg.max_upload_bytes:
            raise ResourceExhausted("header.total_size", f"{total_size} bytes exceeds the upload quota "
                                                         f"of {cfg.max_upload_bytes} bytes")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidArgument("header.sha256", "must be 64 lower-case hex digits")
        self.service, self.name, self.fmt, self.total_size, self.sha256 = service, name, fmt, total_size, sha256
        self.id = new_id("ds")
        self.dir = service.data_dir / "datasets" / self.id
        self.dir.mkdir(parents=True)
        self.archive = self.dir / f"upload{FORMATS[fmt]}"
        self._file = open(self.archive, "wb")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.total_size:
            raise InvalidArgument("chunk", f"more bytes than header.total_size ({self.total_size})")
        self._hash.update(chunk)
        self._file.write(chunk)

    def abort(self) -> None:
        self._file.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self) -> dict:
        self._file.close()
        if self.received != self.total_size:
            raise InvalidArgument("header.total_size", f"declared {self.total_size} bytes, received {self.received}")
        if self._hash.hexdigest() != self.sha256:
            raise InvalidArgument("header.sha256", "does not match the uploaded bytes")
        if self.fmt in TEXT_FORMATS:
            root, summary = self.archive, _text_summary(self.archive, self.name)
        else:
            root, summary = self._image_dataset()
        row = {"id": self.id, "name": self.name, "format": self.fmt, "size_bytes": self.received,
               "sha256": self.sha256, "create_time": time.time(), "report": summary, "path": str(root)}
        self.service.store.add_dataset(row)
        return self.service.store.get_dataset(self.id)

    def _image_dataset(self) -> tuple[Path, dict]:
        cfg = self.service.config
        try:
            files = extract_archive(self.archive, self.dir / "files", cfg.max_archive_entries,
                                    cfg.max_extracted_bytes)
        except DataError as e:  # name the upload, not the server's path
            raise DataError("dataset", e.message) from None
        self.archive.unlink()
        root = _single_root(files)
        try:
            _, _, report = load_image_data(str(root), None, 32, 0.2, skip_corrupt=False, seed=0)
        except DataError as e:
            raise DataError(e.subject.replace(str(root) + "/", "") if e.subject != "data.path" else "dataset",
                            e.message.replace(str(root) + "/", ""), e.files) from None
        return root, {"task": "image_classification", "rows": 0,
                      "classes": [{"label": c, "train": report.train_per_class.get(c, 0),
                                   "val": report.val_per_class.get(c, 0)} for c in report.classes],
                      "split": report.split, "corrupt_files": [], "duplicate_groups": len(report.duplicate_groups),
                      "leaked_images": len(report.leakage), "warnings": report.warnings}


def _text_summary(path: Path, name: str) -> dict:
    """Validate uploaded text rows (the standard column names) as a job will read them."""
    try:
        task = detect_text_task(path)
        _, _, report = load_text_data(str(path), None, task, 0.2, False, 0)
    except DataError as e:  # name the upload, not the server's path
        raise DataError("dataset", e.message.replace(str(path), name).replace(path.name, name), e.files) from None
    return {"task": task, "rows": report.train_rows + report.val_rows,
            "classes": [{"label": c, "train": report.train_per_class.get(c, 0), "val": report.val_per_class.get(c, 0)}
                        for c in report.classes],
            "split": report.split, "corrupt_files": [], "duplicate_groups": report.duplicates,
            "leaked_images": report.leakage, "warnings": report.warnings}


def _single_root(files: Path) -> Path:
    entries = [e for e in files.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and any(x.is_dir() for x in entries[0].iterdir()):
        return entries[0]
    return files


class EdgetuneService:
    """Owns the store, the job runner and the warm ONNX Runtime sessions."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "edgetune.sqlite")
        self.runner = JobRunner(self.store, self.data_dir, config.slots, config.max_attempts,
                                config.stall_timeout_s)
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._predictors_lock = threading.Lock()
        self._export_lock = threading.Lock()

    def start(self) -> None:
        """Recover jobs a previous server left RUNNING, clear half-finished uploads, start the runner."""
        self.runner.recover()
        known = self.store.dataset_ids()
        for d in (self.data_dir / "datasets").glob("ds-*"):
            if d.name not in known:
                shutil.rmtree(d, ignore_errors=True)  # an upload the previous server never finished
        self.runner.start()

    def stop(self, grace_s: float = 10.0, rpcs_drained=lambda: None) -> None:
        """Stop workers (their jobs resume on the next start); close the store once RPCs are done."""
        self.runner.shutdown(grace_s)
        rpcs_drained()
        self.store.close()

    # datasets
    def begin_upload(self, name: str, fmt: str, total_size: int, sha256: str) -> Upload:
        return Upload(self, name, fmt, total_size, sha256)

    def get_dataset(self, dataset_id: str) -> dict:
        row = self.store.get_dataset(dataset_id)
        if row is None:
            raise NotFound("dataset_id", f"no dataset {dataset_id!r}")
        return row

    def list_datasets(self, page_size: int, page_token: str) -> tuple[list[dict], str]:
        offset, limit = page_bounds(page_size, page_token)
        rows = self.store.list_datasets(offset, limit)
        return rows, next_token(offset, limit, len(rows))

    def delete_dataset(self, dataset_id: str) -> None:
        self.get_dataset(dataset_id)
        if not self.store.delete_dataset_if_unused(dataset_id):
            raise FailedPrecondition("dataset_id", "a queued or running job uses this dataset")
        shutil.rmtree(self.data_dir / "datasets" / dataset_id, ignore_errors=True)

    # jobs
    def create_job(self, request: dict, idempotency_key: str = "") -> JobRow:
        if len(idempotency_key) > 128:
            raise InvalidArgument("idempotency_key", "must be at most 128 characters")
        dataset = self.get_dataset(request.get("dataset_id", ""))
        kind = dataset["report"].get("task", "image_classification")
        if kind != request.get("task"):
            raise InvalidArgument("dataset_id", f"dataset {dataset['id']} holds {kind} data; the job's task is "
                                                f"{request.get('task')}")
        cfg = train_config(request, dataset["path"])
        try:
            job, created = self.store.add_job(new_id("job"), request, dataset["id"], idempotency_key or None,
                                              cfg.optim.epochs, self.config.max_queued)
        except OverflowError:
            raise ResourceExhausted("queue", f"{self.config.max_queued} jobs are already queued") from None
        except LookupError:
            raise NotFound("dataset_id", f"dataset {dataset['id']!r} was just deleted") from None
        if not created and job.request != request:
            raise AlreadyExists("idempotency_key", f"already used by job {job.id} with a different request")
        self.runner.wake()
        return job

    def get_job(self, job_id: str) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound("job_id", f"no job {job_id!r}")
        return job

    def list_jobs(self, state: str | None, page_size: int, page_token: str) -> tuple[list[JobRow], str]:
        offset, limit = page_bounds(page_size, page_token)
        rows = self.store.list_jobs(state, offset, limit)
        return rows, next_token(offset, limit, len(rows))

    def cancel_job(self, job_id: str) -> JobRow:
        job = self.get_job(job_id)
        if job.state not in TERMINAL:
            self.runner.cancel(job_id)
        return self.get_job(job_id)

    def watch_job(self, job_id: str, after_event_id: int, is_active=lambda: True,
                  poll_s: float = 0.25) -> Iterator[EventRow]:
        """Events after ``after_event_id``, then live ones until the job is finished."""
        self.get_job(job_id)
        last = after_event_id
        while is_active():
            events = self.store.events_after(job_id, last)
            for e in events:
                last = e.id
                yield e
            if not events:
                if self.get_job(job_id).state in TERMINAL and not self.store.events_after(job_id, last, 1):
                    return
                time.sleep(poll_s)

    # models
    def list_base_models(self) -> list[dict]:
        return list_base_models()

    # exports
    def export_model(self, job_id: str, atol: float | None = None, rtol: float | None = None,
                     allow_degenerate: bool = False) -> dict:
        job = self.get_job(job_id)
        if job.state != SUCCEEDED:
            raise FailedPrecondition("job_id", f"job is {job.state}; only SUCCEEDED jobs can be exported")
        export_id = new_id("exp")
        out = self.data_dir / "exports" / export_id / "bundle"
        row = {"id": export_id, "job_id": job_id, "create_time": time.time(), "error": "", "path": str(out)}
        with self._export_lock:  # exports are CPU-heavy; one at a time keeps latency predictable
            try:
                result = export_bundle(self.runner.job_dir(job_id) / "run", out, device="auto", atol=atol, rtol=rtol,
                                       allow_degenerate=allow_degenerate)
                row.update(valid=True, manifest=result.manifest)
            except WeightsError as e:  # e.g. the base weights changed since training
                raise FailedPrecondition("job_id", f"cannot rebuild the job's model: {e.message}") from None
            except FailedPrecondition as e:  # a degenerate model (Job.warnings) without allow_degenerate
                raise FailedPrecondition("job_id", e.message) from None
            except ParityError as e:
                invalid = out.with_name(out.name + ".invalid")
                manifest = _read_json(invalid / "manifest.json")
                report = e.report.summary() if e.report is not None else e.message.split("; failed bundle")[0]
                row.update(valid=False, manifest=manifest, error=report, path=str(invalid))
        self.store.add_export(row)
        return self.store.get_export(export_id)

    def get_export(self, export_id: str) -> dict:
        row = self.store.get_export(export_id)
        if row is None:
            raise NotFound("export_id", f"no export {export_id!r}")
        return row

    def list_exports(self, job_id: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        offset, limit = page_bounds(page_size, page_token)
        rows = self.store.list_exports(job_id or None, offset, limit)
        return rows, next_token(offset, limit, len(rows))

    def artifact_chunks(self, export_id: str) -> Iterator[tuple[bytes, int, str]]:
        """(data, offset, sha256-on-last) pieces of a deterministic tar of the bundle."""
        row = self._valid_export(export_id)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            root = Path(row["path"])
            for p in sorted(f for f in root.rglob("*") if f.is_file()):
                info = tf.gettarinfo(str(p), arcname=f"{export_id}/{p.relative_to(root).as_posix()}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(p, "rb") as f:
                    tf.addfile(info, f)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        for offset in range(0, len(data), ARTIFACT_CHUNK):
            last = offset + ARTIFACT_CHUNK >= len(data)
            yield data[offset:offset + ARTIFACT_CHUNK], offset, digest if last else ""

    # inference
    def predict(self, export_id: str, images: list[bytes], top_k: int, texts: list[str] | None = None
                ) -> list[list[tuple[str, float]]]:
        """Top-k labels per image (image exports) or per text (text classification exports)."""
        texts = texts or []
        field, n = ("texts", len(texts)) if texts else ("images", len(images))
        if images and texts:
            raise InvalidArgument("texts", "send images or texts, not both")
        if n == 0:
            raise InvalidArgument("images", "at least one image or text is required")
        if n > MAX_PREDICT_INPUTS:
            raise InvalidArgument(field, f"at most {MAX_PREDICT_INPUTS} per request")
        if top_k < 0:
            raise InvalidArgument("top_k", "must be >= 0")
        predictor = self._runtime(export_id)
        if isinstance(predictor, TextGenerator):
            raise FailedPrecondition("export_id", f"export {export_id} generates text; use Generate")
        is_text = isinstance(predictor, TextPredictor)
        if is_text != bool(texts):
            kind = "text" if is_text else "image"
            raise InvalidArgument(field, f"export {export_id} is a {kind} classifier; send {kind}s")
        k = min(top_k or 5, len(predictor.labels))
        predictions = predictor.predict_texts(texts, top_k=k) if is_text else predictor.predict_encoded(images, top_k=k)
        return [p.top for p in predictions]

    def _valid_export(self, export_id: str) -> dict:
        row = self.get_export(export_id)
        if not row["valid"]:
            raise FailedPrecondition("export_id", "export failed its parity gate; nothing to serve")
        return row

    def generate(self, export_id: str, prompt: str, max_new_tokens: int) -> Iterator[tuple[int, str]]:
        """(token id, text piece) per new token of a greedy completion."""
        if not 0 <= max_new_tokens <= 4096:
            raise InvalidArgument("max_new_tokens", f"must be in [0, 4096], got {max_new_tokens}")
        if not prompt.strip():
            raise InvalidArgument("prompt", "must be a non-empty string")
        generator = self._runtime(export_id)
        if not isinstance(generator, TextGenerator):
            raise FailedPrecondition("export_id", f"export {export_id} is a classifier; use Predict")
        return generator.stream(prompt, max_new_tokens or None)

    def _runtime(self, export_id: str) -> Predictor:
        with self._predictors_lock:
            if export_id in self._predictors:
                self._predictors.move_to_end(export_id)
                return self._predictors[export_id]
        row = self._valid_export(export_id)
        task = (row["manifest"] or {}).get("task")
        if task not in PREDICTORS:
            raise FailedPrecondition("export_id", f"export {export_id} has an unknown task {task!r}")
        predictor = load_predictor(row["path"])
        with self._predictors_lock:
            self._predictors[export_id] = predictor
            while len(self._predictors) > self.config.predictor_cache:
                self._predictors.popitem(last=False)
        return predictor


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

