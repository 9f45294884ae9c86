"""One training job over K processes: who this process is, and the few collectives a run needs.

A launcher that follows torchrun's environment contract (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``: ``torch.distributed.run``, one node with ``--standalone`` today, several
through its c10d rendezvous later) starts one process per GPU; every process runs the same recipe.
Nothing here depends on how many nodes there are.

- Gradients: ``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), BatchNorm synchronised on CUDA.
- Everything else (the data-cache pass run by rank 0 first, stop requests, per-step item counts, RNG
  states for the resume file, evaluation metrics) goes through a gloo group on the host, so it never
  waits on the GPU.
- Rank 0 alone writes the run folder, checkpoints, resume state and progress events.

``edgetune.launch`` starts the processes (torch-free, for the CLI and the server's workers).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as tdist
import torch.nn as nn

# Rank 0 may spend long on the data pass while the others wait for it at a host barrier; a
# gradient all-reduce that waits this long on NCCL means a process is gone or hung.
HOST_TIMEOUT = timedelta(hours=3)
NCCL_TIMEOUT = timedelta(minutes=30)


@dataclass
class Dist:
    """This process's place in the job; ``world == 1`` (the default) is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    _host: object = field(default=None, repr=False)  # the gloo group for host-side collectives

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier(group=self._host)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others (which then find its caches on disk)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def sum_int(self, value: int) -> int:
        return int(self._sum(value, torch.int64))

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (a stop request reaches them at different times)."""
        return self.sum_int(int(flag)) > 0 if self.enabled else flag

    def sum_float(self, value: float) -> float:
        return float(self._sum(value, torch.float64))

    def _sum(self, value, dtype):
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=dtype)
        tdist.all_reduce(t, group=self._host)
        return t.item()

    def gather(self, obj) -> list:
        """Every process's ``obj`` (tensors and plain values), in rank order, on every process."""
        if not self.enabled:
            return [obj]
        buf = io.BytesIO()
        torch.save(obj, buf)  # as bytes: all_gather_object's own pickling of tensors fails to load
        out = [None] * self.world
        tdist.all_gather_object(out, buf.getvalue(), group=self._host)
        return [torch.load(io.BytesIO(b), weights_only=True) for b in out]

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0, group=self._host)
        return box[0]


def from_env() -> Dist:
    """This process's ranks from the launcher's environment (a plain run has none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(d: Dist, cuda: bool) -> Dist:
    """Join the job's process group (NCCL for CUDA gradients, gloo otherwise) and open the host group.
    On CUDA the process takes GPU ``local_rank`` of those it sees."""
    if not d.enabled:
        return d
    from edgetune.launch import die_with_parent

    die_with_parent()  # torchrun killed outright: no orphan keeps training
    if cuda:
        torch.cuda.set_device(d.local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if cuda else "gloo", timeout=NCCL_TIMEOUT if cuda else HOST_TIMEOUT)
    host = tdist.new_group(backend="gloo", timeout=HOST_TIMEOUT) if cuda else None
    return Dist(d.rank, d.world, d.local_rank, host)


def stop() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module that trains: ``model`` itself, or under several processes its DDP wrapper
    (BatchNorm synchronised across GPUs; on CPU, gloo has no SyncBatchNorm: each process normalizes
    with its own batch's statistics, and DDP copies rank 0's running statistics to the others at
    every forward). Both share ``model``'s parameters: checkpoints keep using ``model``."""
    if not d.enabled:
        return model
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # handles timm's BatchNorm+activation layers too

        convert_sync_batchnorm(model)  # the children are swapped in place, sharing their parameters
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


