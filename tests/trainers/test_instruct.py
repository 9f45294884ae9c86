"""Instruction tuning on tiny random-init decoders (CPU): response-only labels, every method and
family, base vs tuned metrics in the report."""

import json

import pytest

from edgetune.trainers.config import load_config
from edgetune.runtime.prompting import PLAIN_TEMPLATE, prompt_format
from edgetune.trainers.generation import IGNORE, encode_pairs
from edgetune.trainers.models.text import train_tokenizer
from edgetune.trainers.train import train
from tests.conftest import write_reverse_pairs


def _cfg(data, **over):
    base = {"task": "text_generation", "data.path": str(data), "model.arch": "llama", "model.weights": "random",
            "optim.epochs": 1, "optim.batch_size": 16, "data.max_length": 48}
    base.update(over)
    return load_config(overrides=base)


def test_loss_is_on_response_tokens_only_and_ends_with_eos():
    tok = train_tokenizer("llama", ["reverse: red cat sun", "sun cat red"] * 20)
    fmt = prompt_format(tok)
    assert fmt["kind"] == "template" and fmt["template"] == PLAIN_TEMPLATE and fmt["bos_token"] == "<s>"
    rows, lengths, dropped = encode_pairs(tok, fmt, ["reverse: red cat sun", "x " * 200], ["sun cat red", "y"], 64)
    (ids, labels), = rows
    assert dropped == 1 and lengths[1] > 64  # the long prompt leaves no response token: left out
    n_prompt = labels.index(next(x for x in labels if x != IGNORE))
    assert all(x == IGNORE for x in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]).strip() == "sun cat red"


def test_full_fine_tune_learns_and_reports_base_beside_tuned(tmp_path):
    data = write_reverse_pairs(tmp_path / "rev.jsonl")
    result = train(_cfg(data, method="full", **{"optim.epochs": 6, "optim.lr": 1e-2}), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = report["before"], report["final"]
    for key in ("val_loss", "val_perplexity", "val_accuracy", "exact_match", "chrf"):
        assert key in before and key in after
    assert after["val_loss"] < before["val_loss"] - 1.0, (before["val_loss"], after["val_loss"])
    assert after["chrf"] > before["chrf"]
    assert report["prompt_format"] == "template" and result.best_epoch >= 1
    assert "base" in result.summary() and "chrF" in result.summary()


@pytest.mark.parametrize("arch,method", [("llama", "lora"), ("llama", "ia3"), ("llama", "prompt_tuning"),
                                         ("gpt2", "lora"), ("qwen2", "lora")])
def test_methods_and_families_train_and_save_their_adapter(tmp_path, arch, method):
    data = write_reverse_pairs(tmp_path / "rev.jsonl", rows=60)
    result = train(_cfg(data, method=method, **{"model.arch": arch}), tmp_path / "run")
    report = result.report
    assert 0 < report["trainable_params"] < report["total_params"] / 2
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "prompt.safetensors").is_file() == (method == "prompt_tuning")
    assert report["history"][0]["val_perplexity"] > 1.0


def test_chat_templates_render_like_transformers_and_name_the_field_when_broken():
    from edgetune.errors import InvalidArgument
    from edgetune.runtime.prompting import encode_prompt, format_prompt

    tok = train_tokenizer("llama", ["<|user|> hello there <|assistant|> hi"] * 20)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if loop.index > 5 %}{% break %}{% endif %}"
                         "<|user|> {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} <|assistant|>"
                         "{% endif %}")
    fmt = prompt_format(tok)
    assert fmt["kind"] == "chat_template"
    messages = [{"role": "user", "content": "hello there"}]
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert format_prompt(fmt, "hello there") == expected and expected.startswith("<s>")
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in transformers 5
    assert encode_prompt(tok.backend_tokenizer, fmt, "hello there") == list(ids)
    with pytest.raises(InvalidArgument) as e:
        format_prompt({**fmt, "template": "{{ raise_exception('no system role') }}"}, "x")
    assert e.value.subject == "prompt_format" and "no system role" in e.value.message


def test_max_length_beyond_the_model_positions_names_the_field(tmp_path):
    from edgetune.errors import InvalidArgument

    data = write_reverse_pairs(tmp_path / "rev.jsonl", rows=20)
    with pytest.raises(InvalidArgument) as e:  # tiny llama: 512 positions
        train(_cfg(data, method="prompt_tuning", **{"data.max_length": 510}), tmp_path / "run")
    assert e.value.subject == "data.max_length" and "16 virtual tokens" in e.value.message
    assert not (tmp_path / "run").exists()
