"""What operators see: Prometheus metrics (served on request, off by default) and JSON logs.

Counted in the process as things happen: RPCs by method and status code, Predict / ModelInfer
latency per export, upload bytes. Read from the store at each scrape: jobs and exports by state,
the queues, job and export durations. GPU memory per GPU (and the job using it) comes from
``nvidia-smi`` at each scrape, where the server hands out GPUs and the tool exists.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from edgetune.server.runner import JobRunner
from edgetune.server.store import QUEUED, Store

log = logging.getLogger("edgetune.server")
STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The server's metrics on their own registry (nothing global)."""

    def __init__(self, store: Store | None = None, runner: JobRunner | None = None):
        self.registry = CollectorRegistry()
        self.rpcs = Counter("edgetune_rpcs", "RPCs handled, by method and status code", ["method", "code"],
                            registry=self.registry)
        self.inference = Histogram("edgetune_inference_seconds", "Predict and ModelInfer latency per export",
                                   ["export", "rpc"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upload_bytes = Counter("edgetune_upload_bytes", "Dataset bytes received (refused uploads too)",
                                    registry=self.registry)
        if store is not None:
            self.registry.register(_StoreCollector(store, runner))

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP; returns the port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port


class _StoreCollector:
    def __init__(self, store: Store, runner: JobRunner | None):
        self.store, self.runner = store, runner

    def collect(self):
        """The store's figures, or only ``edgetune_store_up 0`` when it cannot be read (a scrape
        during shutdown, a long write lock): the in-process counters are served either way."""
        try:
            families = list(self._families())
        except Exception:  # noqa: BLE001 - sqlite3 errors, a closed store
            log.warning("metrics: the store could not be read", exc_info=True)
            families = []
        up = GaugeMetricFamily("edgetune_store_up", "1 when this scrape could read the store")
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _families(self):
        for table, what in (("jobs", "jobs"), ("exports", "exports")):
            counts = self.store.counts_by_state(table)
            g = GaugeMetricFamily(f"edgetune_{table}", f"{what} by state", labels=["state"])
            for state in STATES:
                g.add_metric([state], counts.get(state, 0))
            yield g
            q = GaugeMetricFamily(f"edgetune_{table}_queue_depth", f"{what} waiting for a slot")
            q.add_metric([], counts.get(QUEUED, 0))
            yield q
            yield _histogram(f"edgetune_{table[:-1]}_duration_seconds", f"seconds from start to end of finished {what}",
                             self.store.durations(table, DURATION_BUCKETS))
        if self.runner is not None and self.runner.gpus:
            yield from _gpu_memory(self.runner)


def _histogram(name: str, doc: str, by_state: dict[str, tuple[list[int], int, float]]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=["state"])
    for state, (counts, total, seconds) in sorted(by_state.items()):
        h.add_metric([state], [*((str(b), c) for b, c in zip(DURATION_BUCKETS, counts)), ("+Inf", total)], seconds)
    return h


def _gpu_memory(runner: JobRunner):
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return
    try:
        out = subprocess.run([tool, "--query-gpu=index,uuid,memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return
    used = GaugeMetricFamily("edgetune_gpu_memory_used_bytes", "memory in use on each GPU the server hands out, "
                             "and the job holding it ('' when idle)", labels=["gpu", "job"])
    total = GaugeMetricFamily("edgetune_gpu_memory_total_bytes", "memory of each GPU the server hands out",
                              labels=["gpu"])
    holders = {g: job for job, gpus in runner.gpus_held().items() for g in gpus}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        index, uuid, mib_used, mib_total = parts
        gpu = index if index in runner.gpus else uuid if uuid in runner.gpus else None
        if gpu is None:
            continue
        try:
            used.add_metric([gpu, holders.get(gpu, "")], float(mib_used) * 2**20)
            total.add_metric([gpu], float(mib_total) * 2**20)
        except ValueError:
            continue
    yield used
    yield total


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)

