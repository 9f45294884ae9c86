"""Text classification bundles: export with dynamic batch and sequence axes, the three-way parity
gate (peft unmerged vs merged PyTorch vs ONNX Runtime), tokenizer files, device-side inference."""

import json

import numpy as np
import pytest
import torch

from edgetune.errors import ParityError
from edgetune.export.bundle import export_bundle
from edgetune.runtime import verify_bundle
from edgetune.runtime.text import TextEncoder, TextPredictor
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.text_classification import train_text
from edgetune.trainers.run import load_run, parity_texts
from tests.conftest import assert_valid_manifest, copy_with_broken_adapter, write_topic_texts


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_runs")
    data = write_topic_texts(root / "topics.jsonl")
    out = {}
    # lora and full learn the topics; ia3 and prompt tuning on a random-init backbone stay at the
    # majority class (their runs are flagged degenerate, and export them only with consent).
    for method, arch, extra in (("lora", "bert", {"optim.lr": 1e-2, "optim.epochs": 6}), ("prompt_tuning", "bert", {}),
                                ("full", "roberta", {"optim.lr": 1e-2}), ("ia3", "distilbert", {})):
        cfg = load_config(overrides={"task": "text_classification", "data.path": str(data), "model.arch": arch,
                                     "model.weights": "random", "method": method, "optim.epochs": 3,
                                     "optim.batch_size": 16, "data.max_length": 24, **extra})
        out[method] = train_text(cfg, root / method).run_dir
    return out


def test_int8_and_fp16_text_variants_pass_their_held_out_gates(runs, tmp_path):
    """Dynamic INT8 (int8 weights, activations quantized per batch) and FP16 of a LoRA-tuned BERT."""
    result = export_bundle(runs["lora"], tmp_path / "bundle", device="cpu", precisions="fp16,int8")
    manifest = verify_bundle(result.dir)
    assert_valid_manifest(manifest)
    assert set(manifest["variants"]) == {"fp32", "fp16", "int8"}, manifest["dropped_variants"]
    heldout = json.loads((runs["lora"] / "heldout.json").read_text())
    for name in ("fp16", "int8"):
        gate = manifest["variants"][name]["gate"]
        assert gate["passed"] and gate["samples"] == len(heldout) and gate["nonfinite"] == 0
    assert manifest["variants"]["int8"]["method"].startswith("dynamic")
    texts = [r["text"] for r in heldout[:16]]
    reference = TextPredictor(result.dir, device="cpu", variant="fp32").logits(texts).argmax(1)
    for name in ("fp16", "int8"):
        assert (TextPredictor(result.dir, device="cpu", variant=name).logits(texts).argmax(1) == reference).all()


def test_tokenizer_files_say_what_the_manifest_says(runs, tmp_path):
    """max_length counts the special tokens; the template alone reproduces training's ids."""
    result = export_bundle(runs["full"], tmp_path / "bundle", device="cpu")
    tok = result.manifest["tokenization"]
    spec = json.loads((result.dir / "tokenizer" / "tokenizer.json").read_text())
    config = json.loads((result.dir / "tokenizer" / "tokenizer_config.json").read_text())
    assert spec["truncation"]["max_length"] == tok["max_length"] == config["model_max_length"] == 24
    assert spec["padding"]["pad_id"] == tok["pad_token_id"] and tok["max_length_counts_special_tokens"]
    run = load_run(runs["full"])
    long_text = " ".join(["goal match team"] * 20)
    ids = TextEncoder(result.dir, tok).ids(["pizza", long_text])
    expected = run.tokenizer(["pizza", long_text], truncation=True, max_length=24)["input_ids"]
    assert ids == expected and len(ids[1]) == 24
    assert ids[1][:len(tok["template"]["prefix_ids"])] == tok["template"]["prefix_ids"]
    assert ids[1][-len(tok["template"]["suffix_ids"]):] == tok["template"]["suffix_ids"]


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "full", "ia3"])
def test_bundle_passes_three_way_parity_and_predicts_like_pytorch(runs, tmp_path, method):
    degenerate = json.loads((runs[method] / "report.json").read_text())["degenerate"]
    result = export_bundle(runs[method], tmp_path / "bundle", device="cpu", allow_degenerate=True)
    manifest = verify_bundle(result.dir)
    assert manifest["source_run"]["exported_despite"] == (["degenerate"] if degenerate else [])
    assert manifest["valid"] and manifest["task"] == "text_classification"
    assert {"model.onnx", "tokenizer/tokenizer.json"} <= set(manifest["files"])
    tok = manifest["tokenization"]
    assert tok["max_length"] == 24 and tok["padding_side"] == "right" and tok["pad_token_id"] is not None
    compared = {c["compared"] for c in manifest["parity"]["cases"]}
    has_adapter = method != "full"
    assert ("peft unmerged vs merged pytorch" in compared) == has_adapter
    assert ("peft unmerged vs onnxruntime" in compared) == has_adapter
    n = len(parity_texts(runs[method]))
    for case in manifest["parity"]["cases"]:
        assert case["passed"] and case["margin"] <= 1 and case["top1_agreed"] == case["top1_compared"], case
        if case["name"].startswith("held-out"):  # every held-out row, each a decision or a tie
            assert case["samples"] == n and case["top1_compared"] + case["ties"] == n, case
        else:
            assert case["top1_compared"] == 0  # random token ids: values only
    assert {c["batch_size"] for c in manifest["parity"]["cases"] if c["name"].startswith("held-out")} == {1, 16}
    # Device-side inference agrees with the PyTorch checkpoint, row by row.
    run = load_run(runs[method])
    texts = [r["text"] for r in parity_texts(runs[method])][:20]
    predictor = TextPredictor(result.dir, device="cpu")
    enc = run.tokenizer(texts, truncation=True, max_length=24, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = run.model(enc["input_ids"], enc["attention_mask"]).numpy()
    got = predictor.logits(texts)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    top = predictor.predict_texts(texts, top_k=1)
    assert [p.top[0][0] for p in top] == [run.classes[i] for i in ref.argmax(1)]


def test_device_tokenization_equals_the_training_tokenizer(runs, tmp_path):
    bundle = export_bundle(runs["lora"], tmp_path / "b", device="cpu").dir
    manifest = json.loads((bundle / "manifest.json").read_text())
    encoder = TextEncoder(bundle, manifest["tokenization"])
    run = load_run(runs["lora"])
    texts = ["pizza ovens today", "A very, very long message " * 10, "goal!", "unknown wörds ✓"]
    assert encoder.ids(texts) == run.tokenizer(texts, truncation=True, max_length=24)["input_ids"]
    feed = encoder.encode(texts)
    assert feed["input_ids"].shape == (4, 24) and feed["attention_mask"][2].sum() < 24


def test_a_broken_merge_fails_the_export_and_keeps_the_evidence(runs, tmp_path):
    # The saved adapter disagrees with the merged checkpoint, as a wrong merge would make it.
    run = copy_with_broken_adapter(runs["lora"], tmp_path / "run")
    with pytest.raises(ParityError) as e:
        export_bundle(run, tmp_path / "bundle", device="cpu")
    assert e.value.exit_code == 3
    assert not (tmp_path / "bundle").exists()
    failed = json.loads((tmp_path / "bundle.invalid" / "manifest.json").read_text())
    assert failed["valid"] is False
    bad = [c for c in failed["parity"]["cases"] if not c["passed"]]
    assert bad and all(c["compared"].startswith("peft unmerged") and c["margin"] > 1 for c in bad)
    assert all(c["margin"] <= 1 for c in failed["parity"]["cases"] if c["compared"] == "merged pytorch vs onnxruntime")


@pytest.mark.slow
def test_real_minilm_lora_exports_and_passes_parity(tmp_path):
    data = write_topic_texts(tmp_path / "topics.jsonl", rows=160)
    cfg = load_config(overrides={"task": "text_classification", "data.path": str(data), "method": "lora",
                                 "optim.epochs": 1, "data.max_length": 32})
    assert cfg.model.arch == "bert" and cfg.model.weights == "catalog"
    result = train_text(cfg, tmp_path / "run")
    weights = result.report["weights"]
    assert weights["source"].startswith("catalog all-minilm-l6-v2")
    assert weights["loaded_tensors"] >= 100 and all(k.startswith("classifier") for k in weights["new_tensors"])
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle", device="cpu")
    assert bundle.parity["passed"] and bundle.parity["margin"] <= 1 and bundle.parity["top1_compared"] > 0
    assert any(c["compared"] == "peft unmerged vs onnxruntime" for c in bundle.parity["cases"])


def test_device_classifier_needs_neither_torch_nor_transformers(runs, tmp_path):
    import subprocess
    import sys

    bundle = export_bundle(runs["lora"], tmp_path / "bundle", device="cpu").dir
    script = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
              "from edgetune.runtime import TextPredictor\n"
              "p = TextPredictor(sys.argv[1], device='cpu')\n"
              "print(p.predict_texts(['pizza pasta oven'], top_k=1)[0].top[0][0])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = TextPredictor(bundle, device="cpu").predict_texts(["pizza pasta oven"], top_k=1)[0].top[0][0]
    assert proc.stdout.strip() == expected
