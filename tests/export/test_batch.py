"""Batch export: parallel, resumable by export key, one failure never stopping the rest, killed
midway and resumed without redoing finished members."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgetune.cli.main import main
from edgetune.export.batch import EXPORTED, FAILED, UP_TO_DATE, BatchItem, export_batch, read_batch_file
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.image_classification import train_image
from tests.conftest import write_pattern_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs (one trained, copied under other names) and a folder that is not a run."""
    root = tmp_path_factory.mktemp("batch")
    cfg = load_config(overrides={"data.path": str(write_pattern_folder(root / "data")), "data.image_size": 32,
                                 "model.arch": "resnet18", "model.weights": "random", "optim.epochs": 1,
                                 "optim.batch_size": 8})
    first = train_image(cfg, root / "r1").run_dir
    for name in ("r2", "r3"):
        shutil.copytree(first, root / name, ignore=shutil.ignore_patterns("state"))
    (root / "not_a_run").mkdir()
    return root


def _created(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["created"]


def test_one_failure_does_not_stop_the_rest_and_a_rerun_skips_what_is_done(runs, tmp_path):
    items = [BatchItem(runs / name, tmp_path / name) for name in ("r1", "not_a_run", "r2")]
    results = export_batch(items, workers=2)
    assert [r.status for r in results] == [EXPORTED, FAILED, EXPORTED]
    assert results[1].detail.endswith("not a finished run (no model.json / model.safetensors)"), results[1].detail
    created = {n: _created(tmp_path / n) for n in ("r1", "r2")}

    again = export_batch(items, workers=2)
    assert [r.status for r in again] == [UP_TO_DATE, FAILED, UP_TO_DATE]
    assert {n: _created(tmp_path / n) for n in ("r1", "r2")} == created  # not rewritten

    # Other options are another export; a tampered bundle is no longer up to date.
    items[0].precisions = ["fp32", "fp16"]
    (tmp_path / "r2" / "model.onnx").write_bytes(b"tampered")
    third = export_batch([items[0], items[2]], workers=1)
    assert [r.status for r in third] == [EXPORTED, EXPORTED] and "fp16" in third[0].detail


def test_a_killed_batch_resumes_without_redoing_finished_members(runs, tmp_path):
    out = tmp_path / "bundles"
    cmd = [sys.executable, "-m", "edgetune.cli", "export", str(runs / "r1"), str(runs / "r2"), str(runs / "r3"),
           "--out", str(out), "--jobs", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "r1" / "manifest.json").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "r1" / "manifest.json").is_file()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _created(out / "r1")

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{UP_TO_DATE}: {runs / 'r1'}" in done.stdout and "1 up to date" in done.stdout
    assert _created(out / "r1") == first
    assert all((out / n / "manifest.json").is_file() for n in ("r2", "r3"))


def test_the_cli_exits_non_zero_when_any_member_failed(runs, tmp_path, capsys):
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([{"run": str(runs / "r1"), "out": str(tmp_path / "one")},
                                 {"run": str(runs / "not_a_run")}]))
    assert main(["export", "--from", str(batch), "--out", str(tmp_path / "many"), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "1 exported, 0 up to date, 1 failed" in out and (tmp_path / "one" / "manifest.json").is_file()
    lines = tmp_path / "runs.txt"
    lines.write_text(f"# runs to ship\n{runs / 'r1'}\n\n{runs / 'r2'}  # the copy\n")
    items = read_batch_file(lines, tmp_path / "root", {"precisions": ["fp32", "int8"]})
    assert [(i.run, i.out, i.precisions) for i in items] == [
        (runs / "r1", tmp_path / "root" / "r1", ["fp32", "int8"]), (runs / "r2", tmp_path / "root" / "r2", ["fp32", "int8"])]
