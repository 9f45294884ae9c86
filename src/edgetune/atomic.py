"""Atomic files: write to a temp file, fsync, rename, fsync the directory (no framework imports).

A crash at any instant leaves either the previous file or the new one, never a torn file.

File modes follow one rule everywhere edgetune writes (runs, bundles, downloads, the data cache):
what a plain ``open()`` / ``mkdir()`` gives, 0666 / 0777 less the process umask (0644 / 0755 with
the usual 022). Restrict access with the umask or the permissions of the folder above.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it, racily)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (file) or ``mkdir()`` (directory) would give."""
    return (0o777 if directory else 0o666) & ~umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then durably replace ``path`` with it (mode: ``default_mode()``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600: fixed below
    os.fchmod(fd, default_mode())
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
