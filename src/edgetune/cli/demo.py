"""The main job on embedded defaults, through the service: start a server (SQLite + local disk),
then over gRPC upload scikit-learn's digits, fine-tune the packaged ImageNet EfficientNet-Lite0,
watch it, export with the parity gate, download the bundle and predict.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from edgetune.errors import InvalidArgument
from edgetune.export.bundle import held_out_inputs, held_out_paths
from edgetune.export.parity import parity_line
from edgetune.runtime.sessions import create_session
from edgetune.export.latency import measure_latency
from edgetune.progress import LogLine, ProgressSink
from edgetune.trainers.run import load_run
from edgetune.cli.remote import job_event
from edgetune.progress import format_duration
from edgetune.v1 import jobs_pb2

from edgetune.server.service import EdgetuneService, ServerConfig
from edgetune.server.transport.client import EdgetuneClient
from edgetune.server.transport.grpc_app import RunningServer


def _prepare(workdir: Path) -> None:
    marker = workdir / ".edgetune-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.is_file():
            raise InvalidArgument("--workdir", f"{workdir} is not empty and not an earlier demo's folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _latency(run_dir: str, model_path: str) -> tuple[float, float]:
    """Batch-1 eager vs ONNX Runtime on a held-out image (CPU), side by side."""
    model = load_run(run_dir)
    lat = measure_latency(model.model, create_session(model_path, "cpu"),
                          held_out_inputs(Path(run_dir), model.preprocessing)[:1])
    return lat.eager_ms, lat.ort_ms


def run_demo(workdir: str | Path, progress: ProgressSink, epochs: int = 3, image_size: int = 64) -> dict:
    """Run the whole path through a local server and return the figures it printed."""
    from edgetune.trainers.data.digits import write_digits_imagefolder

    t0 = time.monotonic()
    workdir = Path(workdir)
    _prepare(workdir)
    digits = write_digits_imagefolder(workdir / "digits")
    data_dir = workdir / "server"
    server = RunningServer(EdgetuneService(ServerConfig(data_dir=data_dir, slots=1)), "127.0.0.1", 0, False)
    server.start()
    progress(LogLine(f"edgetune server on 127.0.0.1:{server.port} (SQLite + local disk in {data_dir})"))
    client = EdgetuneClient(f"127.0.0.1:{server.port}")
    try:
        client.wait_ready()
        ds = client.upload_dataset(digits, name="sklearn-digits")
        progress(LogLine(f"uploaded {ds.id}: {len(ds.report.classes)} classes, "
                         f"{sum(c.train + c.val for c in ds.report.classes)} images ({ds.report.split} split)"))
        job = client.create_job(ds.id, "efficientnet_lite0", "full", "catalog", epochs=epochs, image_size=image_size)
        progress(LogLine(f"created {job.id}: efficientnet_lite0 (ImageNet weights from the local catalog), full"))
        for event in client.watch(job.id):
            if event.WhichOneof("kind") != "log" or not event.log.startswith("run:"):
                progress(job_event(event, epochs))
        job = client.get_job(job.id)
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job {job.id} ended {jobs_pb2.JobState.Name(job.state)}: {job.error}")
        progress(LogLine(f"job {job.id} succeeded: best epoch {job.best.epoch}, val macro-F1 "
                         f"{job.best.val_macro_f1:.4f}; exporting to ONNX and checking parity with PyTorch"))
        exp = client.export(job.id)
        parity = MessageToDict(exp.parity, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        parity["top1_agreement"] = exp.parity.top1_agreement if exp.parity.top1_compared else None
        if not exp.valid:
            raise RuntimeError(f"export {exp.id} failed its parity gate: {exp.error}")
        bundle = client.download(exp.id, workdir / "bundles")
        progress(LogLine(f"export {exp.id} valid; bundle downloaded to {bundle}; predicting over gRPC"))

        run_dir = data_dir / "jobs" / job.id / "run"  # the demo shares the server's disk
        held = held_out_paths(run_dir)  # validation images the model never trained on
        samples = [held[i] for i in (0, len(held) // 2, len(held) - 1)]
        results = client.predict(exp.id, [Path(p).read_bytes() for p in samples], top_k=3)
        one = Path(samples[0]).read_bytes()
        for _ in range(5):
            client.predict(exp.id, [one], top_k=1)
        rpc_ms = []
        for _ in range(30):
            t = time.perf_counter()
            client.predict(exp.id, [one], top_k=1)
            rpc_ms.append((time.perf_counter() - t) * 1000)
    finally:
        client.close()
        server.stop(5)
    progress(LogLine("measuring batch-1 latency, PyTorch eager vs ONNX Runtime, in a fresh process"))
    # In a fresh process: this one's thread pools (gRPC, ONNX Runtime, torch from the export) would
    # otherwise slow eager PyTorch down several-fold and flatter the comparison.
    code = ("import json, sys; from edgetune.cli.demo import _latency; "
            "print(json.dumps(_latency(sys.argv[1], sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, str(run_dir), str(bundle / "model.onnx")],
                         capture_output=True, text=True, check=True).stdout
    eager_ms, ort_ms = json.loads(out.strip().splitlines()[-1])
    total = time.monotonic() - t0
    lines = _summary(job, epochs, parity, image_size, eager_ms, ort_ms, rpc_ms, samples, results)
    lines.append(f"bundle: {bundle}  (total {format_duration(total)})")
    progress(LogLine("\n".join(lines)))
    return {"accuracy": job.best.val_accuracy, "macro_f1": job.best.val_macro_f1, "parity": parity,
            "eager_ms": eager_ms, "ort_ms": ort_ms, "seconds": total, "bundle": str(bundle)}


def _summary(job, epochs: int, parity: dict, image_size: int, eager_ms: float, ort_ms: float, rpc_ms: list[float],
             samples: list[str], results) -> list[str]:
    lines = ["", "=== edgetune demo (through the gRPC service) ===",
             f"val accuracy {job.best.val_accuracy:.4f}, macro-F1 {job.best.val_macro_f1:.4f} "
             f"(best epoch {job.best.epoch} of {epochs})",
             parity_line(parity),
             f"latency batch 1 ({image_size}px, CPU): PyTorch eager {eager_ms:.2f} ms, ONNX Runtime "
             f"{ort_ms:.2f} ms ({eager_ms / ort_ms:.1f}x); Predict over gRPC p50 {statistics.median(rpc_ms):.2f} ms"]
    for path, r in zip(samples, results):
        lines.append(f"predict {Path(path).parent.name}/{Path(path).name}: "
                     + ", ".join(f"{t.label} {t.score:.3f}" for t in r.top))
    return lines
