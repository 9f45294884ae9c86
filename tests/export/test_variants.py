"""INT8 and FP16 variants: built beside the fp32 model, each gated on the run's held-out data,
dropped with the reason when its whole recovery ladder fails, timed, and chosen by the runtime."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from edgetune.errors import FailedPrecondition, InvalidArgument
from edgetune.export.bundle import BUILDERS, export_bundle
from edgetune.export.specs import EXPORT_SPECS, VARIANT_GATES, parse_precisions
from edgetune.export.variants import STATIC_INT8, build_variants, gate_report
from edgetune.runtime import load_predictor, verify_bundle
from edgetune.runtime.imaging import normalize
from edgetune.trainers.run import CALIBRATION_SAMPLES, RunFiles
from tests.conftest import assert_valid_manifest

@pytest.fixture
def digits_run(digits_resnet_run):
    return digits_resnet_run


def _copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("state"))
    return copy


@pytest.mark.slow
def test_the_run_keeps_stratified_calibration_and_the_whole_held_out_set(digits_run):
    files = RunFiles(digits_run)
    calibration, heldout = load_file(str(files.calibration)), load_file(str(files.heldout))
    report = json.loads(files.report.read_text())
    assert len(calibration["pixels"]) == CALIBRATION_SAMPLES == len(calibration["labels"])
    counts = np.bincount(calibration["labels"], minlength=10)
    assert counts.min() >= 26 and counts.max() <= 34  # every class keeps its share of the 300
    assert len(heldout["labels"]) == report["data"]["val_count"]
    assert heldout["pixels"].dtype == np.uint8 and heldout["pixels"].shape[1:] == (32, 32, 3)


@pytest.mark.slow
def test_int8_and_fp16_pass_their_gates_on_a_trained_digits_model(digits_run, tmp_path):
    result = export_bundle(digits_run, tmp_path / "bundle", device="cpu", precisions="fp32,fp16,int8")
    manifest = verify_bundle(result.dir)  # every variant's file is hashed and verified
    assert_valid_manifest(manifest)
    variants = manifest["variants"]
    assert set(variants) == {"fp32", "fp16", "int8"} and manifest["dropped_variants"] == {}
    assert variants["int8"]["bytes"] < variants["fp32"]["bytes"] / 3  # int8 weights
    for name in ("fp16", "int8"):
        gate = variants[name]["gate"]
        assert gate["passed"] and gate["samples"] == len(load_file(str(RunFiles(digits_run).heldout))["labels"]) and gate["nonfinite"] == 0
        assert gate["drop_pt"]["accuracy"] <= VARIANT_GATES[name].max_drop_pt
        assert gate["fp32"]["accuracy"] > 0.9  # a real model, not chance
        assert variants[name]["attempts"][-1]["passed"]
    assert variants["int8"]["gate"]["top1_agreement"] >= 0.98
    assert variants["int8"]["method"] == STATIC_INT8[0].name  # the first step passes on a healthy model
    assert manifest["latency"]["provider"] == "CPUExecutionProvider" and manifest["latency"]["cpu"]["cores"]
    for v in variants.values():
        assert set(v["latency_ms"]) == {"1", "32"} and all(t > 0 for t in v["latency_ms"].values())
    default = manifest["default_variant"]
    assert default in variants and not variants[default]["flags"]
    assert variants["fp32"]["speedup_vs_fp32"] == {"1": 1.0, "32": 1.0}
    for name, v in variants.items():  # a variant without a speed benefit is flagged, never the default
        if name != "fp32" and v["speedup_vs_fp32"]["1"] < 1.1:
            assert v["flags"] and name != default

    # The runtime runs any of them; their labels agree with fp32's on held-out images.
    pixels = load_file(str(RunFiles(digits_run).heldout))["pixels"][:64]
    fp32 = load_predictor(result.dir, device="cpu", variant="fp32")
    x = normalize(pixels, fp32.preprocessing)
    reference = fp32.logits(x).argmax(1)
    for name in ("fp16", "int8"):
        predictor = load_predictor(result.dir, device="cpu", variant=name)
        assert predictor.variant == name
        assert (predictor.logits(x).argmax(1) == reference).mean() >= 0.98
    assert load_predictor(result.dir, device="cpu").variant == default


@pytest.mark.slow
def test_a_broken_calibration_fails_every_step_of_the_ladder(digits_run, tmp_path):
    """Calibration inputs 1000x too small: every activation range collapses, and no step (not even
    the stem, head and sensitive nodes in fp32) brings the held-out accuracy back."""
    spec = EXPORT_SPECS["image_classification"]
    _, _, variant_inputs = BUILDERS[spec.task](digits_run, tmp_path, spec, "cpu", "run")
    inputs = variant_inputs(["fp32", "int8"])
    inputs.calibration = [{k: v * 1e-3 for k, v in feed.items()} for feed in inputs.calibration]
    [result] = build_variants(tmp_path / "model.onnx", tmp_path, ["fp32", "int8"], inputs)
    assert not result.kept and "every step of the ladder" in result.entry["reason"]
    attempts = result.entry["attempts"]
    assert [a["step"] for a in attempts] == [s.name for s in STATIC_INT8] and not any(a["passed"] for a in attempts)
    assert all(a["top1_agreement"] < 0.5 for a in attempts)  # broken, not borderline
    ends, sensitive = (set(a["excluded_nodes"]) for a in attempts[2:4])
    assert len(ends) == 2 and ends < sensitive  # the stem and head, then the sensitive nodes found besides
    assert not (tmp_path / "model.int8.onnx").exists()


@pytest.mark.slow
def test_a_variant_that_fails_is_dropped_from_the_bundle_with_the_reason(digits_run, tmp_path):
    """Calibration images of the wrong size: ONNX Runtime refuses them at every step."""
    run = _copy_run(digits_run, tmp_path)
    calibration = load_file(str(RunFiles(run).calibration))
    save_file({"pixels": np.ascontiguousarray(calibration["pixels"][:, :16, :16]), "labels": calibration["labels"]},
              str(RunFiles(run).calibration))
    result = export_bundle(run, tmp_path / "bundle", device="cpu", precisions=["int8"])
    manifest = verify_bundle(result.dir)
    assert manifest["valid"] and set(manifest["variants"]) == {"fp32"} and manifest["default_variant"] == "fp32"
    dropped = manifest["dropped_variants"]["int8"]
    assert len(dropped["attempts"]) == len(STATIC_INT8) and "every step of the ladder" in dropped["reason"]
    assert "invalid dimensions" in dropped["reason"].lower() or "dimension" in dropped["reason"].lower()
    assert not (result.dir / "model.int8.onnx").exists()
    assert_valid_manifest(manifest)
    with pytest.raises(InvalidArgument, match="dropped at export"):
        load_predictor(result.dir, device="cpu", variant="int8")


@pytest.mark.slow
def test_too_few_calibration_images_are_refused(digits_run, tmp_path):
    run = _copy_run(digits_run, tmp_path)
    calibration = load_file(str(RunFiles(run).calibration))
    save_file({k: v[:60] for k, v in calibration.items()}, str(RunFiles(run).calibration))
    with pytest.raises(FailedPrecondition, match="at least 100 training images; the run kept 60"):
        export_bundle(run, tmp_path / "bundle", device="cpu", precisions="int8")
    assert not (tmp_path / "bundle").exists()
    # fp32 alone needs no calibration.
    assert export_bundle(run, tmp_path / "bundle", device="cpu").manifest["variants"].keys() == {"fp32"}


@pytest.mark.slow
def test_a_run_without_held_out_data_is_refused_variants(digits_run, tmp_path):
    run = _copy_run(digits_run, tmp_path)
    RunFiles(run).heldout.unlink()
    with pytest.raises(FailedPrecondition, match="kept no held-out data"):
        export_bundle(run, tmp_path / "bundle", device="cpu", precisions="fp16")


@pytest.mark.parametrize("value, expect", [("fp32", ["fp32"]), ("int8", ["fp32", "int8"]),
                                           ("INT8, fp16,fp32", ["fp32", "fp16", "int8"]), ([], ["fp32"])])
def test_precisions_parse_to_canonical_order_with_fp32_always(value, expect):
    assert parse_precisions(value) == expect


def test_an_unknown_precision_names_the_field():
    with pytest.raises(InvalidArgument, match="precision: unknown precision 'int4'"):
        parse_precisions("fp32,int4")


def test_the_gate_counts_nan_drops_and_disagreement():
    gate = VARIANT_GATES["int8"]
    labels = np.arange(100) % 4
    ref = np.eye(4)[labels] * 5.0
    assert gate_report(gate, ref, ref.copy(), labels)["passed"]
    flipped = ref.copy()
    flipped[:3] = np.eye(4)[(labels[:3] + 1) % 4] * 5.0  # 3 of 100 flipped: accuracy -3 pt, agreement 97%
    report = gate_report(gate, ref, flipped, labels)
    assert not report["passed"] and report["drop_pt"]["accuracy"] == 3.0 and report["top1_agreement"] == 0.97
    nan = ref.copy()
    nan[0, 0] = np.nan
    report = gate_report(VARIANT_GATES["fp16"], ref, nan, labels)
    assert not report["passed"] and report["nonfinite"] == 1 and "NaN or Inf" in report["failures"][0]
