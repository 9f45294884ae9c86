"""Safe extraction of dataset archives (.zip, .tar.gz, .tgz, .tar).

Rejects absolute paths, ``..`` components, links and special files, and bounds the entry count
and the total uncompressed size, so an archive can never write outside its target directory.

Bombs: past ``ratio_floor_bytes`` of uncompressed data, the data may be at most ``max_ratio``
times the archive's size on disk. The sizes the headers declare are checked before anything is
written, and the bytes actually inflated are counted again while extracting, since headers can
lie (for a tar the whole decompressed stream is counted, headers included: reading a tar's
member list already inflates it, and a pax header's bytes count toward no member's size).

Every problem is a ``DataError`` naming the entry as the archive spells it (shortened to
``NAME_CHARS``), never the extraction directory: its messages reach remote clients.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edgetune.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
MAX_ENTRIES = 200_000
MAX_TOTAL_BYTES = 20 * 1024**3
MAX_RATIO = 200  # uncompressed bytes per byte of archive on disk, for the archive as a whole
RATIO_FLOOR_BYTES = 64 * 1024**2  # up to this many uncompressed bytes the ratio is not checked
NAME_CHARS = 80  # of an entry's name, in messages
TAR_SLACK_PER_ENTRY = 4096  # a member's header blocks and padding in the decompressed tar stream
TAR_SLACK = 20 * 512  # end-of-archive blocks and the final record's padding
COPY_CHUNK = 1 << 20
# The most one read of the tar stream may ask for: members are copied in COPY_CHUNK pieces and
# real headers are a few blocks, so only a forged pax / long-name header asks for more (tarfile
# would read it whole into memory).
MAX_TAR_READ = COPY_CHUNK + 64 * 1024


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` names an archive file: a directory is a directory, whatever its name."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES) and not Path(path).is_dir()


def _shown(name: str) -> str:
    return repr(name[:NAME_CHARS]) + ("..." if len(name) > NAME_CHARS else "")


def _reason(e: BaseException) -> str:
    """An error's own words: an OSError's ``str`` names the absolute path it failed on."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _check_name(archive: str, name: str) -> PurePosixPath:
    if "\0" in name:
        raise DataError(archive, f"entry {_shown(name)} has a NUL character in its name")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DataError(archive, f"unsafe entry {_shown(name)} (absolute path or '..')")
    return p


@dataclass(frozen=True)
class _Budget:
    """How many entries and uncompressed bytes an archive of ``size`` bytes on disk may hold."""

    archive: str
    size: int
    max_entries: int
    max_total_bytes: int
    max_ratio: float | None
    ratio_floor_bytes: int

    @property
    def limit(self) -> int:
        if self.max_ratio is None:
            return self.max_total_bytes
        return min(self.max_total_bytes, max(self.ratio_floor_bytes, int(self.max_ratio * self.size)))

    def check(self, count: int, total: int) -> None:
        if count > self.max_entries:
            raise DataError(self.archive, f"more than {self.max_entries} entries")
        if total > self.max_total_bytes:
            raise DataError(self.archive, f"uncompressed size exceeds {self.max_total_bytes} bytes")
        if total > self.limit:
            raise DataError(self.archive, f"compression ratio exceeds {self.max_ratio:g}:1 (at least {total} "
                                          f"uncompressed bytes from {self.size} bytes)")


def extract_archive(archive: str | Path, dest: str | Path, max_entries: int = MAX_ENTRIES,
                    max_total_bytes: int = MAX_TOTAL_BYTES, *, max_ratio: float | None = MAX_RATIO,
                    ratio_floor_bytes: int = RATIO_FLOOR_BYTES) -> Path:
    """Extract ``archive`` into ``dest`` after checking every entry. Returns ``dest``.

    Args:
        max_entries, max_total_bytes: bounds on the entry count and the uncompressed total.
        max_ratio: uncompressed bytes per archive byte on disk (None: no ratio bound), applied
            once the uncompressed total exceeds ``ratio_floor_bytes``.
    """
    archive, dest = str(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        budget = _Budget(archive, os.path.getsize(archive), max_entries, max_total_bytes, max_ratio,
                         ratio_floor_bytes)
        if archive.lower().endswith(".zip"):
            _extract_zip(archive, dest, budget)
        else:
            _extract_tar(archive, dest, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, RuntimeError,
            NotImplementedError) as e:  # corrupt streams, encrypted or unsupported zip entries
        raise DataError(archive, f"cannot read archive: {_reason(e)}") from None
    return dest


def _write(archive: str, name: str, target: Path, src: BinaryIO | None, budget: _Budget, count: int,
           written: int, declared: int | None = None) -> int:
    """Write one entry (a directory when ``src`` is None), counting the bytes that really arrive.
    Returns ``written`` plus this entry's bytes."""
    try:
        if src is None:
            target.mkdir(parents=True, exist_ok=True)
            return written
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with open(target, "wb") as out:
            while chunk := src.read(COPY_CHUNK):
                size += len(chunk)
                if declared is not None and size > declared:
                    raise DataError(archive, f"entry {_shown(name)} is larger than declared")
                budget.check(count, written + size)
                out.write(chunk)
        return written + size
    except (OSError, ValueError) as e:  # a name the filesystem cannot hold (too long, NUL, a file in the way)
        raise DataError(archive, f"entry {_shown(name)} cannot be extracted: {_reason(e)}") from None


def _write_all(archive: str, dest: Path, budget: _Budget, entries: list[tuple[str, Callable | None, int]]) -> None:
    """Write (name, open it or None for a directory, declared size) entries, in order."""
    written = 0
    for name, open_entry, size in entries:
        target = dest.joinpath(*_check_name(archive, name).parts)
        if open_entry is None:
            _write(archive, name, target, None, budget, len(entries), written)
            continue
        with open_entry() as src:
            written = _write(archive, name, target, src, budget, len(entries), written, size)


def _extract_zip(archive: str, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            _check_name(archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(archive, f"symlink entry {_shown(info.filename)} is not allowed")
            total += info.file_size
        budget.check(len(infos), total)
        _write_all(archive, dest, budget, [(i.filename, None if i.is_dir() else partial(zf.open, i), i.file_size)
                                           for i in infos])


class _Bounded:
    """A decompressed tar stream that will not read or seek past the budget (plus header slack).

    tarfile inflates the whole stream to list the members (it skips data by seeking, which
    inflates it too) and reads a pax header whole into memory: both happen before any member
    size can be checked, so the position itself is bounded, before each read or seek."""

    def __init__(self, stream: BinaryIO, budget: _Budget):
        self.stream, self.budget, self.entries = stream, budget, 1

    def _slack(self) -> int:
        return TAR_SLACK + TAR_SLACK_PER_ENTRY * self.entries

    def _allow(self, end: int) -> None:
        if end > self.budget.limit + self._slack():
            self.budget.check(0, end - self._slack())

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            data = self.stream.read(MAX_TAR_READ + 1)
            if len(data) > MAX_TAR_READ:
                raise DataError(self.budget.archive, "a tar header or member read larger than "
                                                     f"{MAX_TAR_READ} bytes at once (a forged header?)")
            self._allow(self.stream.tell())
            return data
        if n > MAX_TAR_READ:
            raise DataError(self.budget.archive, f"a tar header of {n} bytes (at most {MAX_TAR_READ}); "
                                                 "a forged header?")
        self._allow(self.stream.tell() + n)
        return self.stream.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._allow(offset)
        elif whence == os.SEEK_CUR:
            self._allow(self.stream.tell() + offset)
        else:
            raise OSError("cannot seek from the end of a compressed stream")
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def seekable(self) -> bool:
        return True


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The tar stream inside ``raw``: gzip, bzip2 or xz, by their magic bytes, else as is."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _extract_tar(archive: str, dest: Path, budget: _Budget) -> None:
    with open(archive, "rb") as raw, _decompressed(raw) as stream:
        bounded = _Bounded(stream, budget)
        with tarfile.open(fileobj=bounded, mode="r:") as tf:
            members, total = [], 0
            for m in tf:
                members.append(m)
                bounded.entries = len(members) + 1
                _check_name(archive, m.name)
                if not (m.isfile() or m.isdir()):
                    raise DataError(archive, f"entry {_shown(m.name)} is a link or special file; not allowed")
                total += m.size if m.isfile() else 0
                budget.check(len(members), total)
            _write_all(archive, dest, budget, [(m.name, None if m.isdir() else partial(tf.extractfile, m), m.size)
                                               for m in members])
