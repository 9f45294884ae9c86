"""A real server process on a free loopback port, with its own data dir."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from edgetune.server.transport.client import EdgetuneClient
from tests.conftest import write_pattern_folder
from tests.server.certs import CA


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A zip archive of (name, bytes) entries, made in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None):
        self.data_dir, self.extra, self.env = data_dir, extra, env or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, port: int = 0) -> "ServerProcess":
        self._logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgetune.cli", "serve", "--port", str(port), "--data-dir", str(self.data_dir),
             "--slots", "1", "--grace", "5", *self.extra],
            stdout=subprocess.PIPE, stderr=self._logf, text=True,
            env={**{k: v for k, v in os.environ.items() if k != "EDGETUNE_CATALOG"}, "PYTHONUNBUFFERED": "1",
                 **self.env})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"serving on [\d.]+:(\d+)", line or "")
            metrics = re.search(r"metrics on (\S+)", line or "")
            if metrics:
                self.metrics_url = metrics.group(1)
            if m:
                self.port = int(m.group(1))
            if self.port and ("--metrics-port" not in self.extra or hasattr(self, "metrics_url")):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
        else:
            raise RuntimeError("server did not start")
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **security) -> EdgetuneClient:
        """A client once health says SERVING; ``security``: EdgetuneClient's token and TLS files."""
        c = EdgetuneClient(self.target, **security)
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


TINY = dict(base_model="resnet18", weights="random", epochs=1, image_size=32, batch_size=8)
PRINCIPALS = {"alice": "jobs,inference", "bob": "jobs", "dev": "inference", "root": "admin"}


def add_token(file, name: str, scopes: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "token", "add", name, "--scopes", scopes,
                          "--file", str(file)], capture_output=True, text=True, check=True)
    assert str(file) in out.stderr and name in out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="session")
def secured(tmp_path_factory):
    """A server with tokens and TLS (reflection on), four principals (PRINCIPALS), and alice's
    dataset, finished job and export: shared by the security and Open Inference Protocol tests."""
    tmp = tmp_path_factory.mktemp("secured")
    ca = CA(tmp / "pki")
    cert = ca.issue("server", "localhost", server=True)
    tokens = {name: add_token(tmp / "tokens.yaml", name, scopes) for name, scopes in PRINCIPALS.items()}
    server = ServerProcess(tmp / "data", "--auth-tokens", str(tmp / "tokens.yaml"), "--tls-cert", str(cert.cert),
                           "--tls-key", str(cert.key), "--reflection", "--metrics-port", "0").start()
    alice = server.client(token=tokens["alice"], tls_ca=ca.pem, server_name="localhost")
    ds = alice.upload_dataset(write_pattern_folder(tmp / "pat"), name="patterns")
    job = alice.create_job(ds.id, **TINY)
    list(alice.watch(job.id))
    exp = alice.export(job.id)
    assert exp.valid, exp.error
    yield dict(server=server, ca=ca, tokens=tokens, tmp=tmp, dataset=ds, job=job, export=exp,
               image=sorted((tmp / "pat" / "a").glob("*.png"))[0].read_bytes())
    alice.close()
    server.stop()


def client_for(env, name: str | None) -> EdgetuneClient:
    return EdgetuneClient(env["server"].target, token=env["tokens"][name] if name else None,
                          tls_ca=env["ca"].pem, server_name="localhost")
