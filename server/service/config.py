"""The server's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgetune.errors import InvalidArgument


@dataclass
class ServerConfig:
    """Server settings; ``edgetune serve`` has a flag and an environment variable for most (not for
    the archive bounds, the predictor cache and max_attempts: set them here)."""

    data_dir: Path = Path("edgetune-data")
    slots: int = 1  # concurrent jobs; default: GPU count, 1 on CPU
    max_queued: int = 32  # queued jobs beyond which CreateJob is RESOURCE_EXHAUSTED
    max_queued_per_principal: int = 16  # queued jobs one principal may have waiting
    max_upload_bytes: int = 2 * 1024**3
    max_archive_entries: int = 200_000
    max_extracted_bytes: int = 20 * 1024**3  # one archive's files, also bounded by the storage quota
    max_archive_ratio: float = 200.0  # uncompressed / compressed bytes an archive may claim (zip bombs)
    storage_quota_bytes: int = 64 * 1024**3  # what one principal's datasets may hold on disk
    upload_idle_s: float = 60.0  # an upload stream silent this long is dropped (DEADLINE_EXCEEDED)
    predictor_cache: int = 4  # warm ONNX Runtime sessions kept
    max_attempts: int = 3  # restarts a running job survives
    stall_timeout_s: float = 1800.0  # a worker with no event for this long is hung: killed, job FAILED
    gpus: tuple[str, ...] = ()  # GPU ids handed to jobs (CUDA_VISIBLE_DEVICES entries); () trains on the CPU

    def cache_root(self) -> Path:
        """The data cache (dataset indexes, decoded pixels, extracted archives) the service and its
        workers share: ``$EDGETUNE_CACHE_DIR``, else ``DATA_DIR/cache``."""
        return Path(os.environ.get("EDGETUNE_CACHE_DIR") or Path(self.data_dir) / "cache")


def server_gpus(spec: str) -> tuple[str, ...]:
    """The GPUs a server hands to jobs: ``auto`` (every GPU this process sees: the entries of
    ``CUDA_VISIBLE_DEVICES`` when set, else the driver's devices 0..N-1), ``none``, or a comma list
    of ids as ``CUDA_VISIBLE_DEVICES`` takes them (``0,1,3``, or GPU UUIDs)."""
    spec = spec.strip()
    if spec == "none":
        return ()
    if spec != "auto":
        ids = tuple(g.strip() for g in spec.split(","))
        if not all(ids) or len(set(ids)) != len(ids):
            raise InvalidArgument("--gpus", f"expected auto, none or distinct comma-separated ids, got {spec!r}")
        return ids
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    from edgetune.runtime.sessions import cuda_device_count

    count = cuda_device_count()
    if visible is not None:
        return tuple(g.strip() for g in visible.split(",") if g.strip())[:count]
    return tuple(str(i) for i in range(count))
