"""Hostile files a run or bundle may hold: each is refused with one `edgetune: error:` line and exit 2,
and nothing in it is run or read beyond the bundle."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from edgetune.cli.main import main
from tests.conftest import write_pattern_folder


def _one_line_error(capsys, code: int) -> str:
    """Progress lines may precede it, but the error is exactly one line, last, with no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    errors = [line for line in err if line.startswith("edgetune: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run: ResNet-18 (random init) trained one epoch on 36 images of 32 px."""
    root = tmp_path_factory.mktemp("cli_errors")
    data = write_pattern_folder(root / "data")
    assert main(["train", "image", "--data", str(data), "--out", str(root / "run"), "--image-size", "32",
                 "--weights", "random", "--model", "resnet18", "--epochs", "1", "--batch-size", "8"]) == 0
    return root / "run"


@pytest.fixture
def run_copy(run_dir, tmp_path, capsys):
    capsys.readouterr()
    return shutil.copytree(run_dir, tmp_path / "run")


class _Payload:
    """Unpickling it would create ``path``: the file's absence shows nothing in the payload ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _bundle(folder, model: bytes):
    """An image bundle around ``model`` whose manifest hashes match it, so verification passes and
    loading the model is what must refuse it."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(model)
    manifest = {"format": "edgetune.bundle/v1", "valid": True, "task": "image_classification", "labels": ["a", "b"],
                "preprocessing": {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
                "inputs": [{"name": "pixel_values"}],
                "files": {"model.onnx": {"sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model)}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _image(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    return str(tmp_path / "x.png")


def test_resume_refuses_a_pickled_state(run_copy, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(marker)}, run_copy / "state" / "last.pt")
    line = _one_line_error(capsys, main(["train", "image", "--resume", str(run_copy)]))
    assert line.startswith(f"edgetune: error: {run_copy / 'state' / 'last.pt'}: refused: not a weights-only")
    assert not marker.exists()


def test_python_yaml_tags_are_refused(run_copy, tmp_path, capsys):
    marker = tmp_path / "ran"
    tagged = f'task: !!python/object/apply:builtins.open ["{marker}", "w"]\n'
    (tmp_path / "c.yaml").write_text(tagged)
    (tmp_path / "deep.yaml").write_text("[" * 100_000)
    for task in ("image", "text"):
        for name, why in (("c.yaml", "not plain YAML: could not determine a constructor for the tag"),
                          ("deep.yaml", "nested too deeply")):
            line = _one_line_error(capsys, main(["train", task, "--config", str(tmp_path / name),
                                                 "--data", str(tmp_path), "--out", str(tmp_path / "new")]))
            assert line.startswith(f"edgetune: error: config: cannot read {tmp_path / name}: {why}"), line
    (run_copy / "config.yaml").write_text(tagged)
    for argv in (["train", "image", "--resume", str(run_copy)],
                 ["export", str(run_copy), "--out", str(tmp_path / "b")]):
        line = _one_line_error(capsys, main(argv))
        assert line.startswith(f"edgetune: error: {run_copy / 'config.yaml'}: not plain YAML")
    assert not marker.exists()


def test_predict_refuses_a_model_with_external_data(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper

    for i, location in enumerate(("../../etc/passwd", "/etc/passwd", "weights.bin")):
        weight = numpy_helper.from_array(np.zeros(2, np.float32), "w")
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["logits"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2])], [weight])
        model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 20)])
        bundle = _bundle(tmp_path / f"b{i}", model.SerializeToString())
        (bundle / "weights.bin").write_bytes(bytes(8))  # in the bundle, yet not hashed by its manifest
        line = _one_line_error(capsys, main(["predict", str(bundle), _image(tmp_path), "--device", "cpu"]))
        assert line == (f"edgetune: error: {bundle / 'model.onnx'}: refers to external data {location!r}; "
                        "a bundle's model holds its own tensors, so it is not loaded")


def test_predict_refuses_a_random_bytes_model(tmp_path, capsys):
    bundle = _bundle(tmp_path / "b", np.random.default_rng(0).bytes(4096))
    line = _one_line_error(capsys, main(["predict", str(bundle), _image(tmp_path), "--device", "cpu"]))
    assert line.startswith(f"edgetune: error: {bundle / 'model.onnx'}: not an ONNX model")


def test_a_deeply_nested_manifest_is_refused(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("[" * 100_000)
    line = _one_line_error(capsys, main(["predict", str(tmp_path / "b"), _image(tmp_path)]))
    assert line == f"edgetune: error: {tmp_path / 'b' / 'manifest.json'}: unreadable manifest: nested too deeply"


def test_export_refuses_corrupt_run_files_and_predict_bad_manifests(run_copy, tmp_path, capsys):
    weights, marker = run_copy / "model.safetensors", tmp_path / "ran"
    saved = weights.read_bytes()
    torch.save({"conv1.weight": torch.zeros(1), "fc.bias": _Payload(marker)}, tmp_path / "pickled.pt")
    for content in ((tmp_path / "pickled.pt").read_bytes(), os.urandom(4096)):
        weights.write_bytes(content)
        line = _one_line_error(capsys, main(["export", str(run_copy), "--out", str(tmp_path / "b")]))
        assert line.startswith(f"edgetune: error: {weights}: not a readable safetensors file")
    assert not marker.exists()
    weights.write_bytes(saved)
    (run_copy / "model.json").write_text("[" * 100_000)
    line = _one_line_error(capsys, main(["export", str(run_copy), "--out", str(tmp_path / "b")]))
    assert line == f"edgetune: error: {run_copy / 'model.json'}: unreadable: not JSON: nested too deeply"
    (tmp_path / "runs.json").write_text("[" * 100_000)
    line = _one_line_error(capsys, main(["export", "--from", str(tmp_path / "runs.json"), "--out", str(tmp_path)]))
    assert line.endswith("runs.json: not valid JSON (nested too deeply)")

    bundle = _bundle(tmp_path / "bundle", b"")
    for text, why in (("{not json", "unreadable manifest"), ("[1, 2]", "not a JSON object"),
                      (json.dumps({"format": "edgetune.bundle/v1", "valid": True, "task": "image_classification",
                                   "files": {"model.onnx": "x"}}), "files['model.onnx'] is not a file of the bundle")):
        (bundle / "manifest.json").write_text(text)
        line = _one_line_error(capsys, main(["predict", str(bundle), _image(tmp_path)]))
        assert line.startswith(f"edgetune: error: {bundle / 'manifest.json'}: {why}"), line
