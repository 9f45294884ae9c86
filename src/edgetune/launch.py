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


def launch(processes: int, module_args: list[str], preexec_fn=None) -> int:
    """Run ``launch_command`` and return rank 0's exit code (torchrun only says whether any process
    failed: a stop at SIGTERM, 75, and bad input, 2, would both read as 1). SIGTERM and SIGINT are
    passed on to torchrun, which passes them to every process."""
    with tempfile.TemporaryDirectory(prefix="edgetune-launch-") as tmp:
        exit_file = Path(tmp) / "rank0.exit"
        proc = subprocess.Popen(launch_command(processes, module_args), preexec_fn=preexec_fn,
                                env={**os.environ, EXIT_FILE_ENV: str(exit_file)})
        forward = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum))
                   for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            rc = proc.wait()
        finally:
            for s, handler in forward.items():
                signal.signal(s, handler)
        try:
            return int(exit_file.read_text())
        except (OSError, ValueError):
            return rc


def record_exit(code: int) -> int:
    """Rank 0 of a ``launch``ed job leaves its exit code for the launcher; returns ``code``."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path and os.environ.get("RANK", "0") == "0":
        Path(path).write_text(str(code))
    return code
