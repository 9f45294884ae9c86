"""Bounds on a dataset's labels, checked by the text and image loaders before a dataset is stored.

Every label becomes a class: a row of the report, an output of the model and a string in the
bundle's manifest, so an upload does not choose how many there are or how long they get. The
server imports these defaults; the loaders take both as keywords.
"""

from __future__ import annotations

from collections.abc import Collection

from edgetune.errors import DataError

MAX_CLASSES = 10_000
MAX_LABEL_CHARS = 128
SHOWN_CHARS = 40  # of an offending label, in messages


def shown(label: str) -> str:
    return repr(label[:SHOWN_CHARS]) + ("..." if len(label) > SHOWN_CHARS else "")


def check_label(label: str, what: str, max_label_chars: int = MAX_LABEL_CHARS) -> None:
    """DataError when ``label`` is longer than ``max_label_chars``; ``what`` says where it was found."""
    if len(label) > max_label_chars:
        raise DataError("data.path", f"{what} {shown(label)} is longer than {max_label_chars} characters")


def check_class_count(labels: Collection[str], what: str, max_classes: int = MAX_CLASSES) -> None:
    """DataError when there are more than ``max_classes`` distinct ``labels``, counted as ``what``."""
    if len(labels) > max_classes:
        raise DataError("data.path", f"{len(labels)} {what}, more than {max_classes}")
