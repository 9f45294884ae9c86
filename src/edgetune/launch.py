"""Starting one training job as K processes through torchrun (torch-free: the CLI and the server's
workers call it before anything imports torch).

The processes run the same entry point (``edgetune train ...``, a server worker) and find their place
in the job from torchrun's environment (``trainers/distributed.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

EXIT_FILE_ENV = "EDGETUNE_EXIT_FILE"


def launch_command(processes: int, module_args: list[str]) -> list[str]:
    """torchrun running ``python -m MODULE ARGS`` as ``processes`` processes of one job on this node
    (c10d rendezvous on a free local port). Spanning nodes later means the same command on each
    node with ``--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id JOB`` in place of
    ``--standalone``: the processes read only torchrun's environment."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", *module_args]


EXIT_STOPPED = 75  # what a process that saved its state at SIGTERM exits with (EX_TEMPFAIL)
RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
            "MASTER_PORT", "TORCHELASTIC_RUN_ID")
SHUTDOWN_TIMEOUT_S = 300  # torchrun's wait for processes to stop at SIGTERM (save their state) before SIGKILL


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent process dies (a launcher or torchrun killed outright), so
    no orphan keeps training, holding a GPU and writing the run; exits at once if it already died."""
    ppid = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != ppid:  # the parent died before the request took effect
        os._exit(1)


def launch(processes: int, module_args: list[str]) -> int:
    """Run ``launch_command`` and return rank 0's exit code (torchrun only says whether any process
    failed: a stop at SIGTERM, 75, and bad input, 2, would both read as 1).

    SIGTERM is passed on to torchrun, which passes it to every process (and waits up to
    ``SHUTDOWN_TIMEOUT_S`` for them to save their state); a Ctrl-C reaches torchrun from the
    terminal. torchrun dies with this process, and the training processes with torchrun. A stop
    (75) is reported only when a SIGTERM came through here: a process that failed makes torchrun
    stop the others, and that is the failure's exit code, not a stop.
    """
    stops = []
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _frame: stops.append(signum)),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    env = {k: v for k, v in os.environ.items() if k not in RANK_ENV}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))  # torchrun's default: 1
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    try:
        with tempfile.TemporaryDirectory(prefix="edgetune-launch-") as tmp:
            exit_file = Path(tmp) / "rank0.exit"
            proc = subprocess.Popen(launch_command(processes, module_args), preexec_fn=die_with_parent,
                                    env={**env, EXIT_FILE_ENV: str(exit_file)})
            signal.signal(signal.SIGTERM, lambda signum, _frame: (stops.append(signum), proc.send_signal(signum)))
            if stops:  # arrived while it was starting
                proc.send_signal(signal.SIGTERM)
            rc = proc.wait()
            rc = rc if rc >= 0 else 128 - rc  # killed by a signal: as a shell reports it
            try:
                code = int(exit_file.read_text())
            except (OSError, ValueError):
                return rc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code == EXIT_STOPPED and not stops:
        return rc or 1
    return code if code or not rc else rc


def record_exit(code: int) -> int:
    """Rank 0 of a ``launch``ed job leaves its exit code for the launcher; returns ``code``."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path and os.environ.get("RANK", "0") == "0":
        Path(path).write_text(str(code))
    return code
