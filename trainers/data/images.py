"""Image datasets: discovery, decoding, the pre-training validation report and the split (torch-free).

Sources: an ImageFolder directory (``class/xxx.png``; or ``train/`` and ``val/`` folders of
those), a .zip / .tar.gz of one, or a CSV manifest of ``path,label`` rows (paths relative to the
CSV). Before training, one pass over the files (in parallel across cores, cached by
``trainers/data/cache.py``) hashes and decodes each: corrupt files are named, exact duplicates
are found by content hash, and a train/val overlap (leakage) is reported. Pixels are not held in
memory: training reads them per batch from the decoded cache file, or decodes them in loader workers.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune.atomic import atomic_text
from edgetune.errors import DataError
from edgetune.runtime.imaging import IMAGE_SUFFIXES, RESIZE_VERSION, load_rgb, resize_uint8
from edgetune.tasks import IMAGE_CLASSIFICATION
from edgetune.trainers.config import CACHE_MODES
from edgetune.trainers.data.archives import extract_archive, is_archive
from edgetune.trainers.data.cache import cache_dir, extracted_archive, file_sha256, fingerprint, free_bytes
from edgetune.trainers.data.limits import MAX_CLASSES, MAX_LABEL_CHARS, check_class_count, check_label
from edgetune.trainers.data.report import DataReport, Item, content_checks, label_set
from edgetune.trainers.data.split import stratified_split


@dataclass
class Sample:
    path: str
    label: str


def dataset_root(path: str, cache_root: Path | None = None) -> Path:
    """A local folder (or CSV) for ``path``: an archive file is extracted safely, once, into the
    cache; a folder is used as it is, even one named like an archive (``d.zip/<class>/...``)."""
    p = Path(path)
    if not p.exists():
        raise DataError(path, "dataset not found")
    if not is_archive(p):
        return p
    root = extracted_archive(p, extract_archive, cache_root)
    entries = [e for e in root.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    # A single top-level folder that holds the class folders is the common archive layout.
    if len(entries) == 1 and entries[0].is_dir() and any(x.is_dir() for x in entries[0].iterdir()):
        root = entries[0]
    return root


def scan(root: Path, *, max_classes: int = MAX_CLASSES, max_label_chars: int = MAX_LABEL_CHARS
         ) -> tuple[list[Sample], int]:
    """List (path, label) samples of an ImageFolder directory or CSV manifest, and ignored files.
    Labels are bounded in number and length (``trainers/data/limits.py``) before any folder is read."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(str(root), "expected a directory, a .zip/.tar.gz archive or a .csv manifest")
        return _scan_csv(root, max_classes, max_label_chars), 0
    class_dirs = sorted(d for d in root.iterdir()
                        if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX")
    if not class_dirs:
        raise DataError(str(root), "no class folders found (expected ROOT/<class>/<image>)")
    check_class_count(class_dirs, "class folders", max_classes)
    for d in class_dirs:
        check_label(d.name, "class folder", max_label_chars)
    samples, ignored = [], 0
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        ignored += len(files) - len(images)
        if not images:
            raise DataError(str(d), "class folder holds no images")
        samples += [Sample(str(f), d.name) for f in images]
    return samples, ignored


def _scan_csv(path: Path, max_classes: int = MAX_CLASSES, max_label_chars: int = MAX_LABEL_CHARS) -> list[Sample]:
    samples = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise DataError(str(path), f"line {i + 1}: expected 'path,label'")
            check_label(row[1].strip(), f"{path.name} line {i + 1}: label", max_label_chars)
            p = Path(row[0].strip())
            samples.append(Sample(str(p if p.is_absolute() else path.parent / p), row[1].strip()))
    if not samples:
        raise DataError(str(path), "manifest has no rows")
    check_class_count({s.label for s in samples}, "distinct labels", max_classes)
    return samples


def _has_split_folders(root: Path) -> bool:
    return root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir()


AUTO_CACHE_MAX_BYTES = 64 * 1024**3  # "auto" caches decoded pixels up to this size (and half the free disk)
PARALLEL_MIN_FILES = 256  # below this the pass runs in this process (a pool costs a second to start)
LOG_EVERY_S = 10.0


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class ImageSet:
    """One split: files, integer labels and content hashes, and where its decoded pixels are read.

    ``read(indices)`` gives NHWC uint8 at ``size``: from the decoded cache file when there is one
    (``pread`` of fixed-size rows), else by decoding the files. Picklable for DataLoader workers.
    """

    paths: list[str]
    labels: np.ndarray
    hashes: list[str]
    size: int
    rows: np.ndarray  # each image's row in the decoded cache file
    pixels_file: str | None = None
    _fd: int | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}  # each process opens its own descriptor

    def read(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """NHWC uint8 pixels of ``indices`` (into ``out`` when given)."""
        if out is None:
            out = np.empty((len(indices), self.size, self.size, 3), np.uint8)
        if self.pixels_file is not None:
            if self._fd is None:
                self._fd = os.open(self.pixels_file, os.O_RDONLY)
            row = self.size * self.size * 3
            for k, i in enumerate(indices):
                buf = os.pread(self._fd, row, int(self.rows[i]) * row)
                if len(buf) != row:
                    raise DataError(self.paths[i], "decoded cache file is truncated; delete it and rerun")
                out[k] = np.frombuffer(buf, np.uint8).reshape(self.size, self.size, 3)
            return out
        for k, i in enumerate(indices):
            try:
                out[k] = resize_uint8(load_rgb(self.paths[i]), self.size)
            except Exception as e:  # noqa: BLE001 - it decoded during the check: the file changed since
                raise DataError(self.paths[i], f"image no longer decodes ({e}); it changed during training") from e
        return out


@dataclass
class FileCheck:
    """What one pass over the files found: each file's hash ("" when it does not decode)."""

    hashes: list[str]
    corrupt: list[str]
    pixels_file: str | None


def _check_files(paths: list[str], size: int, pixels: str | None, first_row: int, known: list[str] | None
                 ) -> list[str]:
    """Hash (streamed) and decode each file; write the decoded rows into ``pixels`` when given.
    Returns each file's hash, or "" if it does not decode (or is over the pixel budget, ``load_rgb``).
    ``known``: hashes from the index."""
    fd = os.open(pixels, os.O_WRONLY) if pixels else None
    row = size * size * 3
    out = []
    try:
        for k, p in enumerate(paths):
            if known is not None and not known[k]:
                out.append("")  # the index already found it unreadable
                continue
            try:
                digest = known[k] if known is not None else file_sha256(p)
                pixels_k = resize_uint8(load_rgb(p), size)
                if fd is not None:
                    os.pwrite(fd, pixels_k.tobytes(), (first_row + k) * row)
                out.append(digest)
            except Exception:  # noqa: BLE001 - any decode failure means an unusable file
                out.append("")
    finally:
        if fd is not None:
            os.close(fd)
    return out


def check_images(paths: list[str], size: int, cache: str = "auto", workers: int | None = None,
                 log=None, cache_root: Path | None = None) -> FileCheck:
    """Hash and decode every file once, in parallel across cores, caching what it found.

    A later call on unchanged files reads the index instead (and the decoded pixels, when cached
    at this size), so a resume or a second job on the same dataset does not repeat the pass.

    Args:
        cache: "auto" keeps decoded pixels on disk when they fit (``AUTO_CACHE_MAX_BYTES``, half
            the free disk), "disk" always, "off" never (training then decodes in loader workers).
        log: called with a progress line every ``LOG_EVERY_S`` seconds of a long pass.
        cache_root: the cache folder (default ``cache_dir()``).
    """
    if cache not in CACHE_MODES:
        raise DataError("data.cache", f"must be one of {CACHE_MODES}, got {cache!r}")
    folder = cache_dir(cache_root) / "images" / fingerprint(paths)
    folder.mkdir(parents=True, exist_ok=True)
    index_file = folder / "index.json"
    known = None
    if index_file.is_file():
        try:
            known = json.loads(index_file.read_text())["hashes"]
            known = known if len(known) == len(paths) else None
        except (OSError, ValueError, KeyError):
            known = None
    nbytes = len(paths) * size * size * 3
    want_pixels = cache == "disk" or (cache == "auto" and nbytes <= min(AUTO_CACHE_MAX_BYTES,
                                                                        free_bytes(folder) // 2))
    pixels = folder / f"pixels-{size}.{RESIZE_VERSION}.u8"
    if known is not None and (not want_pixels or pixels.is_file()):
        return _file_check(paths, known, str(pixels) if want_pixels else None)

    tmp = None
    if want_pixels:
        tmp = folder / f".pixels-{size}.{RESIZE_VERSION}.u8.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.truncate(nbytes)
    try:
        hashes = _run_pass(paths, size, str(tmp) if tmp else None, known, workers, log)
        if tmp is not None:
            os.replace(tmp, pixels)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    if known is None:
        atomic_text(index_file, json.dumps({"hashes": hashes}))
    return _file_check(paths, hashes, str(pixels) if want_pixels else None)


def _file_check(paths: list[str], hashes: list[str], pixels: str | None) -> FileCheck:
    return FileCheck(hashes, [p for p, h in zip(paths, hashes) if not h], pixels)


def _pool_context():
    """fork where it is safe (one Python thread: a training process, the CLI), as it needs no
    re-import of ``__main__``; spawn in a threaded process (the gRPC server validating an upload)."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _run_pass(paths, size, pixels, known, workers, log) -> list[str]:
    n = len(paths)
    workers = cpu_cores() if workers is None else workers
    if n < PARALLEL_MIN_FILES or workers <= 1:
        return _check_files(paths, size, pixels, 0, known)
    chunk = max(16, min(256, n // (workers * 8)))
    starts = list(range(0, n, chunk))
    results: dict[int, list[str]] = {}
    t0 = last = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        futures = {pool.submit(_check_files, paths[s:s + chunk], size, pixels, s,
                               known[s:s + chunk] if known is not None else None): s for s in starts}
        done = 0
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            done += len(results[futures[fut]])
            now = time.monotonic()
            if log is not None and now - last >= LOG_EVERY_S:
                last = now
                rate = done / (now - t0)
                log(f"data: checked {done:,} of {n:,} images ({rate:,.0f}/s, {workers} processes)")
    return [h for s in starts for h in results[s]]


def load_image_data(path: str, val_path: str | None, image_size: int, val_fraction: float,
                    skip_corrupt: bool, seed: int, classes: list[str] | None = None, cache: str = "auto",
                    workers: int | None = None, log=None, cache_root: Path | None = None, *,
                    max_classes: int = MAX_CLASSES, max_label_chars: int = MAX_LABEL_CHARS
                    ) -> tuple[ImageSet, ImageSet, DataReport]:
    """Read, validate and split a dataset. Raises DataError with the offending files named.

    Nothing is held in memory but paths, labels and hashes: pixels are read per batch (``ImageSet.read``).
    An image over ``imaging.MAX_PIXELS`` (or ``MAX_IMAGE_BYTES``) is unreadable, as a corrupt one is.

    Args:
        classes: when given (re-tuning), the label set the data must match exactly.
        cache, workers, log, cache_root: see ``check_images``.
        max_classes, max_label_chars: bounds on the labels (``trainers/data/limits.py``).
    """
    root = dataset_root(path, cache_root)
    bounds = {"max_classes": max_classes, "max_label_chars": max_label_chars}
    if val_path:
        train_s, ignored = scan(root, **bounds)
        val_s, ignored_v = scan(dataset_root(val_path, cache_root), **bounds)
        ignored += ignored_v
        split = "given"
    elif _has_split_folders(root):
        train_s, ignored = scan(root / "train", **bounds)
        val_s, ignored_v = scan(root / "val", **bounds)
        ignored += ignored_v
        split = "given"
    else:
        train_s, ignored = scan(root, **bounds)
        val_s, split = [], "stratified"
    all_s = train_s + val_s
    check = check_images([s.path for s in all_s], image_size, cache, workers, log, cache_root)
    hashes, corrupt = check.hashes, check.corrupt

    if corrupt and not skip_corrupt:
        shown = ", ".join(corrupt[:10]) + (f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else "")
        raise DataError("data.path", f"{len(corrupt)} unreadable image(s): {shown} "
                        "(fix or remove them, or pass --skip-corrupt)", files=corrupt)
    keep = [i for i, h in enumerate(hashes) if h]
    train_idx = [i for i in keep if i < len(train_s)]
    val_idx = [i for i in keep if i >= len(train_s)]
    classes = label_set([all_s[i].label for i in keep], classes)
    if split == "stratified":
        sub_t, sub_v = stratified_split([all_s[i].label for i in train_idx], [hashes[i] for i in train_idx],
                                        val_fraction, seed)
        train_idx, val_idx = [train_idx[j] for j in sub_t], [train_idx[j] for j in sub_v]
    for c in classes:
        if not any(all_s[i].label == c for i in train_idx):
            raise DataError("data.path", f"class {c!r} has no usable training images")

    label_of = {c: k for k, c in enumerate(classes)}

    def build(idx: list[int]) -> ImageSet:
        unknown = sorted({all_s[i].label for i in idx} - set(classes))
        if unknown:
            raise DataError("data.val_path", f"labels {unknown} do not occur in the training data")
        return ImageSet([all_s[i].path for i in idx], np.array([label_of[all_s[i].label] for i in idx], np.int64),
                        [hashes[i] for i in idx], image_size, np.array(idx, np.int64), check.pixels_file)

    train, val = build(train_idx), build(val_idx)
    report = DataReport(IMAGE_CLASSIFICATION, "images", len(train_idx), len(val_idx), split, classes,
                        dict(sorted(Counter(all_s[i].label for i in train_idx).items())),
                        dict(sorted(Counter(all_s[i].label for i in val_idx).items())),
                        invalid=corrupt, skipped_invalid=skip_corrupt, ignored_files=ignored)
    content_checks(_items(train, classes), _items(val, classes), report)
    if len(val.labels) == 0:
        raise DataError("data.path", "validation split is empty; add images or pass --val-data")
    report.warn_missing_val_classes()
    return train, val, report


def _items(data: ImageSet, classes: list[str]) -> list[Item]:
    return [Item(p, h, classes[y]) for p, h, y in zip(data.paths, data.hashes, data.labels)]
