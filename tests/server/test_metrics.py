"""Operators' view: Prometheus metrics over HTTP (off unless asked, loopback by default) and JSON logs."""

from __future__ import annotations

import json
import os
import stat
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import ServerProcess, client_for


def scrape(url: str) -> dict[str, list]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, name: str, **labels) -> float:
    return next(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_jobs_exports_rpcs_predict_latency_and_uploads(secured):
    env = secured
    assert env["server"].metrics_url.startswith("http://127.0.0.1:")
    dev = client_for(env, "dev")
    for _ in range(3):
        dev.predict(env["export"].id, [env["image"]])
    dev.close()
    m = scrape(env["server"].metrics_url)
    assert value(m["edgetune_jobs"], "edgetune_jobs", state="SUCCEEDED") >= 1
    assert value(m["edgetune_exports"], "edgetune_exports", state="SUCCEEDED") >= 1
    assert value(m["edgetune_jobs_queue_depth"], "edgetune_jobs_queue_depth") == 0
    done = value(m["edgetune_job_duration_seconds"], "edgetune_job_duration_seconds_count", state="SUCCEEDED")
    assert done >= 1 and value(m["edgetune_job_duration_seconds"], "edgetune_job_duration_seconds_sum",
                               state="SUCCEEDED") > 0
    assert value(m["edgetune_inference_seconds"], "edgetune_inference_seconds_count", export=env["export"].id,
                 rpc="Predict") >= 3
    assert value(m["edgetune_rpcs"], "edgetune_rpcs_total", method="/edgetune.v1.Inference/Predict", code="OK") >= 3
    assert value(m["edgetune_upload_bytes"], "edgetune_upload_bytes_total") > 1000
    assert "edgetune_gpu_memory_used_bytes" not in m  # a CPU server


def test_gpu_memory_per_gpu_where_the_server_hands_out_gpus_and_json_logs(tmp_path):
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho '0, GPU-aaa, 1024, 81559'\necho '1, GPU-bbb, 2048, 81559'\n"
                    "echo '2, GPU-ccc, 9, 81559'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    server = ServerProcess(tmp_path / "data", "--gpus", "0,GPU-bbb", "--metrics-port", "0", "--log-format", "json")
    os.environ["PATH"], old = f"{tool.parent}:{os.environ['PATH']}", os.environ["PATH"]
    try:
        server.start()
    finally:
        os.environ["PATH"] = old
    try:
        m = scrape(server.metrics_url)
        used = {s.labels["gpu"]: s.value for s in m["edgetune_gpu_memory_used_bytes"]}
        assert used == {"0": 1024 * 2**20, "GPU-bbb": 2048 * 2**20}  # only the GPUs it hands out
        assert {s.labels["job"] for s in m["edgetune_gpu_memory_used_bytes"]} == {""}
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(d["message"].startswith("stopping") and d["level"] == "INFO" for d in lines)
    assert all(set(d) >= {"time", "level", "logger", "message"} for d in lines)


def test_metrics_are_off_unless_asked(server):
    assert not hasattr(server, "metrics_url")
