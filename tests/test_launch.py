"""``edgetune.launch``: a job's processes through torchrun, and the exit code that comes back."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _launch(mode: str) -> int:
    code = f"import sys; from edgetune.launch import launch; sys.exit(launch(2, ['tests.launch_probe', {mode!r}]))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120).returncode


def test_a_failing_process_fails_the_job_even_when_rank_0_reports_a_stop():
    """torchrun stops rank 0 with SIGTERM when rank 1 fails; that is the failure, not a stop (75),
    which the server would re-queue without counting an attempt."""
    rc = _launch("follower-fails")
    assert rc not in (0, 75)


def test_a_job_whose_processes_all_succeed_exits_0():
    assert _launch("ok") == 0
