"""The `edgetune` command: bad input gives one line and exit 2; the real path works end to end."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import save_file

from edgetune.cli.main import main
from edgetune.trainers.models.image import create_model
from tests.conftest import write_pattern_folder


def _train_args(data, out, *extra):
    return ["train", "image", "--data", str(data), "--out", str(out), "--image-size", "32",
            "--weights", "random", "--model", "resnet18", "--epochs", "1", *extra]


def _one_line_error(capsys, code, expect_code=2):
    """Progress lines may precede it, but the error is exactly one line, last, with no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expect_code
    errors = [line for line in err if line.startswith("edgetune: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err)
    return errors[0]


@pytest.fixture
def bad_weights(tmp_path):
    path = tmp_path / "r50.safetensors"
    save_file(create_model("resnet50", 10, 32).state_dict(), path)
    return path


@pytest.mark.parametrize("case, expect", [
    ("unknown_arch", "model.arch"),
    ("lr_zero", "optim.lr"),
    ("epochs_zero", "optim.epochs"),
    ("one_class", "need at least 2 classes"),
    ("empty_class", "empty"),
    ("corrupt", "broken.png"),
    ("bad_weights", "r50.safetensors"),
    ("missing_data", "/nonexistent"),
])
def test_bad_input_is_one_line_and_exit_2(case, expect, tmp_path, capsys, bad_weights):
    data = write_pattern_folder(tmp_path / "data")
    out = tmp_path / "run"
    args = {
        "unknown_arch": _train_args(data, out, "--model", "resnet9000"),
        "lr_zero": _train_args(data, out, "--lr", "0"),
        "epochs_zero": _train_args(data, out, "--epochs", "0"),
        "one_class": _train_args(write_pattern_folder(tmp_path / "one", classes=("x",)), out),
        "empty_class": _train_args(data, out),
        "corrupt": _train_args(data, out),
        "bad_weights": _train_args(data, out, "--weights", str(bad_weights)),
        "missing_data": _train_args("/nonexistent/data", out),
    }[case]
    if case == "empty_class":
        (data / "empty").mkdir()
    if case == "corrupt":
        (data / "a" / "broken.png").write_bytes(b"not an image")
    line = _one_line_error(capsys, main(args))
    assert expect in line


def test_errors_exit_2_without_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "image", "--data", str(tmp_path),
                           "--out", str(tmp_path / "r"), "--lr", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "edgetune: error: optim.lr: must be in (0, 10.0], got -1.0"


def test_gpus_beyond_the_machine_or_below_one_is_one_line_and_exit_2(tmp_path, capsys):
    from edgetune.runtime.sessions import cuda_device_count

    args = ["train", "image", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    line = _one_line_error(capsys, main(args + ["--gpus", str(max(2, cuda_device_count() + 1))]))
    assert line.startswith("edgetune: error: --gpus:") and "GPUs asked for, this machine has" in line
    assert "must be at least 1" in _one_line_error(capsys, main(args + ["--gpus", "0"]))


def test_export_and_predict_errors(tmp_path, capsys):
    assert "not a finished run" in _one_line_error(capsys, main(["export", str(tmp_path), "--out", str(tmp_path / "b")]))
    assert "no manifest.json" in _one_line_error(capsys, main(["predict", str(tmp_path), "x.png"]))


@pytest.mark.slow
def test_digits_end_to_end_through_the_cli(digits_folder, tmp_path, capsys):
    """Real weights, real data: fine-tune EfficientNet-Lite0 on digits, export, verify, predict."""
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert main(["train", "image", "--data", str(digits_folder), "--model", "efficientnet_lite0",
                 "--method", "full", "--image-size", "48", "--epochs", "2", "--out", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["weights"]["source"].startswith("catalog efficientnet_lite0.imagenet")
    assert report["final"]["accuracy"] > 0.85  # chance is 0.10
    assert report["final"]["macro_f1"] > 0.85

    assert main(["export", str(run), "--out", str(bundle), "--precision", "fp32,int8"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["valid"] and manifest["parity"]["passed"] and manifest["parity"]["margin"] <= 1
    assert manifest["parity"]["top1_agreement"] == 1.0 and manifest["parity"]["top1_compared"] > 0
    # ImageNet-pretrained EfficientNet-Lite0, static INT8: the held-out gate passes.
    int8 = manifest["variants"]["int8"]["gate"]
    assert int8["passed"] and int8["drop_pt"]["accuracy"] <= 1.0 and int8["top1_agreement"] >= 0.98
    assert "int8" in capsys.readouterr().out  # the variants table

    capsys.readouterr()
    images = [str(p) for p in sorted((digits_folder / "4").glob("*.png"))[:5]]
    for variant in ("fp32", "int8"):
        assert main(["predict", str(bundle), *images, "--top-k", "3", "--json", "--variant", variant]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows) == 5 and all(len(r["top"]) == 3 for r in rows)
        assert sum(r["top"][0]["label"] == "4" for r in rows) >= 4


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0.imagenet (available)" in out and "vit_base_patch16_224" in out


@pytest.mark.parametrize("case, expect", [
    ("image_arch", "model.arch: unknown text architecture 'resnet18'"),
    ("missing_column", "lacks column(s) ['text']"),
    ("empty_row", "row 2: 'text' is empty"),
    ("method_for_task", "argument --method"),
    ("max_length", "data.max_length"),
])
def test_text_bad_input_is_one_line_and_exit_2(case, expect, tmp_path, capsys):
    from tests.conftest import write_topic_texts

    data = write_topic_texts(tmp_path / "t.jsonl")
    out = str(tmp_path / "run")
    base = ["train", "text", "--weights", "random", "--out", out, "--epochs", "1"]
    if case == "missing_column":
        (tmp_path / "c.csv").write_text("message,label\nhi,a\n")
        data = tmp_path / "c.csv"
    if case == "empty_row":
        (tmp_path / "e.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "", "label": "y"}\n')
        data = tmp_path / "e.jsonl"
    extra = {"image_arch": ["--model", "resnet18"], "method_for_task": ["--method", "dora"],
             "max_length": ["--max-length", "4"]}.get(case, [])
    if case == "method_for_task":
        with pytest.raises(SystemExit) as e:
            main(base + ["--data", str(data)] + extra)
        assert e.value.code == 2 and expect in capsys.readouterr().err
        return
    line = _one_line_error(capsys, main(base + ["--data", str(data)] + extra))
    assert expect in line


def test_text_train_export_predict_and_generate_through_the_cli(tmp_path, capsys):
    from tests.conftest import write_reverse_pairs, write_topic_texts

    data = write_topic_texts(tmp_path / "t.jsonl")
    assert main(["train", "text", "--data", str(data), "--weights", "random", "--method", "full",
                 "--epochs", "4", "--batch-size", "16",
                 "--lr", "0.01", "--max-length", "24", "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "b"), "pizza pasta oven bread", "--top-k", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["text"] == "pizza pasta oven bread" and out["top"][0]["label"] == "food"

    pairs = write_reverse_pairs(tmp_path / "r.jsonl", rows=60)
    assert main(["train", "text", "--task", "generation", "--data", str(pairs), "--weights", "random",
                 "--method", "lora", "--epochs", "1", "--out", str(tmp_path / "gen")]) == 0
    # One epoch of a tiny random decoder may answer every prompt alike: consent, recorded if used.
    degenerate = json.loads((tmp_path / "gen" / "report.json").read_text())["degenerate"]
    assert main(["export", str(tmp_path / "gen"), "--out", str(tmp_path / "gb"), "--device", "cpu",
                 "--allow-degenerate"]) == 0
    assert ("exported despite: degenerate" in capsys.readouterr().out) == bool(degenerate)
    assert main(["generate", str(tmp_path / "gb"), "reverse: red cat sun", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_export_refuses_degenerate_and_unfinished_runs_without_consent(tmp_path, capsys):
    from tests.conftest import write_identical_folder, write_pattern_folder

    same = write_identical_folder(tmp_path / "same")
    args = ["--model", "resnet18", "--weights", "random", "--image-size", "32", "--batch-size", "8"]
    assert main(["train", "image", "--data", str(same), *args, "--epochs", "1", "--out", str(tmp_path / "dead")]) == 0
    assert "WARNING: degenerate model: validation outputs are constant" in capsys.readouterr().out
    line = _one_line_error(capsys, main(["export", str(tmp_path / "dead"), "--out", str(tmp_path / "b1")]))
    assert "degenerate" in line and "--allow-degenerate" in line
    assert main(["export", str(tmp_path / "dead"), "--out", str(tmp_path / "b1"), "--allow-degenerate"]) == 0
    assert "exported epoch 1 of 1; exported despite: degenerate" in capsys.readouterr().out

    # A run stopped after its first of three epochs (as a killed job leaves it): no final report yet.
    data = write_pattern_folder(tmp_path / "pat")
    assert main(["train", "image", "--data", str(data), *args, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    (tmp_path / "r" / "report.json").unlink()
    config = tmp_path / "r" / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 3"))
    line = _one_line_error(capsys, main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "b2")]))
    assert "training has not finished" in line and "epoch 1 of 3" in line and "--allow-unfinished" in line
    assert main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "b2"), "--allow-unfinished"]) == 0
    assert "exported epoch 1 of 3 (training had not finished); exported despite: unfinished" in capsys.readouterr().out
