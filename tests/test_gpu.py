"""CUDA paths: bf16 autocast + channels_last training and the CUDA execution provider.

Skipped cleanly on machines without a GPU (marker ``gpu``).
"""

import json

import onnxruntime as ort
import pytest
import torch

from edgetune.export.bundle import export_bundle
from edgetune.runtime import ImagePredictor
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.image_classification import train_image
from edgetune.trainers.loop import resolve_device

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_setup_uses_bf16_autocast_and_channels_last():
    setup = resolve_device("auto")
    assert setup.device.type == "cuda" and setup.channels_last
    major, _ = torch.cuda.get_device_capability()
    assert setup.autocast_dtype == (torch.bfloat16 if major >= 8 else None)  # native bf16 from Ampere on


def test_train_on_cuda_and_export_with_the_cuda_provider(digits_folder, tmp_path):
    cfg = load_config(overrides={"data.path": str(digits_folder), "data.image_size": 64, "optim.epochs": 2,
                                 "device": "cuda"})
    result = train_image(cfg, tmp_path / "run")
    assert result.report["device"].startswith("cuda")
    assert result.metrics["accuracy"] > 0.85
    bundle = export_bundle(result.run_dir, tmp_path / "bundle", device="cuda")
    assert "CUDAExecutionProvider" in bundle.parity["providers"]
    assert bundle.parity["passed"]
    predictor = ImagePredictor(bundle.dir, device="cuda")
    assert predictor.session.get_providers()[0] == "CUDAExecutionProvider"
    assert json.loads((bundle.dir / "manifest.json").read_text())["valid"]


def test_cuda_provider_is_not_requested_without_a_cuda_device(monkeypatch):
    from edgetune.runtime import sessions

    assert sessions.cuda_device_count() == torch.cuda.device_count()  # the driver and torch agree
    monkeypatch.setattr(sessions, "cuda_device_count", lambda: 0)
    assert sessions.select_providers("auto") == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in ort.get_available_providers()


def test_text_classifier_trains_on_cuda_and_exports_with_the_cuda_provider(tmp_path):
    from edgetune.runtime import TextPredictor
    from edgetune.trainers.train import train
    from tests.conftest import write_topic_texts

    data = write_topic_texts(tmp_path / "t.jsonl")
    cfg = load_config(overrides={"task": "text_classification", "data.path": str(data), "method": "lora",
                                 "optim.epochs": 2, "data.max_length": 32, "device": "cuda"})
    result = train(cfg, tmp_path / "run")  # all-MiniLM-L6-v2 from the catalog, bf16 autocast
    assert result.report["device"].startswith("cuda") and result.metrics["macro_f1"] > 0.9
    bundle = export_bundle(result.run_dir, tmp_path / "bundle", device="cuda")
    assert "CUDAExecutionProvider" in bundle.parity["providers"] and bundle.parity["passed"]
    predictor = TextPredictor(bundle.dir, device="cuda")
    assert predictor.session.get_providers()[0] == "CUDAExecutionProvider"
    assert predictor.predict_texts(["pizza pasta oven"], top_k=1)[0].top[0][0] == "food"


def test_generation_trains_on_cuda_and_generates_with_the_cuda_provider(tmp_path):
    from edgetune.runtime import TextGenerator
    from edgetune.trainers.train import train
    from tests.conftest import write_reverse_pairs

    data = write_reverse_pairs(tmp_path / "r.jsonl", rows=80)
    cfg = load_config(overrides={"task": "text_generation", "data.path": str(data), "model.weights": "random",
                                 "method": "lora", "optim.epochs": 2, "optim.lr": 1e-2, "device": "cuda"})
    result = train(cfg, tmp_path / "run")
    assert result.report["device"].startswith("cuda")
    bundle = export_bundle(result.run_dir, tmp_path / "bundle", device="cuda")
    assert "CUDAExecutionProvider" in bundle.parity["providers"] and bundle.parity["passed"]
    from edgetune.trainers.generation import torch_greedy
    from edgetune.trainers.run import load_run

    run = load_run(result.run_dir)
    generator = TextGenerator(bundle.dir, device="cuda")
    assert generator.generator.session.get_providers()[0] == "CUDAExecutionProvider"
    eos = run.tokenizer.eos_token_id
    expected = [t for t in torch_greedy(run.model, generator.prompt_ids("reverse: red cat sun"), 4, eos) if t != eos]
    assert [t for t, _ in generator.stream("reverse: red cat sun", 4)] == expected
