"""Image datasets: discovery, decoding, the pre-training validation report and the split (torch-free).

Sources: an ImageFolder directory (``class/xxx.png``; or ``train/`` and ``val/`` folders of
those), a .zip / .tar.gz of one, or a CSV manifest of ``path,label`` rows (paths relative to the
CSV). Every image is decoded once before training: corrupt files are named, exact duplicates
are found by content hash, and a train/val overlap (leakage) is reported.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import DataError
from edgetune.runtime.imaging import IMAGE_SUFFIXES, load_rgb, resize_uint8
from edgetune.tasks import IMAGE_CLASSIFICATION
from edgetune.trainers.data.archives import extract_archive, is_archive
from edgetune.trainers.data.report import DataReport, Item, content_checks, label_set
from edgetune.trainers.data.split import stratified_split


@dataclass
class Sample:
    path: str
    label: str


@contextlib.contextmanager
def dataset_root(path: str):
    """Yield a local path for ``path``: archives are extracted safely into a temp dir."""
    p = Path(path)
    if not p.exists():
        raise DataError(path, "dataset not found")
    if is_archive(p):
        tmp = tempfile.mkdtemp(prefix="edgetune-data-")
        try:
            root = extract_archive(p, tmp)
            entries = [e for e in root.iterdir() if not e.name.startswith((".", "__MACOSX"))]
            # A single top-level folder that holds the class folders is the common archive layout.
            if len(entries) == 1 and entries[0].is_dir() and any(x.is_dir() for x in entries[0].iterdir()):
                root = entries[0]
            yield root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        yield p


def scan(root: Path) -> tuple[list[Sample], int]:
    """List (path, label) samples of an ImageFolder directory or CSV manifest, and ignored files."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(str(root), "expected a directory, a .zip/.tar.gz archive or a .csv manifest")
        return _scan_csv(root), 0
    class_dirs = sorted(d for d in root.iterdir()
                        if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX")
    if not class_dirs:
        raise DataError(str(root), "no class folders found (expected ROOT/<class>/<image>)")
    samples, ignored = [], 0
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        ignored += len(files) - len(images)
        if not images:
            raise DataError(str(d), "class folder holds no images")
        samples += [Sample(str(f), d.name) for f in images]
    return samples, ignored


def _scan_csv(path: Path) -> list[Sample]:
    samples = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise DataError(str(path), f"line {i + 1}: expected 'path,label'")
            p = Path(row[0].strip())
            samples.append(Sample(str(p if p.is_absolute() else path.parent / p), row[1].strip()))
    if not samples:
        raise DataError(str(path), "manifest has no rows")
    return samples


def _has_split_folders(root: Path) -> bool:
    return root.is_dir() and (root / "train").is_dir() and (root / "val").is_dir()


@dataclass
class DecodedSet:
    """Decoded images of one split: uint8 NHWC pixels, integer labels, content hashes."""

    pixels: np.ndarray
    labels: np.ndarray
    paths: list[str]
    hashes: list[str]


def _decode(samples: list[Sample], size: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    arrays, hashes, corrupt = [], [], []
    for s in samples:
        try:
            raw = Path(s.path).read_bytes()
            arrays.append(resize_uint8(load_rgb(s.path), size))
            hashes.append(hashlib.sha256(raw).hexdigest())
        except Exception:  # noqa: BLE001 - any decode failure means an unusable file
            arrays.append(None)
            hashes.append("")
            corrupt.append(s.path)
    return arrays, hashes, corrupt


def load_image_data(path: str, val_path: str | None, image_size: int, val_fraction: float,
                    skip_corrupt: bool, seed: int, classes: list[str] | None = None
                    ) -> tuple[DecodedSet, DecodedSet, DataReport]:
    """Read, validate and split a dataset. Raises DataError with the offending files named.

    Args:
        classes: when given (re-tuning), the label set the data must match exactly.
    """
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(dataset_root(path))
        if val_path:
            train_s, ignored = scan(root)
            val_s, ignored_v = scan(stack.enter_context(dataset_root(val_path)))
            ignored += ignored_v
            split = "given"
        elif _has_split_folders(root):
            train_s, ignored = scan(root / "train")
            val_s, ignored_v = scan(root / "val")
            ignored += ignored_v
            split = "given"
        else:
            train_s, ignored = scan(root)
            val_s, split = [], "stratified"
        all_s = train_s + val_s
        arrays, hashes, corrupt = _decode(all_s, image_size)

    if corrupt and not skip_corrupt:
        shown = ", ".join(corrupt[:10]) + (f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else "")
        raise DataError("data.path", f"{len(corrupt)} unreadable image(s): {shown} "
                        "(fix or remove them, or pass --skip-corrupt)", files=corrupt)
    keep = [i for i, a in enumerate(arrays) if a is not None]
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

    def build(idx: list[int]) -> DecodedSet:
        unknown = sorted({all_s[i].label for i in idx} - set(classes))
        if unknown:
            raise DataError("data.val_path", f"labels {unknown} do not occur in the training data")
        px = np.stack([arrays[i] for i in idx]) if idx else np.zeros((0, image_size, image_size, 3), np.uint8)
        return DecodedSet(px, np.array([label_of[all_s[i].label] for i in idx], np.int64),
                          [all_s[i].path for i in idx], [hashes[i] for i in idx])

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


def _items(data: DecodedSet, classes: list[str]) -> list[Item]:
    return [Item(p, h, classes[y]) for p, h, y in zip(data.paths, data.hashes, data.labels)]
