"""What an export is made from: ``export_key`` hashes it, so an unchanged bundle is not redone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import edgetune
from edgetune.integrity import sha256_file

# What an export reads from a run: a change to any of these makes its bundles stale.
_RUN_INPUTS = ("model.safetensors", "model.json", "config.yaml", "report.json", "parity_samples.safetensors",
               "parity_samples.json", "heldout.safetensors", "heldout.json", "calibration.safetensors",
               "base.safetensors", "prompt.safetensors")


def export_key(run_dir: str | Path, options: dict) -> str:
    """A hash of everything an export of ``run_dir`` with ``options`` depends on."""
    run_dir = Path(run_dir)
    h = hashlib.sha256(json.dumps({"edgetune": edgetune.__version__, "options": options}, sort_keys=True).encode())
    for name in _RUN_INPUTS:
        path = run_dir / name
        h.update(f"{name}:{sha256_file(path) if path.is_file() else '-'}\n".encode())
    for sub in ("adapter", "tokenizer"):
        for path in sorted((run_dir / sub).rglob("*")) if (run_dir / sub).is_dir() else []:
            if path.is_file():
                h.update(f"{path.relative_to(run_dir).as_posix()}:{sha256_file(path)}\n".encode())
    return h.hexdigest()
