"""Image datasets: discovery, the pre-training validation report, stratified split, tensors.

Sources: an ImageFolder directory (``class/xxx.png``; or ``train/`` and ``val/`` folders of
those), a .zip / .tar.gz of one, or a CSV manifest of ``path,label`` rows (paths relative to the
CSV). Every image is decoded once before training: corrupt files are named, exact duplicates
are found by content hash, and a train/val overlap (leakage) is reported.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from edgetune.errors import DataError
from edgetune.runtime.imaging import IMAGE_SUFFIXES, load_rgb, resize_uint8

from edgetune.trainers.data.archives import extract_archive, is_archive


@dataclass
class Sample:
    path: str
    label: str


@dataclass
class DataReport:
    """What was found in the data before training; saved in the run's report."""

    classes: list[str]
    train_per_class: dict[str, int]
    val_per_class: dict[str, int]
    split: str  # "given" (explicit val set or train/val folders) or "stratified"
    corrupt: list[str] = field(default_factory=list)
    skipped_corrupt: bool = False
    ignored_files: int = 0  # files without an image suffix
    duplicate_groups: list[list[str]] = field(default_factory=list)  # exact duplicates within a split
    conflicting_labels: list[list[str]] = field(default_factory=list)  # same content, different labels
    leakage: list[list[str]] = field(default_factory=list)  # same content in train and val
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"classes: {len(self.classes)}; train {sum(self.train_per_class.values())} / "
                 f"val {sum(self.val_per_class.values())} images ({self.split} split)"]
        for c in self.classes:
            lines.append(f"  {c}: train {self.train_per_class.get(c, 0)}, val {self.val_per_class.get(c, 0)}")
        lines.append(f"corrupt: {len(self.corrupt)}{' (skipped)' if self.corrupt and self.skipped_corrupt else ''}; "
                     f"duplicate groups: {len(self.duplicate_groups)}; label conflicts: "
                     f"{len(self.conflicting_labels)}; train/val leakage: {len(self.leakage)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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


def stratified_split(samples: list[Sample], hashes: list[str], fraction: float, seed: int):
    """Split by label, keeping identical files together (whatever their labels) so duplicates
    cannot leak into val. A group of identical files is stratified under its most common label."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for unit in by_hash.values():
        label = Counter(samples[i].label for i in unit).most_common(1)[0][0]
        groups[label].append(unit)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(groups):
        units = groups[label]
        rng.shuffle(units)
        n_val = int(round(len(units) * fraction)) if len(units) > 1 else 0
        n_val = min(max(n_val, 1 if len(units) > 1 else 0), len(units) - 1)
        for j, unit in enumerate(units):
            (val if j < n_val else train).extend(unit)
    return sorted(train), sorted(val)


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
    found = sorted({all_s[i].label for i in keep})
    if classes is None:
        classes = found
    elif set(found) != set(classes):
        raise DataError("data.path", f"labels {found} differ from the run being re-tuned {classes}")
    if len(classes) < 2:
        raise DataError("data.path", f"need at least 2 classes, found {len(classes)}: {classes}")
    if split == "stratified":
        sub_t, sub_v = stratified_split([all_s[i] for i in train_idx], [hashes[i] for i in train_idx],
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
    report = DataReport(classes=classes, split=split, corrupt=corrupt, skipped_corrupt=skip_corrupt,
                        ignored_files=ignored,
                        train_per_class=dict(sorted(Counter(all_s[i].label for i in train_idx).items())),
                        val_per_class=dict(sorted(Counter(all_s[i].label for i in val_idx).items())))
    _content_checks(train, val, classes, report)
    if len(val.labels) == 0:
        raise DataError("data.path", "validation split is empty; add images or pass --val-data")
    for c in classes:
        if report.val_per_class.get(c, 0) == 0:
            report.warnings.append(f"class {c!r} has no validation images")
    return train, val, report


def _content_checks(train: DecodedSet, val: DecodedSet, classes: list[str], report: DataReport) -> None:
    for split in (train, val):
        by_hash = defaultdict(list)
        for p, h, y in zip(split.paths, split.hashes, split.labels):
            by_hash[h].append((p, int(y)))
        for items in by_hash.values():
            if len(items) > 1:
                report.duplicate_groups.append([p for p, _ in items])
                if len({y for _, y in items}) > 1:
                    report.conflicting_labels.append([f"{p} ({classes[y]})" for p, y in items])
    train_hashes = defaultdict(list)
    for p, h in zip(train.paths, train.hashes):
        train_hashes[h].append(p)
    for p, h in zip(val.paths, val.hashes):
        if h in train_hashes:
            report.leakage.append([p] + train_hashes[h])
    if report.leakage:
        report.warnings.append(f"{len(report.leakage)} validation image(s) also occur in training data")
    if report.conflicting_labels:
        report.warnings.append(f"{len(report.conflicting_labels)} identical image group(s) carry different labels")


class ImageTensors(Dataset):
    """Decoded uint8 images as CHW tensors, with optional training augmentation."""

    def __init__(self, data: DecodedSet, augment: bool = False, hflip: bool = False):
        self.pixels = torch.from_numpy(data.pixels).permute(0, 3, 1, 2)  # NCHW uint8 view
        self.labels = torch.from_numpy(data.labels)
        self.transform = _augmentation(self.pixels.shape[-1], hflip) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.pixels[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def _augmentation(size: int, hflip: bool):
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.15), antialias=True),
           v2.ColorJitter(brightness=0.2, contrast=0.2)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)
