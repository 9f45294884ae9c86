"""One job on several processes (DDP through torchrun, gloo on CPU): the same weights as one process
with the same global batch, and an exact resume after SIGTERM or SIGKILL of the whole job."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from edgetune.trainers.config import load_config
from tests.conftest import write_pattern_folder

ROOT = Path(__file__).resolve().parents[2]
BATCH = 10  # 51 training images: global batches of 10, 10, 10, 10 and 11 (a tail of 1 is folded in)
STEPS_PER_EPOCH = 5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return (write_pattern_folder(root / "train", per_class=17, size=32),
            write_pattern_folder(root / "val", per_class=4, size=32, seed=1))


def _cli(out: Path, data, *extra: str) -> subprocess.CompletedProcess:
    train, val = data
    # ViT-Tiny: LayerNorm and no dropout, so no per-process batch statistics; augmentation stays on.
    # SGD: AdamW divides by sqrt(v), which turns the last-bit rounding of a near-zero gradient
    # (a sum over processes is rounded differently from a sum over one batch) into a visible step.
    cmd = [sys.executable, "-m", "edgetune.cli", "train", "image", "--data", str(train), "--val-data", str(val),
           "--model", "vit_tiny_patch16_224", "--weights", "random", "--image-size", "32", "--epochs", "2",
           "--batch-size", str(BATCH), "--optimizer", "sgd", "--lr", "0.05", "--device", "cpu", "--out", str(out),
           "--set", "optim.grad_accum=2", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_two_processes_train_the_same_weights_as_one(tmp_path, data):
    one = _cli(tmp_path / "one", data)
    two = _cli(tmp_path / "two", data, "--gpus", "2")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "x 2 processes (DDP)" in two.stderr and "x 2 processes" not in one.stderr
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    # Rank 0 alone wrote the run: one report, one history of two epochs.
    report = (tmp_path / "two" / "report.json").read_text()
    assert '"epoch": 2' in report and sorted(p.name for p in (tmp_path / "two").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one").iterdir())


def _config(tmp_path, data) -> Path:
    train, val = data
    cfg = load_config(overrides={
        "data.path": str(train), "data.val_path": str(val), "data.image_size": 32, "model.arch": "vit_tiny_patch16_224",
        "model.weights": "random", "optim.epochs": 2, "optim.batch_size": BATCH, "optim.optimizer": "sgd",
        "optim.lr": 0.05, "checkpoint_every": 2, "log_every": 1, "device": "cpu"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _job(config: Path, out: Path, resume: bool) -> subprocess.Popen:
    """The DDP job (2 processes) through ``edgetune.launch``, in its own process group."""
    args = ["tests.trainers.resume_driver", str(config), str(out)] + (["--resume"] if resume else [])
    code = f"import sys; from edgetune.launch import launch; sys.exit(launch(2, {args!r}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def _signal_at(proc: subprocess.Popen, global_step: int, sig: int) -> int:
    for line in proc.stdout:
        if line.startswith("step "):
            epoch, step = map(int, line.split()[1:])
            if (epoch - 1) * STEPS_PER_EPOCH + step >= global_step:
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)  # the launcher, torchrun and both training processes
                else:
                    proc.send_signal(sig)  # the launcher passes it on; the processes stop together
                break
    proc.stdout.read()
    return proc.wait(timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data) -> tuple[Path, Path]:
    """(config, run) of the DDP job never stopped."""
    tmp = tmp_path_factory.mktemp("whole")
    config = _config(tmp, data)
    assert _job(config, tmp / "whole", False).wait(timeout=300) == 0
    return config, tmp / "whole"


@pytest.mark.parametrize("sig,at", [(signal.SIGTERM, 3), (signal.SIGKILL, 8)])
def test_a_ddp_job_stopped_or_killed_resumes_to_the_same_weights(tmp_path, uninterrupted, sig, at):
    config, whole = uninterrupted
    cut = _job(config, tmp_path / "cut", False)
    rc = _signal_at(cut, at, sig)
    assert rc == (75 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert (tmp_path / "cut" / "state" / "last.pt").is_file()
    assert not (tmp_path / "cut" / "report.json").exists()  # it did stop mid-run: no process lived on
    state = torch.load(tmp_path / "cut" / "state" / "last.pt", weights_only=True)
    assert len(state["process_rngs"]) == 2
    resumed = _job(config, tmp_path / "cut", True)
    assert resumed.wait(timeout=300) == 0
    a, b = _weights(whole), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_instruction_tuning_on_two_processes_weights_tokens_as_one(tmp_path):
    """The loss is a mean over response tokens: each process's share is weighted by its token count
    (summed across processes every step); batches are length-grouped; tiny Llama has no dropout."""
    from tests.conftest import write_reverse_pairs

    data = write_reverse_pairs(tmp_path / "pairs.jsonl", rows=90)
    runs = {}
    for name, extra in (("one", []), ("two", ["--gpus", "2"])):
        cmd = [sys.executable, "-m", "edgetune.cli", "train", "text", "--task", "generation", "--data", str(data),
               "--model", "llama", "--weights", "random", "--epochs", "1", "--batch-size", "7", "--optimizer", "sgd",
               "--lr", "0.03", "--device", "cpu", "--max-length", "48", "--set", "data.group_by_length=true",
               "--out", str(tmp_path / name), *extra]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = _weights(tmp_path / name)
    for k in runs["one"]:
        torch.testing.assert_close(runs["one"][k], runs["two"][k], atol=1e-6, rtol=0)
