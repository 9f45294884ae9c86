"""The data cache: what a pass over a dataset found, kept so the next job does not repeat it (torch-free).

Layout under ``cache_dir()`` (``$EDGETUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgetune``, else
``~/.cache/edgetune``; the server sets it to ``DATA_DIR/cache``):

- ``images/<fingerprint>/index.json``: per file, its content hash and whether it decodes.
- ``images/<fingerprint>/pixels-<size>.<resize version>.u8``: decoded images at ``size``, fixed-size uint8 HWC rows
  in scan order, read with ``pread`` (so the page cache holds them, not the training process).
- ``extracted/<archive sha256>/``: an archive's files, extracted once.

The fingerprint of a folder or CSV is a hash of every file's path, size and modification time
(as ``make`` and ``rsync`` judge a file changed); an archive is fingerprinted by its content.
Entries are written to a temporary name and renamed, so a killed pass leaves nothing half-valid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

HASH_CHUNK = 1 << 20  # bytes per read when hashing: a file is never held whole in memory


def cache_dir(root: str | Path | None = None) -> Path:
    """``root`` when given, else the environment's cache folder (see the module docstring)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("EDGETUNE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgetune"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, streamed in ``HASH_CHUNK`` reads."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(paths: list[str], extra: str = "") -> str:
    """A key for a list of files: their paths, sizes and modification times, in order."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def extracted_archive(archive: Path, extract, root: Path | None = None) -> Path:
    """The folder holding ``archive``'s files, extracting it (``extract(archive, dest)``) on first use."""
    dest = cache_dir(root) / "extracted" / file_sha256(archive)
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        extract(archive, tmp)
        tmp.rename(dest)
    except OSError:
        if not dest.is_dir():  # another process finished the same extraction first: use it
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free
