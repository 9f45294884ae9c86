"""The image recipe end to end on small real files (random-init models, CPU)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from edgetune.errors import DataError, InvalidArgument
from edgetune.progress import EpochEnd
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.image_classification import train_image
from edgetune.trainers.run import load_run
from tests.conftest import write_pattern_folder


def _cfg(data, **over):
    base = {"data.path": str(data), "data.image_size": 32, "model.arch": "resnet18", "model.weights": "random",
            "optim.epochs": 2, "optim.batch_size": 8, "data.val_fraction": 0.25}
    base.update(over)
    return load_config(overrides=base)


def test_run_writes_checkpoint_report_and_plots(pattern_folder, tmp_path):
    events = []
    result = train_image(_cfg(pattern_folder, **{"optim.lr": 3e-3}), tmp_path / "run", events.append)
    run = tmp_path / "run"
    for name in ("config.yaml", "model.safetensors", "model.json", "report.json", "curves.png",
                 "confusion.png", "state/last.pt", "parity_samples.safetensors"):
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["weights"]["source"] == "random init (no pretrained weights)"
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"} <= set(report["history"][0])
    cm = report["final"]["confusion_matrix"]
    assert sum(map(sum, cm)) == 9 and len(report["final"]["per_class"]) == 3
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [1, 2]
    # The saved best checkpoint reproduces the reported validation metric.
    best = load_run(run)
    assert best.classes == ["a", "b", "c"] and best.preprocessing.size == 32
    assert result.metrics["accuracy"] == pytest.approx(
        report["history"][result.best_epoch - 1]["val_accuracy"])


def test_existing_run_is_not_overwritten(pattern_folder, tmp_path):
    train_image(_cfg(pattern_folder, **{"optim.epochs": 1}), tmp_path / "run")
    with pytest.raises(InvalidArgument) as e:
        train_image(_cfg(pattern_folder, **{"optim.epochs": 1}), tmp_path / "run")
    assert e.value.subject == "out"


def test_resume_after_interruption_matches_an_uninterrupted_run(pattern_folder, tmp_path):
    cfg = _cfg(pattern_folder, **{"optim.epochs": 3})
    train_image(cfg, tmp_path / "full")

    def stop_after_first_epoch(event):
        if isinstance(event, EpochEnd) and event.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_image(cfg, tmp_path / "resumed", stop_after_first_epoch)
    result = train_image(cfg, tmp_path / "resumed", resume=True)
    full = json.loads((tmp_path / "full" / "report.json").read_text())
    assert [h["epoch"] for h in result.report["history"]] == [1, 2, 3]
    for a, b in zip(full["history"], result.report["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_early_stopping_stops_when_the_metric_stalls(pattern_folder, tmp_path):
    cfg = _cfg(pattern_folder, **{"optim.epochs": 6, "optim.lr": 1e-12, "optim.early_stopping_patience": 1,
                                  "data.augment": False, "optim.metric": "val_accuracy"})
    result = train_image(cfg, tmp_path / "run")
    assert [h["epoch"] for h in result.report["history"]] == [1, 2]
    assert result.best_epoch == 1


def test_retune_reports_before_and_after_on_the_same_val_set(pattern_folder, tmp_path):
    first = train_image(_cfg(pattern_folder, **{"optim.epochs": 1}), tmp_path / "first")
    second = train_image(_cfg(pattern_folder, **{"model.init_from": str(first.run_dir), "optim.epochs": 1}),
                         tmp_path / "second")
    before, after = second.report["before"], second.report["after"]
    assert before["val_accuracy"] == pytest.approx(first.metrics["accuracy"])
    assert after["val_accuracy"] == pytest.approx(second.metrics["accuracy"])
    assert second.report["weights"]["source"] == f"run {first.run_dir}"

    with pytest.raises(InvalidArgument) as e:
        train_image(_cfg(pattern_folder, **{"model.init_from": str(first.run_dir), "data.image_size": 48}),
                    tmp_path / "resized")
    assert e.value.subject == "data.image_size"

    other = write_pattern_folder(tmp_path / "other", classes=("x", "y", "z"))
    with pytest.raises(DataError, match="differ from the run being re-tuned"):
        train_image(_cfg(other, **{"model.init_from": str(first.run_dir)}), tmp_path / "third")


@pytest.mark.parametrize("arch, method", [("vit_tiny_patch16_224", "lora"), ("mobilenetv3_large_100", "linear_probe"),
                                          ("efficientnet_lite0", "lora")])
def test_adapter_and_probe_runs_save_plain_models(pattern_folder, tmp_path, arch, method):
    cfg = _cfg(pattern_folder, **{"model.arch": arch, "method": method, "optim.epochs": 1,
                                  "optim.grad_accum": 2, "optim.optimizer": "sgd"})
    result = train_image(cfg, tmp_path / "run")
    state = load_file(result.run_dir / "model.safetensors")
    assert not any("lora" in k or "base_model" in k for k in state)
    assert result.report["trainable_params"] < result.report["total_params"]
    load_run(result.run_dir)
