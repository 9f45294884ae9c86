"""The service's data plane as plain Python (no grpc): what every RPC calls, split by concern.

``EdgetuneService`` owns the embedded store, the job runner and the four parts: ``datasets``,
``jobs``, ``exports`` and ``inference``. Errors are the domain errors of ``edgetune.errors``;
the transport maps them to status codes.
"""

from __future__ import annotations

from pathlib import Path

from edgetune.trainers.models.catalog import list_base_models

from edgetune.server.jobspec import server_catalog
from edgetune.server.runner import JobRunner
from edgetune.server.service.config import ServerConfig
from edgetune.server.service.datasets import Datasets
from edgetune.server.service.exports import Exports
from edgetune.server.service.inference import Inference
from edgetune.server.service.jobs import Jobs
from edgetune.server.store import Store

__all__ = ["EdgetuneService", "ServerConfig"]


class EdgetuneService:
    """The store (SQLite under ``config.data_dir``), the runner, and the operations on them."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "edgetune.sqlite")
        self.runner = JobRunner(self.store, self.data_dir, config.slots, config.max_attempts,
                                config.stall_timeout_s, config.cache_root(), config.gpus)
        self.datasets = Datasets(config, self.store, self.data_dir)
        self.jobs = Jobs(config, self.store, self.runner, self.datasets)
        self.exports = Exports(self.store, self.runner, self.data_dir, self.jobs, config.max_queued,
                               config.max_queued_per_principal)
        self.inference = Inference(config, self.exports)

    def start(self) -> None:
        """Recover jobs a previous server left RUNNING, clear half-finished uploads, start the runner."""
        self.runner.recover()
        self.datasets.clear_unfinished()
        self.runner.start()

    def stop(self, grace_s: float = 10.0, rpcs_drained=lambda: None) -> None:
        """Stop workers (their jobs resume on the next start); close the store once RPCs are done."""
        self.runner.shutdown(grace_s)
        rpcs_drained()
        self.store.close()

    @staticmethod
    def list_base_models() -> list[dict]:
        return server_catalog(list_base_models, "models")
