"""Text datasets: JSONL / CSV / TSV rows, the pre-training validation report, the split.

Classification rows carry (text, label); generation rows carry (prompt, response). Column
names are configurable (``data.text_field`` ...). Every row is checked before training: empty
or missing fields are named by row number (the run fails unless ``skip_corrupt``), exact
duplicates and label conflicts are found by normalized text, and train/val leakage is reported.
Token lengths are added once the tokenizer is known (``add_token_lengths``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import DataError

from edgetune.tasks import TEXT_CLASSIFICATION, TEXT_GENERATION
from edgetune.trainers.data.limits import MAX_CLASSES, MAX_LABEL_CHARS, check_class_count, check_label
from edgetune.trainers.data.report import DataReport, Item, content_checks, label_set
from edgetune.trainers.data.split import stratified_split

TEXT_SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class TextFields:
    """Which columns hold what."""

    text: str = "text"
    label: str = "label"
    prompt: str = "prompt"
    response: str = "response"


@dataclass
class TextRows:
    """One split: texts and labels (classification) or prompts and responses (generation)."""

    inputs: list[str]  # texts (classification) or prompts (generation)
    targets: list[str]  # labels or responses
    rows: list[int]  # 1-based source row numbers (the header is row 0 for CSV)

    def __len__(self) -> int:
        return len(self.inputs)


def read_rows(path: str | Path, columns: tuple[str, str]) -> tuple[list[tuple[int, dict]], str]:
    """(row number, record) pairs from a .jsonl, .csv or .tsv file; DataError on malformed input."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(path), "dataset file not found")
    if p.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(str(path), f"text data must be one of {', '.join(TEXT_SUFFIXES)}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(str(path), f"cannot read as UTF-8 text: {e}") from None
    out = []
    if p.suffix.lower() == ".jsonl":
        # Only "\n" ends a row: str.splitlines would also split at U+2028 and friends, which
        # json.dumps(ensure_ascii=False) writes raw inside strings.
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise DataError(str(path), f"row {n}: not valid JSON ({str(e)[:200]})") from None
            if not isinstance(rec, dict):
                raise DataError(str(path), f"row {n}: expected a JSON object")
            out.append((n, rec))
        return out, "jsonl"
    # CSV: newline="" keeps line breaks inside quoted fields (the csv module's documented contract).
    # TSV (IANA text/tab-separated-values): one row per line, no quoting, so a message that starts
    # with a quote mark keeps it and never swallows the lines after it.
    tsv = p.suffix.lower() == ".tsv"
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    try:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(str(path), f"header {reader.fieldnames} lacks column(s) {missing} "
                                       f"(set data.text_field / data.label_field to match)")
        for n, rec in enumerate(reader, 1):
            out.append((n, rec))
    except csv.Error as e:
        raise DataError(str(path), f"row {len(out) + 1}: malformed {p.suffix.lower()[1:].upper()} ({e})") from None
    return out, p.suffix.lower()[1:]


_MAP_HINT = ("map other names with --set data.text_field=COLUMN (label_field, prompt_field, response_field), "
             "or --text-field COLUMN ... on `edgetune remote upload`")


def detect_text_task(path: str | Path, fields: TextFields = TextFields()) -> str:
    """Which text task a file's rows serve, from the columns of its first row."""
    p = Path(path)
    cols = None
    if p.suffix.lower() == ".jsonl":
        records, _ = read_rows(p, ())
        cols = set(records[0][1]) if records else set()
    else:
        for task, pair in ((TEXT_CLASSIFICATION, (fields.text, fields.label)),
                           (TEXT_GENERATION, (fields.prompt, fields.response))):
            try:
                read_rows(p, pair)
                return task
            except DataError as e:
                if "lacks column" not in e.message:
                    raise
        header = next(csv.reader(io.StringIO(p.read_text(errors="replace").partition("\n")[0]),
                                 delimiter="\t" if p.suffix.lower() == ".tsv" else ","), [])
        raise DataError(str(path), f"header must name {fields.text},{fields.label} or {fields.prompt},"
                                   f"{fields.response} columns, it has {header}; {_MAP_HINT}")
    if {fields.text, fields.label} <= cols:
        return TEXT_CLASSIFICATION
    if {fields.prompt, fields.response} <= cols:
        return TEXT_GENERATION
    raise DataError(str(path), f"rows must carry {fields.text!r} and {fields.label!r}, or {fields.prompt!r} and "
                               f"{fields.response!r}; the first row has {sorted(cols)}; {_MAP_HINT}")


def _normalized(s: str) -> str:
    return " ".join(s.lower().split())


def _hash(s: str) -> str:
    return hashlib.sha256(_normalized(s).encode()).hexdigest()


def _row_problem(rec: dict, cols: tuple[str, str], n: int) -> str | None:
    for col in cols:
        v = rec.get(col)
        if v is None:
            return f"row {n}: no {col!r} field"
        if isinstance(v, (dict, list)):
            return f"row {n}: {col!r} must be a string"
        if not str(v).strip():
            return f"row {n}: {col!r} is empty"
    return None


def _parse(path: str, task: str, fields: TextFields, skip_invalid: bool, report_invalid: list[str],
           max_label_chars: int = MAX_LABEL_CHARS) -> TextRows:
    cols = (fields.text, fields.label) if task == TEXT_CLASSIFICATION else (fields.prompt, fields.response)
    records, _ = read_rows(path, cols)
    inputs, targets, rows = [], [], []
    for n, rec in records:
        problem = _row_problem(rec, cols, n)
        if problem:
            report_invalid.append(f"{Path(path).name} {problem}")
            continue
        inputs.append(str(rec[cols[0]]))
        label_or_response = str(rec[cols[1]])
        if task == TEXT_CLASSIFICATION:
            label_or_response = label_or_response.strip()
            check_label(label_or_response, f"{Path(path).name} row {n}: label", max_label_chars)
        targets.append(label_or_response)
        rows.append(n)
    if report_invalid and not skip_invalid:
        shown = "; ".join(report_invalid[:5]) + (f" and {len(report_invalid) - 5} more" if len(report_invalid) > 5 else "")
        raise DataError("data.path", f"{len(report_invalid)} invalid row(s): {shown} "
                                     "(fix them, or pass --skip-corrupt to skip them)", files=report_invalid)
    return TextRows(inputs, targets, rows)


def load_text_data(path: str, val_path: str | None, task: str, val_fraction: float, skip_invalid: bool,
                   seed: int, fields: TextFields = TextFields(), classes: list[str] | None = None, *,
                   max_classes: int = MAX_CLASSES, max_label_chars: int = MAX_LABEL_CHARS
                   ) -> tuple[TextRows, TextRows, DataReport]:
    """Read, validate and split text data. Raises DataError naming the file and row.

    Args:
        classes: when given (re-tuning), the label set the data must match exactly.
        max_classes, max_label_chars: bounds on a classification's distinct labels and their
            length (``trainers/data/limits.py``); generation rows have no labels.
    """
    invalid: list[str] = []
    train = _parse(path, task, fields, skip_invalid, invalid, max_label_chars)
    val = _parse(val_path, task, fields, skip_invalid, invalid, max_label_chars) if val_path else None
    if len(train) == 0:
        raise DataError("data.path", "no usable rows")
    if task == TEXT_CLASSIFICATION:
        check_class_count(set(train.targets), "distinct labels", max_classes)
    if val is None:
        labels = train.targets if task == TEXT_CLASSIFICATION else [""] * len(train)
        t_idx, v_idx = stratified_split(labels, [_hash(x) for x in train.inputs], val_fraction, seed)
        train, val = _subset(train, t_idx), _subset(train, v_idx)
        split = "stratified" if task == TEXT_CLASSIFICATION else "random"
    else:
        split = "given"
    if len(val) == 0:
        raise DataError("data.path", "validation split is empty; add rows or pass --val-data")
    report = DataReport(task, "rows", len(train), len(val), split, invalid=invalid, skipped_invalid=skip_invalid)
    if task == TEXT_CLASSIFICATION:
        _check_labels(train, val, classes, report)
    val_file = Path(val_path).name if val_path else Path(path).name
    content_checks(_items(train, task, Path(path).name), _items(val, task, val_file), report)
    return train, val, report


def _items(rows: TextRows, task: str, file: str) -> list[Item]:
    return [Item(f"{file} row {n}", _hash(text), target if task == TEXT_CLASSIFICATION else "")
            for text, target, n in zip(rows.inputs, rows.targets, rows.rows)]


def _subset(rows: TextRows, idx: list[int]) -> TextRows:
    return TextRows([rows.inputs[i] for i in idx], [rows.targets[i] for i in idx], [rows.rows[i] for i in idx])


def _check_labels(train: TextRows, val: TextRows, classes: list[str] | None, report: DataReport) -> None:
    classes = label_set(train.targets, classes)
    unknown = sorted(set(val.targets) - set(classes))
    if unknown:
        raise DataError("data.val_path", f"labels {unknown[:10]} do not occur in the training data")
    report.classes = classes
    report.train_per_class = dict(sorted(Counter(train.targets).items()))
    report.val_per_class = dict(sorted(Counter(val.targets).items()))
    report.warn_imbalance()
    report.warn_missing_val_classes()


def add_token_lengths(report: DataReport, lengths: list[int], max_length: int) -> None:
    """Record the token-length distribution of the training rows and how many are truncated."""
    arr = np.asarray(lengths) if lengths else np.zeros(1, int)
    truncated = int((arr > max_length).sum())
    report.token_lengths = {"p50": int(np.percentile(arr, 50)), "p95": int(np.percentile(arr, 95)),
                            "max": int(arr.max()), "max_length": max_length, "truncated": truncated}
    if truncated > 0.05 * len(arr):
        report.warnings.append(f"{truncated} of {len(arr)} training rows exceed max_length {max_length} and are "
                               "truncated; consider a larger data.max_length")
