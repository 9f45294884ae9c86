"""Export, the parity gate and bundles, in the real ONNX Runtime."""

import json
import stat

import numpy as np
import onnx
import pytest
import torch

from edgetune.errors import FailedPrecondition, InvalidArgument, ParityError
from edgetune.export.bundle import export_bundle, held_out_pixels
from edgetune.export.onnx_export import export_onnx, read_metadata
from edgetune.export.parity import ImageContract, check_parity, compare, value_margin
from edgetune.runtime import ImagePredictor, verify_bundle
from edgetune.runtime.sessions import create_session
from edgetune.export.specs import EXPORT_SPECS, Tolerance
from edgetune.runtime.imaging import Preprocessing
from edgetune.progress import EpochEnd
from edgetune.trainers.models.image import create_model, default_normalization
from edgetune.trainers.models.registry import ARCHITECTURES
from edgetune.atomic import default_mode
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.image_classification import train_image
from edgetune.trainers.run import load_run
from tests.conftest import assert_valid_manifest

SPEC = EXPORT_SPECS["image_classification"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import write_pattern_folder

    root = tmp_path_factory.mktemp("export")
    data = write_pattern_folder(root / "data")
    cfg = load_config(overrides={"data.path": str(data), "data.image_size": 32, "model.arch": "resnet18",
                                 "model.weights": "random", "optim.epochs": 2, "optim.batch_size": 8})
    return train_image(cfg, root / "run")


def _contract(model, labels) -> ImageContract:
    return ImageContract(Preprocessing(32, *default_normalization(model)), list(labels))


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_exports_with_dynamic_batch_and_passes_parity(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, 5, 32).eval()
    path = export_onnx(model, (torch.randn(2, 3, 32, 32),), SPEC, tmp_path / "m.onnx", {"edgetune.labels": list("abcde")})
    session = create_session(path, "cpu")
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert session.get_inputs()[0].shape[0] == "batch"
    contract = _contract(model, "abcde")
    report = check_parity(model, session, SPEC, _pixels(20), contract, contract)
    assert report.passed and report.margin <= 1 and not report.problems
    assert {c.batch_size for c in report.cases} == {1, SPEC.large_batch}
    held_out = [c for c in report.cases if c.name.startswith("held-out")]
    assert len(held_out) == 2 and all(c.samples == 20 for c in held_out)  # every sample, at both batch sizes
    assert all(c.top1_compared + c.ties == 20 and c.top1_agreed == c.top1_compared for c in held_out)
    assert all(c.top1_compared == 0 for c in report.cases if c.name.startswith("random"))  # values only
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
    contract = _contract(model, "abc")
    with pytest.raises(ParityError) as e:
        check_parity(model, create_session(path, "cpu"), SPEC, _pixels(16), contract, contract)
    report = e.value.report
    assert not report.passed and report.margin > 1 and report.max_abs_diff > SPEC.tolerance().atol
    assert "FAILED" in e.value.message and "first failing case" in e.value.message


def test_a_bundle_that_normalizes_differently_fails(trained_run, tmp_path):
    """The device side reads the manifest's preprocessing: a wrong mean / std fails the gate."""
    run = load_run(trained_run.run_dir)
    prep = run.preprocessing
    wrong = Preprocessing(prep.size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert (wrong.mean, wrong.std) != (prep.mean, prep.std)
    session = create_session(export_bundle(trained_run.run_dir, tmp_path / "b").dir / "model.onnx", "cpu")
    pixels = held_out_pixels(trained_run.run_dir)
    reference = ImageContract(prep, run.classes)
    assert check_parity(run.model, session, SPEC, pixels, reference, reference).passed
    with pytest.raises(ParityError) as e:
        check_parity(run.model, session, SPEC, pixels, reference, ImageContract(wrong, run.classes))
    assert e.value.report.margin > 10
    held = [c for c in e.value.report.cases if c.name.startswith("held-out")]
    assert held and all(not c.passed for c in held)
    assert all(c.passed for c in e.value.report.cases if c.name.startswith("random"))  # the graph is right


def test_a_bundle_with_swapped_labels_fails(trained_run, tmp_path):
    run = load_run(trained_run.run_dir)
    swapped = [run.classes[1], run.classes[0], *run.classes[2:]]
    session = create_session(export_bundle(trained_run.run_dir, tmp_path / "b").dir / "model.onnx", "cpu")
    reference = ImageContract(run.preprocessing, run.classes)
    with pytest.raises(ParityError) as e:
        check_parity(run.model, session, SPEC, held_out_pixels(trained_run.run_dir), reference,
                     ImageContract(run.preprocessing, swapped))
    report = e.value.report
    assert report.margin <= 1  # the values agree: only what a device would call them differs
    assert report.top1_agreement < 1.0 and "labels differ from training's: output 0" in report.problems[0]


def test_ties_within_the_tolerance_are_not_decisions():
    tol = Tolerance(atol=1e-4, rtol=0.0)
    ref = np.array([[1.0, 1.00005, 0.0],   # top-2 gap 5e-5: a tie within rounding
                    [2.0, 0.0, 0.0]], dtype=np.float32)  # a clear decision
    flipped = ref.copy()
    flipped[0, :2] = ref[0, 1], ref[0, 0]  # the tie flips, each value moves by 5e-5 <= atol
    case = compare("synthetic", lambda _: ref, lambda _: flipped, [None], tol, (list("xyz"), list("xyz")))
    assert case.passed and (case.ties, case.top1_compared, case.top1_agreed) == (1, 1, 1)
    assert case.margin == pytest.approx(0.5, rel=1e-2)  # float32 rounding of 1.00005
    wrong = flipped.copy()
    wrong[1] = [0.0, 2.0, 0.0]  # the clear decision flips: values and the label both fail
    case = compare("synthetic", lambda _: ref, lambda _: wrong, [None], tol, (list("xyz"), list("xyz")))
    assert not case.passed and case.top1_agreed == 0 and case.margin > 1
    # The same outputs without labels (random inputs) count no decisions.
    assert compare("random", lambda _: ref, lambda _: flipped, [None], tol).top1_compared == 0


@pytest.mark.parametrize("tamper", ["swapped labels", "other normalization"])
def test_export_bundle_gates_what_it_writes(trained_run, tmp_path, monkeypatch, tamper):
    """A bug in the manifest writer (simulated here) fails the export: the gate's device side reads
    the manifest as written, and the model file's metadata must repeat it."""
    import edgetune.export.bundle as bundle

    def tampered_fields(run, spec):
        fields = image_fields(run, spec)
        if tamper == "swapped labels":
            fields["labels"] = [fields["labels"][1], fields["labels"][0], *fields["labels"][2:]]
        else:
            fields["preprocessing"] = {**fields["preprocessing"], "mean": [0.5] * 3, "std": [0.5] * 3}
        return fields

    image_fields = bundle.image_fields
    monkeypatch.setattr(bundle, "image_fields", tampered_fields)
    with pytest.raises(ParityError) as e:
        export_bundle(trained_run.run_dir, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    parity = json.loads((tmp_path / "bundle.invalid" / "manifest.json").read_text())["parity"]
    key = "labels" if tamper == "swapped labels" else "preprocessing"
    assert f"model.onnx metadata edgetune.{key} differs from the manifest's {key}" in parity["problems"]
    if tamper == "swapped labels":
        assert parity["top1_agreement"] < 1 and "labels differ from training's" in e.value.message
    else:
        assert parity["margin"] > 10


def test_the_gate_passes_exactly_what_allclose_accepts():
    tol = EXPORT_SPECS["image_classification"].tolerance("fp32")
    rng = np.random.default_rng(0)
    verdicts = []
    for scale in (1e-5, 1e-4, 3e-4, 1e-3, 3e-3):
        for _ in range(40):
            ref = rng.normal(0, 5, (4, 10)).astype(np.float32)
            got = (ref + rng.normal(0, scale, ref.shape) * (1 + np.abs(ref))).astype(np.float32)
            margin = value_margin(ref, got, tol)[1]
            allclose = np.allclose(got.astype(np.float64), ref.astype(np.float64), rtol=tol.rtol, atol=tol.atol)
            assert (margin <= 1) == allclose, (scale, margin)
            verdicts.append(allclose)
    assert any(verdicts) and not all(verdicts)  # both verdicts occur


def test_tolerance_is_the_allclose_rule():
    tol = EXPORT_SPECS["image_classification"].tolerance("fp32")
    ref = np.array([[0.0, 10.0, -100.0]])
    edge = ref + tol.atol + tol.rtol * np.abs(ref)  # exactly at the allowed error
    assert value_margin(ref, edge, tol)[1] == pytest.approx(1.0)
    assert np.allclose(edge, ref, rtol=tol.rtol, atol=tol.atol * 1.000001)
    assert value_margin(ref, ref + 2 * (tol.atol + tol.rtol * np.abs(ref)), tol)[1] == pytest.approx(2.0)
    assert value_margin(ref, np.array([[np.nan, 10.0, -100.0]]), tol)[1] == float("inf")


def test_bundle_is_self_describing_and_verified(trained_run, tmp_path):
    result = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    manifest = verify_bundle(result.dir)
    assert_valid_manifest(manifest)
    parity = manifest["parity"]
    assert manifest["valid"] and parity["passed"] and parity["margin"] <= 1 and parity["top1_agreement"] == 1.0
    assert parity["precision"] == "fp32" and parity["providers"] == ["CPUExecutionProvider"]
    tol = SPEC.tolerance("fp32")
    assert (parity["atol"], parity["rtol"]) == (tol.atol, tol.rtol)
    # Every held-out image, at batch 1 and at the large batch; decisions plus ties cover them all.
    n = len(held_out_pixels(trained_run.run_dir))
    held = [c for c in parity["cases"] if c["name"].startswith("held-out")]
    assert [c["batch_size"] for c in held] == [1, min(n, SPEC.large_batch)] and all(c["samples"] == n for c in held)
    assert all(c["top1_compared"] + c["ties"] == n for c in held) and parity["top1_compared"] >= n
    assert all(c["compared"] == "pytorch vs onnxruntime" for c in parity["cases"])
    assert manifest["source_run"]["finished"] and manifest["source_run"]["epochs"] == 2
    assert manifest["source_run"]["degenerate"] == [] and manifest["source_run"]["exported_despite"] == []
    assert manifest["labels"] == ["a", "b", "c"]
    assert manifest["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert manifest["outputs"][0]["shape"] == ["batch", 3]
    assert manifest["source_run"]["base_weights"] == "random init (no pretrained weights)"
    assert set(manifest["files"]) == {"model.onnx"} and len(manifest["files"]["model.onnx"]["sha256"]) == 64
    meta = read_metadata(result.dir / "model.onnx")
    assert json.loads(meta["edgetune.labels"]) == ["a", "b", "c"]
    assert json.loads(meta["edgetune.preprocessing"])["size"] == 32
    assert meta["edgetune.source_run"] == "run" and not any(v.startswith("/") for v in meta.values())
    cases = {c["name"] for c in manifest["parity"]["cases"]}
    assert any("held-out" in c for c in cases) and any("random" in c for c in cases)
    # One file-mode rule: what open() / mkdir() give under the umask, for the folder and every file.
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [result.dir, *result.dir.iterdir()]}
    assert modes == {result.dir.name: default_mode(directory=True), "model.onnx": default_mode(),
                     "manifest.json": default_mode()}


def test_predictions_match_the_pytorch_checkpoint(trained_run, tmp_path):
    from edgetune.runtime.imaging import preprocess_files
    from edgetune.trainers.run import load_run

    bundle = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    predictor = ImagePredictor(bundle.dir, device="cpu")
    files = sorted((trained_run.run_dir.parent / "data").glob("*/*.png"))[:6]
    preds = predictor.predict_files(files, top_k=2)
    run = load_run(trained_run.run_dir)
    with torch.no_grad():
        ref = run.model(torch.from_numpy(preprocess_files(files, run.preprocessing))).argmax(1)
    assert [p.top[0][0] for p in preds] == [run.classes[i] for i in ref]
    assert all(len(p.top) == 2 and p.top[0][1] >= p.top[1][1] for p in preds)


def test_failed_parity_marks_nothing_valid(trained_run, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(ParityError):
        export_bundle(trained_run.run_dir, out, atol=1e-12, rtol=0)  # real float32 noise exceeds this
    assert not out.exists()
    invalid = json.loads((tmp_path / "bundle.invalid" / "manifest.json").read_text())
    assert invalid["valid"] is False and invalid["parity"]["passed"] is False
    with pytest.raises(InvalidArgument, match="not valid"):
        ImagePredictor(tmp_path / "bundle.invalid")


def test_tampered_bundle_is_refused(trained_run, tmp_path):
    result = export_bundle(trained_run.run_dir, tmp_path / "bundle")
    with open(result.dir / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidArgument, match="sha256"):
        ImagePredictor(result.dir)


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


def test_a_degenerate_run_is_refused_unless_allowed(tmp_path):
    from tests.conftest import write_identical_folder

    data = write_identical_folder(tmp_path / "same")
    cfg = load_config(overrides={"data.path": str(data), "data.image_size": 32, "model.arch": "resnet18",
                                 "model.weights": "random", "optim.epochs": 1, "optim.batch_size": 8})
    result = train_image(cfg, tmp_path / "run")
    reasons = result.report["degenerate"]
    assert any("outputs are constant" in r for r in reasons) and any("majority-class rate" in r for r in reasons)
    assert "WARNING: degenerate model" in result.summary()
    with pytest.raises(FailedPrecondition) as e:
        export_bundle(result.run_dir, tmp_path / "bundle")
    assert "degenerate" in e.value.message and "--allow-degenerate" in e.value.message
    assert not (tmp_path / "bundle").exists()
    bundle = export_bundle(result.run_dir, tmp_path / "bundle", allow_degenerate=True)
    assert bundle.manifest["valid"] and bundle.manifest["source_run"]["exported_despite"] == ["degenerate"]
    assert bundle.manifest["source_run"]["degenerate"] == reasons


def test_an_unfinished_run_is_refused_unless_allowed(tmp_path):
    from tests.conftest import write_pattern_folder

    class Stop(Exception):
        pass

    def stop_after_first_epoch(event):
        if isinstance(event, EpochEnd) and event.epoch == 1:
            raise Stop

    data = write_pattern_folder(tmp_path / "data")
    cfg = load_config(overrides={"data.path": str(data), "data.image_size": 32, "model.arch": "resnet18",
                                 "model.weights": "random", "optim.epochs": 3, "optim.batch_size": 8})
    with pytest.raises(Stop):
        train_image(cfg, tmp_path / "run", progress=stop_after_first_epoch)
    with pytest.raises(FailedPrecondition) as e:
        export_bundle(tmp_path / "run", tmp_path / "bundle")
    assert "epoch 1 of 3" in e.value.message and "--allow-unfinished" in e.value.message
    source = export_bundle(tmp_path / "run", tmp_path / "bundle", allow_unfinished=True).manifest["source_run"]
    assert (source["epoch"], source["epochs"], source["finished"]) == (1, 3, False)
    assert source["exported_despite"] == ["unfinished"] and source["epochs_trained"] is None
