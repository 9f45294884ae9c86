"""Export, the parity gate and bundles, in the real ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest
import torch

from edgetune.errors import InvalidArgument, ParityError
from edgetune.export.bundle import export_bundle
from edgetune.export.onnx_export import export_onnx, read_metadata
from edgetune.export.parity import check_parity
from edgetune.export.runtime import BundlePredictor, create_session, verify_bundle
from edgetune.export.specs import EXPORT_SPECS
from edgetune.trainers.architectures import ARCHITECTURES, create_model
from edgetune.trainers.config import load_config
from edgetune.trainers.image import train_image

SPEC = EXPORT_SPECS["image_classification"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import write_pattern_folder

    root = tmp_path_factory.mktemp("export")
    data = write_pattern_folder(root / "data")
    cfg = load_config(overrides={"data.path": str(data), "data.image_size": 32, "model.arch": "resnet18",
                                 "model.weights": "random", "optim.epochs": 2, "optim.batch_size": 8})
    return train_image(cfg, root / "run")


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_exports_with_dynamic_batch_and_passes_parity(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, 5, 32).eval()
    path = export_onnx(model, (torch.randn(2, 3, 32, 32),), SPEC, tmp_path / "m.onnx", {"edgetune.labels": list("abcde")})
    session = create_session(path, "cpu")
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert session.get_inputs()[0].shape[0] == "batch"
    held_out = np.random.default_rng(0).standard_normal((20, 3, 32, 32)).astype(np.float32)
    report = check_parity(model, session, SPEC, held_out)
    assert report.passed and report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert {c.batch_size for c in report.cases} == {1, SPEC.large_batch}
    assert json.loads(read_metadata(path)["edgetune.labels"]) == list("abcde")


def test_parity_gate_fails_on_a_real_mismatch(tmp_path):
    """An ONNX graph whose weights differ slightly from the PyTorch model must be refused."""
    torch.manual_seed(0)
    model = create_model("resnet18", 3, 32).eval()
    path = export_onnx(model, (torch.randn(2, 3, 32, 32),), SPEC, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    # The classifier weight (3 x 512): shifted by 1e-3, an error well above float32 noise.
    init = next(t for t in proto.graph.initializer if list(t.dims) == [3, 512])
    arr = onnx.numpy_helper.to_array(init).copy() + 1e-3
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(path))
    held_out = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ParityError) as e:
        check_parity(model, create_session(path, "cpu"), SPEC, held_out)
    assert not e.value.report.passed and e.value.report.max_abs_diff > SPEC.atol


def test_bundle_is_self_describing_and_verified(trained_run, tmp_path):
    result = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    manifest = verify_bundle(result.dir)
    assert manifest["valid"] and manifest["parity"]["passed"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["top1_agreement"] == 1.0
    assert manifest["labels"] == ["a", "b", "c"]
    assert manifest["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert manifest["outputs"][0]["shape"] == ["batch", 3]
    assert manifest["source_run"]["base_weights"] == "random init (no pretrained weights)"
    assert set(manifest["files"]) == {"model.onnx"} and len(manifest["files"]["model.onnx"]["sha256"]) == 64
    meta = read_metadata(result.dir / "model.onnx")
    assert json.loads(meta["edgetune.labels"]) == ["a", "b", "c"]
    assert json.loads(meta["edgetune.preprocessing"])["size"] == 32
    cases = {c["name"] for c in manifest["parity"]["cases"]}
    assert any("validation" in c for c in cases) and any("random" in c for c in cases)


def test_predictions_match_the_pytorch_checkpoint(trained_run, tmp_path):
    from edgetune.imaging import preprocess_files
    from edgetune.trainers.run import load_run_model

    bundle = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    predictor = BundlePredictor(bundle.dir, device="cpu")
    files = sorted((trained_run.run_dir.parent / "data").glob("*/*.png"))[:6]
    preds = predictor.predict_files(files, top_k=2)
    run = load_run_model(trained_run.run_dir)
    with torch.no_grad():
        ref = run.model(torch.from_numpy(preprocess_files(files, run.preprocessing))).argmax(1)
    assert [p.top[0][0] for p in preds] == [run.classes[i] for i in ref]
    assert all(len(p.top) == 2 and p.top[0][1] >= p.top[1][1] for p in preds)


def test_failed_parity_marks_nothing_valid(trained_run, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(ParityError):
        export_bundle(trained_run.run_dir, out, atol=1e-12)  # real float32 noise exceeds this
    assert not out.exists()
    invalid = json.loads((tmp_path / "bundle.invalid" / "manifest.json").read_text())
    assert invalid["valid"] is False and invalid["parity"]["passed"] is False
    with pytest.raises(InvalidArgument, match="not valid"):
        BundlePredictor(tmp_path / "bundle.invalid")


def test_tampered_bundle_is_refused(trained_run, tmp_path):
    result = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    with open(result.dir / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidArgument, match="sha256"):
        BundlePredictor(result.dir)


def test_existing_bundle_needs_force(trained_run, tmp_path):
    export_bundle(trained_run.run_dir, tmp_path / "bundle")
    with pytest.raises(InvalidArgument) as e:
        export_bundle(trained_run.run_dir, tmp_path / "bundle")
    assert e.value.subject == "out"
    export_bundle(trained_run.run_dir, tmp_path / "bundle", force=True)
    (tmp_path / "notabundle").mkdir()
    (tmp_path / "notabundle" / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidArgument, match="not a bundle"):
        export_bundle(trained_run.run_dir, tmp_path / "notabundle", force=True)
    assert (tmp_path / "notabundle" / "precious.txt").is_file()
    with pytest.raises(InvalidArgument, match="overwrite the run"):
        export_bundle(trained_run.run_dir, trained_run.run_dir.parent, force=True)


def test_manifest_without_the_model_hash_is_refused(trained_run, tmp_path):
    result = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    manifest = json.loads((result.dir / "manifest.json").read_text())
    manifest["files"] = {}
    (result.dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidArgument, match="no model.onnx hash"):
        verify_bundle(result.dir)
