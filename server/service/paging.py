"""Keyset paging shared by every List RPC: opaque, stable page tokens.

A token names the listing it came from (kind and filter) and the last row the client saw, as
``(create_time, id)``; the next page is the rows strictly after it, newest first. Rows added or
deleted between two pages never repeat or skip an item, and the last page's token is empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from edgetune.errors import InvalidArgument

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_TOKEN = 512
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of rows, whether more follow, and how to name the position after a row."""

    rows: list[T]
    more: bool
    listing: str
    key: Callable[[T], tuple[float, str]]

    def token_after(self, row: T) -> str:
        """The token of the page that starts after ``row`` (it need not be the page's last row: a
        reply cut short by its size limit continues from the last row it carried)."""
        t, i = self.key(row)
        raw = json.dumps(["v1", self.listing, t, i], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @property
    def next_token(self) -> str:
        return self.token_after(self.rows[-1]) if self.more and self.rows else ""


def page_request(page_size: int, page_token: str, listing: str) -> tuple[tuple[float, str] | None, int]:
    """(position after which to list, page size) for a List request; InvalidArgument names the field."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must be >= 0 (0: the default of 50)")
    limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    if not page_token:
        return None, limit
    bad = InvalidArgument("page_token", "not a page token from this listing (use the next_page_token of the "
                                        "previous reply with the same filter)")
    if len(page_token) > MAX_TOKEN or not _TOKEN.fullmatch(page_token):
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(value, list) and len(value) == 4 and value[0] == "v1" and value[1] == listing
            and isinstance(value[2], (int, float)) and not isinstance(value[2], bool) and isinstance(value[3], str)):
        raise bad
    try:
        position = float(value[2])
    except OverflowError:
        raise bad from None
    if not math.isfinite(position):
        raise bad
    return (position, value[3]), limit


def page_of(rows: list[T], limit: int, listing: str, key: Callable[[T], tuple[float, str]]) -> Page[T]:
    """A page from up to ``limit + 1`` rows fetched (the extra one only says that more follow)."""
    return Page(rows[:limit], len(rows) > limit, listing, key)
