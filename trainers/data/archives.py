"""Safe extraction of dataset archives (.zip, .tar.gz, .tgz, .tar).

Rejects absolute paths, ``..`` components, links and special files, and bounds the entry count
and the total uncompressed size, so an archive can never write outside its target directory.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from edgetune.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
MAX_ENTRIES = 200_000
MAX_TOTAL_BYTES = 20 * 1024**3


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _check_name(archive: str, name: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DataError(archive, f"unsafe entry {name!r} (absolute path or '..')")
    return p


def extract_archive(archive: str | Path, dest: str | Path, max_entries: int = MAX_ENTRIES,
                    max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Extract ``archive`` into ``dest`` after checking every entry. Returns ``dest``."""
    archive, dest = str(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.lower().endswith(".zip"):
            _extract_zip(archive, dest, max_entries, max_total_bytes)
        else:
            _extract_tar(archive, dest, max_entries, max_total_bytes)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, RuntimeError,
            NotImplementedError) as e:  # corrupt streams, encrypted or unsupported zip entries
        raise DataError(archive, f"cannot read archive: {e}") from None
    return dest


def _bound(archive: str, count: int, total: int, max_entries: int, max_total_bytes: int) -> None:
    if count > max_entries:
        raise DataError(archive, f"more than {max_entries} entries")
    if total > max_total_bytes:
        raise DataError(archive, f"uncompressed size exceeds {max_total_bytes} bytes")


def _extract_zip(archive: str, dest: Path, max_entries: int, max_total_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            _check_name(archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(archive, f"symlink entry {info.filename!r} is not allowed")
            total += info.file_size
        _bound(archive, len(infos), total, max_entries, max_total_bytes)
        for info in infos:
            rel = _check_name(archive, info.filename)
            target = dest.joinpath(*rel.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                # Count real bytes: a forged header cannot smuggle a bigger payload past the bound.
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    written += len(chunk)
                    if written > info.file_size:
                        raise DataError(archive, f"entry {info.filename!r} is larger than declared")
                    out.write(chunk)


def _extract_tar(archive: str, dest: Path, max_entries: int, max_total_bytes: int) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        total = 0
        for m in members:
            _check_name(archive, m.name)
            if not (m.isfile() or m.isdir()):
                raise DataError(archive, f"entry {m.name!r} is a link or special file; not allowed")
            total += m.size
        _bound(archive, len(members), total, max_entries, max_total_bytes)
        tf.extractall(dest, members=members, filter="data")
