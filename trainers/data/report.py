"""What the data holds, found before training (images or text rows): one ``DataReport`` for every task.

Saved in the run's report (``report.json["data"]``), shown as the first lines of a run, and what
the service answers for an uploaded dataset. Identical content is found by hash: within a split
(duplicates, and labels that disagree on them) and across splits (validation leakage).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from edgetune.errors import DataError


class Item(NamedTuple):
    """One example as the content checks see it."""

    name: str  # file path, or "FILE row N"
    digest: str  # content hash (decoded pixels, normalized text)
    label: str  # "" when the task has no labels


@dataclass
class DataReport:
    """Counts, split, and problems of a dataset (``unit`` is "images" or "rows")."""

    task: str
    unit: str
    train_count: int = 0
    val_count: int = 0
    split: str = ""  # "given" (explicit val set or train/val folders), "stratified" or "random"
    classes: list[str] = field(default_factory=list)
    train_per_class: dict[str, int] = field(default_factory=dict)
    val_per_class: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # unreadable images / invalid rows, named
    skipped_invalid: bool = False
    ignored_files: int = 0  # files without an image suffix
    duplicate_groups: list[list[str]] = field(default_factory=list)  # identical content within a split
    conflicting_labels: list[list[str]] = field(default_factory=list)  # identical content, different labels
    leakage: list[list[str]] = field(default_factory=list)  # a val item, then its training twins
    token_lengths: dict = field(default_factory=dict)  # text: tokens per training row
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.task}: train {self.train_count} / val {self.val_count} {self.unit} ({self.split} split)"
                 + (f"; {len(self.classes)} classes" if self.classes else "")]
        lines += [f"  {c}: train {self.train_per_class.get(c, 0)}, val {self.val_per_class.get(c, 0)}"
                  for c in self.classes]
        lines.append(f"invalid: {len(self.invalid)}{' (skipped)' if self.invalid and self.skipped_invalid else ''}; "
                     f"duplicate groups: {len(self.duplicate_groups)}; label conflicts: "
                     f"{len(self.conflicting_labels)}; train/val leakage: {len(self.leakage)}")
        t = self.token_lengths
        if t:
            lines.append(f"tokens: median {t['p50']}, p95 {t['p95']}, max {t['max']}; {t['truncated']} row(s) "
                         f"longer than max_length {t['max_length']} are truncated")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def warn_missing_val_classes(self) -> None:
        for c in self.classes:
            if self.val_per_class.get(c, 0) == 0:
                self.warnings.append(f"class {c!r} has no validation {self.unit}")

    def warn_imbalance(self) -> None:
        counts = list(self.train_per_class.values())
        if counts and min(counts) * 10 < max(counts):
            self.warnings.append(f"classes are imbalanced ({min(counts)} vs {max(counts)} training {self.unit}): "
                                 "watch macro-F1 and per-class recall, not accuracy")


def label_set(found: list[str], expected: list[str] | None) -> list[str]:
    """The classes: the labels found in the training data, which must equal ``expected`` when
    re-tuning a run; at least two."""
    found = sorted(set(found))
    if expected is not None and set(found) != set(expected):
        raise DataError("data.path", f"labels {found} differ from the run being re-tuned {expected}")
    classes = found if expected is None else list(expected)
    if len(classes) < 2:
        raise DataError("data.path", f"need at least 2 classes, found {len(classes)}: {classes}")
    return classes


def content_checks(train: list[Item], val: list[Item], report: DataReport) -> None:
    """Duplicates and label conflicts within each split, and val items whose content is in train."""
    for split in (train, val):
        by_digest: dict[str, list[Item]] = defaultdict(list)
        for item in split:
            by_digest[item.digest].append(item)
        for items in by_digest.values():
            if len(items) > 1:
                report.duplicate_groups.append([i.name for i in items])
                if len({i.label for i in items}) > 1:
                    report.conflicting_labels.append([f"{i.name} ({i.label})" for i in items])
    in_train: dict[str, list[str]] = defaultdict(list)
    for item in train:
        in_train[item.digest].append(item.name)
    report.leakage += [[item.name, *in_train[item.digest]] for item in val if item.digest in in_train]
    if report.leakage:
        report.warnings.append(f"{len(report.leakage)} validation {report.unit} also occur in the training data")
    if report.conflicting_labels:
        report.warnings.append(f"{len(report.conflicting_labels)} group(s) of identical {report.unit} carry "
                               "different labels")
