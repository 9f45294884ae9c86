"""Runs queued jobs in worker processes, at most ``slots`` at a time, on the GPUs they asked for.

GPUs: each job gets its count (``Job.gpus``) of the server's GPUs to itself, through the worker's
``CUDA_VISIBLE_DEVICES``; jobs that need fewer than the node has run side by side on disjoint GPUs,
and the oldest queued job waits until enough are free (first come, first served: a big job is
never starved by small ones). A job on K > 1 GPUs trains as K DDP processes (``edgetune.launch``).

A crash, OOM kill or hang in training never takes the server down: the worker is a separate
process and its exit decides the job's state. On start, jobs a dead server left RUNNING are
re-queued to resume from their last checkpoint (or FAILED after ``max_attempts``).

Exports share the slots: a queued export (``server/export_worker.py``, on the CPU) starts before
the next queued job, being short and what a user waits on. Exports left RUNNING are redone.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgetune.launch import RANK_ENV
from edgetune.server.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Store
from edgetune.server.worker import EXIT_BAD_INPUT, EXIT_INTERRUPTED

log = logging.getLogger("edgetune.server")
CANCEL_GRACE_S = 10.0


def _is_export(task_id: str) -> bool:
    return task_id.startswith("exp-")


class JobRunner:
    def __init__(self, store: Store, data_dir: Path, slots: int, max_attempts: int = 3,
                 stall_timeout_s: float = 1800.0, cache_root: Path | None = None, gpus: tuple[str, ...] = ()):
        self.store, self.data_dir, self.slots, self.max_attempts = store, data_dir, slots, max_attempts
        self.stall_timeout_s = stall_timeout_s
        self.cache_root = cache_root or data_dir / "cache"
        self._procs: dict[str, subprocess.Popen] = {}
        self.gpus = tuple(gpus)
        self._gpus_held: dict[str, tuple[str, ...]] = {}  # job id -> the GPUs its worker was given
        self._kill_at: dict[str, float] = {}
        self._stalled: set[str] = set()
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._workers_stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)

    def gpus_held(self) -> dict[str, tuple[str, ...]]:
        """Running job id -> the GPUs its worker was given."""
        with self._lock:
            return dict(self._gpus_held)

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def export_dir(self, export_id: str) -> Path:
        return self.data_dir / "exports" / export_id

    def recover(self) -> None:
        """Jobs left RUNNING by a server that died: resume them, or fail them with a reason; exports
        left RUNNING: redo them."""
        for export in self.store.exports_in(RUNNING):
            if export["attempts"] + 1 >= self.max_attempts:
                self.store.set_export_state(export["id"], FAILED, f"server died while running it "
                                                                  f"{export['attempts'] + 1} times; gave up")
            else:
                self.store.requeue_export(export["id"], "server restarted while the export was running; it "
                                                        "starts again")
        for job in self.store.jobs_in(RUNNING):
            if job.cancel_requested:
                self.store.set_state(job.id, CANCELLED, "cancelled; the server stopped before the worker did")
            elif job.attempts >= self.max_attempts:
                self.store.set_state(job.id, FAILED, f"server died while running it {job.attempts + 1} times; "
                                                     f"gave up")
            else:
                self.store.requeue(job.id, "server restarted while the job was running; it resumes from "
                                           "its last checkpoint")

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self.store.request_cancel(job_id)
        if self.store.set_state(job_id, CANCELLED, "cancelled by request", only_from=(QUEUED,)):
            return
        with self._lock:
            proc = self._procs.get(job_id)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                self._kill_at[job_id] = time.monotonic() + CANCEL_GRACE_S
        self.wake()

    def shutdown(self, grace_s: float) -> None:
        """Stop workers (they keep their last checkpoint) and re-queue their jobs for the next start."""
        # Not joining the runner thread yet: workers get PR_SET_PDEATHSIG from the thread that started
        # them, so it must outlive them. The launch lock waits out a launch in progress instead.
        with self._launch_lock:
            self._stopping = True
        self.wake()
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for job_id, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._finish(job_id, proc)
        self._workers_stopped.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self._reap()
                self._fill_slots()
            except Exception:  # noqa: BLE001 - the runner must outlive any single failure
                log.exception("job runner iteration failed")
            self._wake.wait(0.5)
            self._wake.clear()
        # This thread started the workers, and PR_SET_PDEATHSIG fires when it exits: stay alive
        # until shutdown has let every worker stop at its own pace.
        self._workers_stopped.wait()

    def _reap(self) -> None:
        with self._lock:
            items = list(self._procs.items())
        for job_id, proc in items:
            if proc.poll() is None:
                if _is_export(job_id):
                    if time.time() - self.store.last_activity(job_id) > self.stall_timeout_s:
                        self._stalled.add(job_id)
                        proc.kill()
                    continue
                if job_id not in self._kill_at:
                    # Also catches a cancel that landed between RUNNING and the worker's registration.
                    if self.store.get_job(job_id).cancel_requested:
                        proc.send_signal(signal.SIGTERM)
                        self._kill_at[job_id] = time.monotonic() + CANCEL_GRACE_S
                elif time.monotonic() > self._kill_at[job_id]:
                    proc.kill()
                if time.time() - self.store.last_activity(job_id) > self.stall_timeout_s:
                    self._stalled.add(job_id)  # a hung worker: no event for too long
                    proc.kill()
                continue
            self._finish(job_id, proc)

    def _fill_slots(self) -> None:
        while not self._stopping:
            with self._lock:
                if len(self._procs) >= self.slots:
                    return
            with self._launch_lock:
                if self._stopping:
                    return
                export = self.store.next_queued_export()
                if export is not None:
                    self._launch_export(export)
                    continue
                job = self.store.next_queued()
                if job is None:
                    return
                need = job.request.get("gpus", min(len(self.gpus), 1))  # jobs from before Job.gpus: one
                if need > len(self.gpus):  # the server restarted with fewer GPUs than the job asked for
                    self.store.set_state(job.id, FAILED, f"needs {need} GPU(s); this server now hands out "
                                                         f"{len(self.gpus)}", only_from=(QUEUED,))
                    continue
                with self._lock:
                    held = {g for gpus in self._gpus_held.values() for g in gpus}
                free = [g for g in self.gpus if g not in held]
                if need > len(free):
                    return  # the oldest job waits for its GPUs; the ones behind it wait for it
                self._launch(job, tuple(free[:need]))

    def _launch(self, job, gpus: tuple[str, ...] = ()) -> None:
        if not self.store.set_state(job.id, RUNNING, only_from=(QUEUED,)):
            return
        dataset = self.store.get_dataset(job.dataset_id)
        jdir = self.job_dir(job.id)
        if dataset is None:
            self.store.set_state(job.id, FAILED, f"dataset {job.dataset_id} was deleted")
            return
        try:
            jdir.mkdir(parents=True, exist_ok=True)
            with open(jdir / "worker.log", "ab") as logf:
                # Its own session: a Ctrl-C or SIGTERM to the server's process group does not reach
                # the worker directly; the server stops it (and PR_SET_PDEATHSIG covers a dead server).
                env = {k: v for k, v in os.environ.items() if k not in RANK_ENV}  # not a foreign job's rank
                # Only its own GPUs: none for a CPU job (or a server told --gpus none).
                # PCI bus order: the ids nvidia-smi (and the metrics) use name the same GPUs.
                env.update(EDGETUNE_CACHE_DIR=str(self.cache_root), CUDA_VISIBLE_DEVICES=",".join(gpus),
                           CUDA_DEVICE_ORDER="PCI_BUS_ID")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edgetune.server.worker", "--db", str(self.store.path), "--job", job.id,
                     "--run-dir", str(jdir / "run"), "--data", dataset["path"], "--processes", str(max(1, len(gpus)))],
                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        except OSError as e:
            self.store.set_state(job.id, FAILED, f"could not start a worker: {e}")
            return
        with self._lock:
            self._procs[job.id] = proc
            self._gpus_held[job.id] = gpus
        if gpus:
            self.store.add_event(job.id, "log", {"message": f"GPU(s) {','.join(gpus)} of this server"})
        log.info("job %s started (pid %d, GPUs %s)", job.id, proc.pid, ",".join(gpus) or "none")

    def _launch_export(self, export: dict) -> None:
        if not self.store.set_export_state(export["id"], RUNNING, only_from=(QUEUED,)):
            return
        folder = self.export_dir(export["id"])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "worker.log", "ab") as logf:
                env = {k: v for k, v in os.environ.items() if k not in RANK_ENV}
                # The CPU: what the variants are gated and timed on, and the GPUs stay the jobs'.
                env.update(EDGETUNE_CACHE_DIR=str(self.cache_root), CUDA_VISIBLE_DEVICES="")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edgetune.server.export_worker", "--db", str(self.store.path),
                     "--export", export["id"], "--run-dir", str(self.job_dir(export["job_id"]) / "run")],
                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        except OSError as e:
            self.store.set_export_state(export["id"], FAILED, f"could not start an export worker: {e}")
            return
        with self._lock:
            self._procs[export["id"]] = proc
        log.info("export %s started (pid %d)", export["id"], proc.pid)

    def _finish_export(self, export_id: str, rc: int) -> None:
        if rc == 0:
            pass  # the worker recorded the outcome
        elif self._stopping:
            self.store.requeue_export(export_id, "server stopping; the export starts again at the next start",
                                      count_attempt=False)
        else:
            stalled = export_id in self._stalled
            self._stalled.discard(export_id)
            how = (f"no progress for {self.stall_timeout_s:.0f}s; worker killed" if stalled else
                   f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}")
            tail = " | ".join(self._log_tail(export_id, 5))
            self.store.set_export_state(export_id, FAILED, f"export worker {how}; last log lines: {tail}",
                                        only_from=(RUNNING,))
        log.info("export %s worker exited with %s", export_id, rc)
        self.wake()

    def _finish(self, job_id: str, proc: subprocess.Popen) -> None:
        with self._lock:
            if self._procs.pop(job_id, None) is None:
                return
            self._kill_at.pop(job_id, None)
            self._gpus_held.pop(job_id, None)
        rc = proc.returncode
        if _is_export(job_id):
            self._finish_export(job_id, rc)
            return
        job = self.store.get_job(job_id)
        if job.cancel_requested:
            self.store.set_state(job_id, CANCELLED, "cancelled by request")
        elif job_id in self._stalled:
            self._stalled.discard(job_id)
            tail = " | ".join(self._log_tail(job_id, 5))
            self.store.set_state(job_id, FAILED, f"no progress for {self.stall_timeout_s:.0f}s; worker killed; "
                                                 f"last log lines: {tail}")
        elif rc == 0:
            self.store.set_state(job_id, SUCCEEDED)
        elif self._stopping or rc == EXIT_INTERRUPTED:
            self.store.requeue(job_id, "server stopping; the job resumes from its last checkpoint",
                               count_attempt=False)
        elif rc == EXIT_BAD_INPUT:
            self.store.set_state(job_id, FAILED, self._last_error(job_id) or "bad input")
        else:
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            tail = " | ".join(self._log_tail(job_id, 5))
            self.store.set_state(job_id, FAILED, f"worker {how}; last log lines: {tail}")
        log.info("job %s worker exited with %s", job_id, rc)
        self.wake()

    def _last_error(self, job_id: str) -> str:
        for line in reversed(self._log_tail(job_id, 2000)):
            line = re.sub(r"^\[rank\d+\]:\s*", "", line)  # torchrun's prefix in a multi-GPU job
            if line.startswith("edgetune: error: "):
                return line.removeprefix("edgetune: error: ")
        return ""

    def _log_tail(self, job_id: str, n: int) -> list[str]:
        path = (self.export_dir(job_id) if _is_export(job_id) else self.job_dir(job_id)) / "worker.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 262144))  # a multi-GPU job's other processes log after rank 0
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return [line.strip() for line in lines if line.strip()][-n:]
