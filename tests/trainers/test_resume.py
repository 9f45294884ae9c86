"""Exact resume: a run stopped (SIGTERM) or killed (SIGKILL, also while it writes its state) at any
step ends with the same weights as an uninterrupted one, bit for bit on CPU."""

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import yaml

from edgetune.trainers.config import load_config

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 7  # 27 training images, batch 4
EPOCHS = 2


def _config(tmp_path, data) -> Path:
    cfg = load_config(overrides={
        "data.path": str(data), "data.image_size": 32, "data.val_fraction": 0.25, "model.arch": "efficientnet_lite0",
        "model.weights": "random", "method": "linear_probe", "optim.epochs": EPOCHS, "optim.batch_size": 4,
        "checkpoint_every": 2, "log_every": 1, "device": "cpu"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _start(config: Path, out: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.trainers.resume_driver", str(config), str(out)]
                            + (["--resume"] if resume else []), cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _stop_at(proc: subprocess.Popen, global_step: int, sig: int) -> int:
    """Send ``sig`` once the run has finished ``global_step`` optimizer steps; its exit code."""
    for line in proc.stdout:
        if line.startswith("step "):
            epoch, step = map(int, line.split()[1:])
            if (epoch - 1) * STEPS_PER_EPOCH + step >= global_step:
                proc.send_signal(sig)
                break
    proc.stdout.read()
    return proc.wait(timeout=120)


def _kill_while_writing_state(proc: subprocess.Popen, state_dir: Path) -> bool:
    """SIGKILL the moment a temp file of the state appears (mid-write); True if it was seen."""
    seen = []

    def watch():
        while proc.poll() is None:
            if state_dir.is_dir() and any(n.startswith(".last.pt.") for n in os.listdir(state_dir)):
                proc.kill()
                seen.append(True)
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    proc.stdout.read()
    proc.wait(timeout=120)
    watcher.join()
    return bool(seen)


def _final(out: Path) -> dict:
    return torch.load(out / "state" / "last.pt", weights_only=True)


def test_stops_and_kills_at_any_step_resume_to_the_same_weights(tmp_path, pattern_folder):
    config = _config(tmp_path, pattern_folder)
    ref = _start(config, tmp_path / "ref", False)
    ref.stdout.read()
    assert ref.wait(timeout=300) == 0

    out = tmp_path / "run"
    total = STEPS_PER_EPOCH * EPOCHS
    kill_steps = sorted(random.Random(0).sample(range(4, total - 1), 2))
    # SIGTERM: the state is saved at the next optimizer step, and the process says it stopped.
    assert _stop_at(_start(config, out, False), 3, 15) == 75
    saved = _final(out)["position"]
    assert saved is not None and saved["step"] >= 3
    for step in kill_steps:  # SIGKILL: resumes from the last periodic checkpoint
        assert _stop_at(_start(config, out, True), step, 9) == -9
    assert _kill_while_writing_state(_start(config, out, True), out / "state")
    last = _start(config, out, True)
    last.stdout.read()
    assert last.wait(timeout=300) == 0

    a, b = _final(tmp_path / "ref"), _final(out)
    assert a["epoch"] == b["epoch"] == EPOCHS and b["position"] is None
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    assert not [p for p in (out / "state").iterdir() if p.name != "last.pt"]  # no temp file left behind
