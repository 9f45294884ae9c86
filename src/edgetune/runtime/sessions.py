"""ONNX Runtime sessions: which execution providers, and how many threads.

Torch-free (devices run this). CUDA is asked for only when ONNX Runtime has its CUDA provider and
the CUDA driver reports a device (``cuda_device_count``, through the driver library itself);
otherwise the CPU execution provider. Sessions use ORT's full graph optimizations; the export's
parity gate runs on these same sessions.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

import onnxruntime as ort

from edgetune.errors import InvalidArgument

DEVICES = ("auto", "cpu", "cuda")


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """CUDA devices the driver exposes to this process (``CUDA_VISIBLE_DEVICES`` applies, read once);
    0 without a driver. Linux only (``libcuda.so.1``), like the ``onnxruntime-gpu`` pin."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver (or not Linux)
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _cuda_usable() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


def select_providers(device: str = "auto") -> list:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda")."""
    if device not in DEVICES:
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
    opts.intra_op_num_threads = threads or usable_cores()
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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
