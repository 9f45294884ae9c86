"""Datasets: streamed uploads (hashed, counted, quota-checked), validated as a job will read them.

Image archives are extracted safely and validated like training does; text rows are read with the
standard column names. A dataset that would fail a job is refused at upload, naming the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

from edgetune.errors import DataError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, shown
from edgetune.trainers.data.archives import extract_archive
from edgetune.trainers.data.images import load_image_data
from edgetune.trainers.data.report import DataReport
from edgetune.trainers.data.texts import TextFields, detect_text_task, load_text_data

from edgetune.server.auth import Principal
from edgetune.server.service.config import ServerConfig
from edgetune.server.service.paging import Page, page_of, page_request
from edgetune.server.store import Store, new_id

FORMATS = {"zip": ".zip", "tar.gz": ".tar.gz", "jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}
TEXT_FORMATS = ("jsonl", "csv", "tsv")
COLUMNS = ("text", "label", "prompt", "response")  # TextFields


class Datasets:
    """Uploaded datasets under ``DATA_DIR/datasets/<id>``, one row each in the store."""

    def __init__(self, config: ServerConfig, store: Store, data_dir: Path):
        self.config, self.store, self.root = config, store, data_dir / "datasets"
        self._reserved: Counter[str] = Counter()  # bytes of uploads in progress, per principal
        self._quota = threading.Lock()

    def quota_left(self, principal: Principal, reserve: int = 0) -> int:
        """Bytes ``principal`` may still store (uploads in progress count; admins have no quota).
        ``reserve`` > 0 holds that many for an upload (ResourceExhausted when it does not fit)."""
        if principal.admin:
            return self.config.max_extracted_bytes
        with self._quota:
            used = self.store.stored_bytes(principal.name) + self._reserved[principal.name]
            left = self.config.storage_quota_bytes - used
            if reserve > left:
                raise ResourceExhausted("header.total_size", f"{reserve} bytes would exceed your storage quota "
                                                             f"({used} of {self.config.storage_quota_bytes} bytes "
                                                             "used or being uploaded)")
            self._reserved[principal.name] += reserve
            return left

    def release(self, principal: Principal, n: int) -> None:
        if not principal.admin and n:
            with self._quota:
                self._reserved[principal.name] -= n

    def commit(self, principal: Principal, held: int, row: dict) -> None:
        """Store a dataset's row if its bytes still fit the quota, and give back what was held."""
        with self._quota:
            if not principal.admin:
                self._reserved[principal.name] -= held
                used = self.store.stored_bytes(principal.name) + self._reserved[principal.name]
                if used + row["stored_bytes"] > self.config.storage_quota_bytes:
                    raise ResourceExhausted("dataset", f"its {row['stored_bytes']} bytes on disk would exceed your "
                                                       f"storage quota ({used} of "
                                                       f"{self.config.storage_quota_bytes} bytes used)")
            self.store.add_dataset(row)

    def clear_unfinished(self) -> None:
        """Remove uploads a previous server never finished (no row in the store)."""
        known = self.store.dataset_ids()
        for d in self.root.glob("ds-*"):
            if d.name not in known:
                shutil.rmtree(d, ignore_errors=True)

    def begin_upload(self, principal: Principal, name: str, fmt: str, total_size: int, sha256: str,
                     columns: dict[str, str] | None = None) -> Upload:
        return Upload(self, principal, name, fmt, total_size, sha256, columns or {})

    def get(self, dataset_id: str, principal: Principal) -> dict:
        row = self.store.get_dataset(dataset_id)
        if row is None:
            raise NotFound("dataset_id", f"no dataset {shown(dataset_id)}")
        principal.check_owner("dataset_id", row["owner"], "dataset")
        return row

    def list(self, principal: Principal, page_size: int, page_token: str) -> Page[dict]:
        after, limit = page_request(page_size, page_token, "datasets")
        rows = self.store.list_datasets(principal.owner_filter(), after, limit + 1)
        return page_of(rows, limit, "datasets", lambda r: (r["create_time"], r["id"]))

    def delete(self, dataset_id: str, principal: Principal) -> None:
        self.get(dataset_id, principal)
        if not self.store.delete_dataset_if_unused(dataset_id):
            raise FailedPrecondition("dataset_id", "a queued or running job uses this dataset")
        shutil.rmtree(self.root / dataset_id, ignore_errors=True)


class Upload:
    """An upload in progress: bytes go to a temp file, hashed and counted as they arrive."""

    def __init__(self, datasets: Datasets, principal: Principal, name: str, fmt: str, total_size: int, sha256: str,
                 columns: dict[str, str]):
        cfg = datasets.config
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidArgument("header.name", "must be 1-128 printable characters")
        if fmt not in FORMATS:
            raise InvalidArgument("header.format", f"must be one of {list(FORMATS)}")
        if total_size <= 0:
            raise InvalidArgument("header.total_size", "must be > 0")
        if total_size > cfg.max_upload_bytes:
            raise ResourceExhausted("header.total_size", f"{total_size} bytes exceeds the upload quota "
                                                         f"of {cfg.max_upload_bytes} bytes")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidArgument("header.sha256", "must be 64 lower-case hex digits")
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown or (columns and fmt not in TEXT_FORMATS) or not all(columns.values()) or \
                any(len(v) > 128 for v in columns.values()):
            raise InvalidArgument("header.columns", f"text uploads may map {', '.join(COLUMNS)} to column names of "
                                                    f"1-128 characters; got {shown(str(columns), 200)}")
        self.fields = TextFields(**columns)
        self.datasets, self.name, self.fmt, self.total_size, self.sha256 = datasets, name, fmt, total_size, sha256
        self.received = 0
        self.principal = principal
        self.quota_left = datasets.quota_left(principal, reserve=total_size)  # given back by abort/finish
        self.held = total_size
        try:
            self._open()
        except BaseException:
            datasets.release(principal, self.held)
            shutil.rmtree(getattr(self, "dir", datasets.root / "none"), ignore_errors=True)
            raise

    def _open(self) -> None:
        self.id = new_id("ds")
        self.dir = self.datasets.root / self.id
        self.dir.mkdir(parents=True)
        self.archive = self.dir / f"upload{FORMATS[self.fmt]}"
        self._file = open(self.archive, "wb")
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.total_size:
            raise InvalidArgument("chunk", f"more bytes than header.total_size ({self.total_size})")
        self._hash.update(chunk)
        self._file.write(chunk)

    def abort(self) -> None:
        self.datasets.release(self.principal, self.held)
        self.held = 0
        self._file.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self) -> dict:
        self._file.close()
        if self.received != self.total_size:
            raise InvalidArgument("header.total_size", f"declared {self.total_size} bytes, received {self.received}")
        if self._hash.hexdigest() != self.sha256:
            raise InvalidArgument("header.sha256", "does not match the uploaded bytes")
        if self.fmt in TEXT_FORMATS:
            root, stored, summary = self.archive, self.received, {
                **_text_summary(self.archive, self.name, self.fields), "columns": dataclasses.asdict(self.fields)}
        else:
            root, stored, summary = self._image_dataset()
        row = {"id": self.id, "name": self.name, "format": self.fmt, "size_bytes": self.received,
               "sha256": self.sha256, "create_time": time.time(), "report": summary, "path": str(root),
               "owner": self.principal.name, "stored_bytes": stored}
        held, self.held = self.held, 0  # commit gives it back, stored or not
        self.datasets.commit(self.principal, held, row)
        return self.datasets.store.get_dataset(self.id)

    def _image_dataset(self) -> tuple[Path, int, dict]:
        cfg = self.datasets.config
        bound = min(cfg.max_extracted_bytes, self.quota_left)
        # Hold what extraction may write, so uploads side by side cannot each use the same room.
        self.datasets.quota_left(self.principal, reserve=max(bound - self.held, 0))
        self.held = max(bound, self.held)
        try:
            files = extract_archive(self.archive, self.dir / "files", cfg.max_archive_entries, bound,
                                    max_ratio=cfg.max_archive_ratio)
        except DataError as e:  # name the upload, not the server's path
            if bound < cfg.max_extracted_bytes and e.message.startswith("uncompressed size exceeds"):
                raise ResourceExhausted("dataset", f"its files would exceed your storage quota ({bound} bytes "
                                                   "left)") from None
            raise DataError("dataset", e.message.replace(str(self.archive), self.name)) from None
        self.archive.unlink()
        stored = sum(f.stat().st_size for f in files.rglob("*") if f.is_file())
        root = _single_root(files)
        try:
            _, _, report = load_image_data(str(root), None, 32, 0.2, skip_corrupt=False, seed=0, cache="off",
                                        cache_root=cfg.cache_root())
        except DataError as e:  # paths inside the upload, relative to its top folder
            def inside(text: str) -> str:
                for prefix in (str(root) + "/", str(root), str(files) + "/", str(files)):
                    text = text.replace(prefix, "")
                return text
            raise DataError("dataset" if e.subject in ("data.path", str(root), str(files)) else inside(e.subject),
                            inside(e.message), [inside(f) for f in e.files]) from None
        return root, stored, _summary(report)


def _text_summary(path: Path, name: str, fields: TextFields) -> dict:
    """Validate uploaded text rows (with the upload's column names) as a job will read them."""
    try:
        task = detect_text_task(path, fields)
        _, _, report = load_text_data(str(path), None, task, 0.2, False, 0, fields)
    except DataError as e:  # name the upload, not the server's path
        raise DataError("dataset", e.message.replace(str(path), name).replace(path.name, name), e.files) from None
    return _summary(report)


def _summary(report: DataReport) -> dict:
    """What a dataset's row stores (and ``ValidationReport`` carries): counts, split, problems."""
    return {"task": report.task, "rows": report.train_count + report.val_count,
            "classes": [{"label": c, "train": report.train_per_class.get(c, 0), "val": report.val_per_class.get(c, 0)}
                        for c in report.classes],
            "split": report.split, "corrupt_files": [], "duplicate_groups": len(report.duplicate_groups),
            "leaked_images": len(report.leakage), "warnings": report.warnings}


def _single_root(files: Path) -> Path:
    entries = [e for e in files.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and any(x.is_dir() for x in entries[0].iterdir()):
        return entries[0]
    return files


