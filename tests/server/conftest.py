"""A real server process on a free loopback port, with its own data dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgetune.server.transport.client import EdgetuneClient


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str):
        self.data_dir, self.extra = data_dir, extra
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, port: int = 0) -> "ServerProcess":
        self._logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgetune.cli", "serve", "--port", str(port), "--data-dir", str(self.data_dir),
             "--slots", "1", "--grace", "5", *self.extra],
            stdout=subprocess.PIPE, stderr=self._logf, text=True,
            env={**{k: v for k, v in os.environ.items() if k != "EDGETUNE_CATALOG"}, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"serving on [\d.]+:(\d+)", line or "")
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
        else:
            raise RuntimeError("server did not start")
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> EdgetuneClient:
        c = EdgetuneClient(self.target)
        c.wait_ready()
        return c

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode


@pytest.fixture
def server(tmp_path):
    s = ServerProcess(tmp_path / "data").start()
    yield s
    s.stop()
