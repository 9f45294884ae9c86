"""The text classification recipe on tiny random-init transformers (CPU): every method, the
families, resume, and the run layout the exporter reads."""

import json

import pytest
import torch

from edgetune.errors import InvalidArgument
from edgetune.progress import EpochEnd
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.text_classification import train_text
from edgetune.trainers.run import load_run, load_unmerged


def _cfg(data, **over):
    base = {"task": "text_classification", "data.path": str(data), "model.arch": "bert", "model.weights": "random",
            "optim.epochs": 2, "optim.batch_size": 16, "data.max_length": 32}
    base.update(over)
    return load_config(overrides=base)


def test_full_fine_tune_learns_topics_and_writes_the_run(topic_texts, tmp_path):
    events = []
    result = train_text(_cfg(topic_texts, method="full", **{"optim.epochs": 4, "optim.lr": 1e-2}),
                        tmp_path / "run", events.append)
    run = tmp_path / "run"
    for name in ("config.yaml", "model.safetensors", "model.json", "report.json", "curves.png", "confusion.png",
                 "state/last.pt", "parity_samples.json", "tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name
    assert not (run / "adapter").exists()  # nothing to merge for a full fine-tune
    report = json.loads((run / "report.json").read_text())
    assert report["final"]["macro_f1"] > 0.9, report["history"]
    assert report["trainable_params"] == report["total_params"] > 0
    assert report["data"]["token_lengths"]["max"] <= 16 and report["data"]["classes"] == ["food", "sport", "tech"]
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == list(range(1, 5))
    # The checkpoint rebuilt from disk reproduces the reported best validation metric.
    assert result.metrics["macro_f1"] == pytest.approx(report["history"][result.best_epoch - 1]["val_macro_f1"])
    assert load_run(run).classes == ["food", "sport", "tech"]


@pytest.mark.parametrize("arch,method", [("bert", "lora"), ("bert", "ia3"), ("bert", "prompt_tuning"),
                                         ("bert", "linear_probe"), ("distilbert", "lora"), ("roberta", "lora")])
def test_methods_train_only_their_parameters_and_merge_exactly(topic_texts, tmp_path, arch, method):
    result = train_text(_cfg(topic_texts, method=method, **{"model.arch": arch, "optim.epochs": 1}), tmp_path / "r")
    report = result.report
    assert 0 < report["trainable_params"] < report["total_params"] / 2, report["trainable_params"]
    run = load_run(tmp_path / "r")
    plain = run.model
    unmerged = load_unmerged(tmp_path / "r")
    assert (unmerged is None) == (method == "linear_probe")
    ids = torch.randint(5, len(run.tokenizer), (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.inference_mode():
        merged_logits = plain(ids, mask)
        assert merged_logits.shape == (3, 3)
        if unmerged is not None:
            torch.testing.assert_close(unmerged(ids, mask), merged_logits, atol=1e-5, rtol=0)


def test_resume_after_interruption_matches_an_uninterrupted_run(topic_texts, tmp_path):
    cfg = _cfg(topic_texts, method="lora", **{"optim.epochs": 3})
    train_text(cfg, tmp_path / "full")

    def stop_after_first_epoch(event):
        if isinstance(event, EpochEnd) and event.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_text(cfg, tmp_path / "resumed", stop_after_first_epoch)
    result = train_text(cfg, tmp_path / "resumed", resume=True)
    full = json.loads((tmp_path / "full" / "report.json").read_text())["history"]
    assert [h["train_loss"] for h in result.report["history"]] == pytest.approx([h["train_loss"] for h in full],
                                                                               abs=1e-6)


def test_config_rejects_methods_and_archs_a_task_lacks(topic_texts):
    with pytest.raises(InvalidArgument) as e:
        _cfg(topic_texts, **{"model.arch": "llama"})
    assert e.value.subject == "model.arch"
    with pytest.raises(InvalidArgument) as e:
        load_config(overrides={"task": "image_classification", "method": "ia3"})
    assert e.value.subject == "method"
    cfg = _cfg(topic_texts, method="lora")
    assert cfg.optim.lr == 1e-3 and cfg.optim.label_smoothing == 0.0 and cfg.optim.metric == "val_macro_f1"


def test_local_hf_directory_and_operator_catalog_entry_load_as_base_weights(topic_texts, tmp_path, monkeypatch):
    from transformers import AutoModel

    from edgetune.errors import WeightsError
    from edgetune.trainers.models.text import train_tokenizer
    from edgetune.trainers.models.registry import TEXT_ARCHITECTURES

    tok = train_tokenizer("bert", [json.loads(line)["text"] for line in topic_texts.read_text().splitlines()])
    from transformers import AutoConfig
    config = AutoConfig.for_model("bert", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                  **TEXT_ARCHITECTURES["bert"].tiny)
    torch.manual_seed(1)
    base = AutoModel.from_config(config)
    base.save_pretrained(tmp_path / "mybert")
    tok.save_pretrained(tmp_path / "mybert")
    result = train_text(_cfg(topic_texts, method="lora", **{"model.weights": str(tmp_path / "mybert"),
                                                              "optim.epochs": 1}), tmp_path / "r1")
    weights = result.report["weights"]
    assert weights["source"].startswith("dir ") and weights["loaded_tensors"] > 20 and weights["sha256"]
    assert all(k.startswith("classifier") for k in weights["new_tensors"])
    # The unmerged check rebuilds the base from the recorded directory and verifies its hash.
    assert load_unmerged(tmp_path / "r1") is not None

    (tmp_path / "catalog.yaml").write_text(f"models:\n  my-bert:\n    arch: bert\n    path: {tmp_path / 'mybert'}\n")
    monkeypatch.setenv("EDGETUNE_CATALOG", str(tmp_path / "catalog.yaml"))
    result = train_text(_cfg(topic_texts, method="full", **{"model.weights": "my-bert", "optim.epochs": 1}),
                        tmp_path / "r2")
    assert result.report["weights"]["source"].startswith("catalog my-bert")
    (tmp_path / "mybert" / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors"):
        train_text(_cfg(topic_texts, **{"model.weights": str(tmp_path / "mybert")}), tmp_path / "r3")
