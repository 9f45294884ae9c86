"""ONNX Runtime sessions, and a predictor over a verified bundle.

Torch-free at import (devices run this): ``verify_bundle`` checks a bundle before any session.
CUDA is asked for only when both torch and ONNX Runtime see a GPU; otherwise the CPU execution
provider. Sessions use ORT's full graph optimizations; parity is checked on these same sessions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgetune.errors import InvalidArgument, NotFound
from edgetune.integrity import sha256_file
from edgetune.imaging import Preprocessing, preprocess_files


def _cuda_usable() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # a device without torch: trust ORT's list
        return True


def select_providers(device: str = "auto") -> list:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda")."""
    if device not in ("auto", "cpu", "cuda"):
        raise InvalidArgument("device", f"must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" or (device == "auto" and _cuda_usable()):
        if not _cuda_usable():
            raise InvalidArgument("device", "cuda requested but no CUDA device is usable")
        # TF32 would trade the fp32 parity tolerance for speed; exported bundles promise fp32.
        return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(model_path: str | Path, device: str = "auto", threads: int | None = None,
                   spinning: bool = True) -> ort.InferenceSession:
    """An inference session with all graph optimizations.

    Args:
        threads: intra-op threads; default one per usable core (lowest latency for one caller).
        spinning: let idle intra-op threads spin; turn off when many requests share the cores.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or _usable_cores()
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    providers = select_providers(device)
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    # ORT falls back to the CPU silently when the CUDA provider cannot load: say so instead.
    if providers[0] != "CPUExecutionProvider" and session.get_providers()[0] != "CUDAExecutionProvider":
        if device == "cuda":
            raise InvalidArgument("device", "ONNX Runtime could not load its CUDA execution provider")
    return session


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


BUNDLE_FORMAT = "edgetune.bundle/v1"


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (label, probability), best first


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class BundlePredictor:
    """Loads a valid bundle (hashes verified) and classifies images with its own preprocessing."""

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        self.dir = Path(bundle_dir)
        self.manifest = verify_bundle(self.dir)
        self.labels: list[str] = self.manifest["labels"]
        self.preprocessing = Preprocessing.from_dict(self.manifest["preprocessing"])
        self.session = create_session(self.dir / "model.onnx", device, threads, spinning)
        self.input_name = self.manifest["inputs"][0]["name"]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    def predict_files(self, paths: list[str | Path], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        if top_k < 1:
            raise InvalidArgument("top_k", f"must be >= 1, got {top_k}")
        for p in paths:
            if not Path(p).is_file():
                raise NotFound(str(p), "image not found")
        out = []
        for i in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[i:i + batch_size]]
            try:
                batch = preprocess_files(chunk, self.preprocessing)
            except Exception as e:  # noqa: BLE001 - name the unreadable file
                bad = _first_unreadable(chunk)
                raise InvalidArgument(bad or "images", f"cannot decode image: {e}") from None
            probs = softmax(self.logits(batch))
            for path, row in zip(chunk, probs):
                idx = np.argsort(-row)[:top_k]
                out.append(Prediction(path, [(self.labels[j], float(row[j])) for j in idx]))
        return out


def _first_unreadable(paths: list[str]) -> str | None:
    from edgetune.imaging import load_rgb

    for p in paths:
        try:
            load_rgb(p)
        except Exception:  # noqa: BLE001
            return p
    return None


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check a bundle is marked valid and every file matches its sha256; returns the manifest."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "manifest.json"
    if not path.is_file():
        raise NotFound(str(bundle_dir), "not a bundle (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgument(str(path), f"unreadable manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InvalidArgument(str(path), f"unknown bundle format {manifest.get('format')!r}")
    if not manifest.get("valid"):
        raise InvalidArgument(str(bundle_dir), "bundle is not valid (it failed the parity gate)")
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.onnx" not in files:
        raise InvalidArgument(str(path), "manifest lists no model.onnx hash")
    for name, entry in files.items():
        f = bundle_dir / name
        if not f.is_file() or sha256_file(f) != (entry or {}).get("sha256"):
            raise InvalidArgument(str(f), "missing or sha256 does not match the manifest")
    return manifest


def manifest_of(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / "manifest.json"
    if not path.is_file():
        raise NotFound(str(bundle_dir), "not a bundle (no manifest.json)")
    return json.loads(path.read_text())
