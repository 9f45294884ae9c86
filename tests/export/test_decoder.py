"""Causal-LM export with a KV cache: greedy generation in ONNX Runtime against PyTorch (and peft)."""

import copy
import json

import numpy as np
import onnx
import pytest
import torch

from edgetune.errors import InvalidArgument, ParityError
from edgetune.export.decoder import check_generation_parity, export_decoder, prompt_prefix_past
from edgetune.runtime.generation import DecoderIO, OrtGenerator
from edgetune.export.onnx_export import read_metadata
from edgetune.trainers.generation import torch_greedy
from edgetune.runtime.sessions import create_session

VOCAB = 200
NEW_TOKENS = 12
PROMPTS = [[5, 17, 99, 3], [42], [7, 8, 9, 10, 11, 12, 13, 14, 15], [150, 1, 77]]


def tiny_model(family: str) -> torch.nn.Module:
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    torch.manual_seed(0)
    ids = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2}
    if family == "gpt2":
        # Untied head: with tied tiny random embeddings GPT-2 just repeats its last input token.
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, tie_word_embeddings=False, **ids)
        return GPT2LMHeadModel(config).eval()
    llama_like = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, **ids}
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**llama_like)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**llama_like)).eval()


@pytest.fixture(scope="module")
def export_once(tmp_path_factory):
    """Each family exported once per module: (family, model, io, path, session)."""
    done = {}

    def get(family: str):
        if family not in done:
            model = tiny_model(family)
            path = tmp_path_factory.mktemp(family) / "model.onnx"
            io = export_decoder(model, path, metadata={"edgetune.task": "causal_lm", "edgetune.family": family})
            # No spinning: idle ORT threads would take the 2 cores from the interleaved PyTorch runs.
            done[family] = family, model, io, path, create_session(path, "cpu", spinning=False)
        return done[family]

    return get


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def exported(request, export_once):
    return export_once(request.param)


@pytest.fixture(scope="module")
def llama(export_once):
    _, model, io, _, session = export_once("llama")
    return model, io, session


def test_graph_has_a_kv_cache_with_dynamic_axes_and_metadata(exported):
    family, model, io, path, session = exported
    layers = model.config.num_hidden_layers
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "position_ids", *past]
    assert [o.name for o in session.get_outputs()] == ["logits", *present]
    shapes = {v.name: v.shape for v in [*session.get_inputs(), *session.get_outputs()]}
    assert shapes["input_ids"] == ["batch", "sequence"]
    assert shapes["logits"] == ["batch", "sequence", VOCAB]
    assert shapes[past[0]] == ["batch", io.num_kv_heads, "past_sequence", io.head_dim]
    assert shapes[present[-1]] == ["batch", io.num_kv_heads, "past_sequence + sequence", io.head_dim]
    expected_kv_heads = 4 if family == "gpt2" else 2  # Llama and Qwen2 use GQA here
    assert (io.num_layers, io.num_kv_heads, io.head_dim, io.vocab_size) == (layers, expected_kv_heads, 16, VOCAB)
    meta = read_metadata(path)
    assert meta["edgetune.family"] == family
    assert DecoderIO.from_dict(json.loads(meta["edgetune.decoder_io"])) == io
    assert DecoderIO.from_dict(json.loads(json.dumps(io.to_dict()))) == io
    onnx.checker.check_model(str(path), full_check=True)


def test_greedy_generation_matches_pytorch_token_for_token(exported):
    family, model, io, _, session = exported
    generator = OrtGenerator(session, io)
    produced = []
    for prompt in PROMPTS:
        expected = torch_greedy(model, prompt, NEW_TOKENS, eos_token_id=None)
        assert len(expected) == NEW_TOKENS
        assert generator.generate(prompt, NEW_TOKENS, None) == expected
        assert generator.generate(prompt, NEW_TOKENS, None, use_cache=False) == expected
        produced += expected
    # The tiny random models must produce varied tokens, or agreement would prove little.
    assert len(set(produced)) >= 8, f"{family} generates degenerate tokens: {produced}"

    report = check_generation_parity(model, session, io, PROMPTS, NEW_TOKENS, None)
    greedy, prefill = report.cases
    assert report.passed and report.margin <= 1 and greedy.top1_agreed == greedy.top1_compared
    assert greedy.samples == len(PROMPTS) * NEW_TOKENS and greedy.top1_compared + greedy.ties == greedy.samples
    assert greedy.top1_compared > greedy.samples // 2  # random tiny models still decide most steps
    assert prefill.samples == len(PROMPTS) and prefill.top1_compared == 0
    assert report.to_dict()["providers"] == ["CPUExecutionProvider"]


def test_stream_yields_tokens_one_at_a_time_and_stops_at_eos(llama):
    model, io, session = llama
    prompt = PROMPTS[0]
    expected = torch_greedy(model, prompt, NEW_TOKENS, eos_token_id=None)
    stream = OrtGenerator(session, io).stream(prompt, NEW_TOKENS, None)
    assert next(stream) == expected[0]
    assert next(stream) == expected[1]
    assert list(stream) == expected[2:]

    eos = expected[4]
    first = expected.index(eos)  # the eos token may already occur earlier
    stopped = OrtGenerator(session, io).generate(prompt, NEW_TOKENS, eos_token_id=eos)
    assert stopped == expected[:first + 1]
    assert torch_greedy(model, prompt, NEW_TOKENS, eos_token_id=eos) == stopped
    report = check_generation_parity(model, session, io, PROMPTS, NEW_TOKENS, eos_token_id=eos)
    assert report.passed


def test_parity_gate_fails_when_the_reference_differs(llama):
    """A reference model whose weights moved after the export must be refused, with a report."""
    model, io, session = llama
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.model.layers[1].mlp.down_proj.weight.add_(1e-3)
    with pytest.raises(ParityError) as err:
        check_generation_parity(moved, session, io, PROMPTS, NEW_TOKENS, None)
    report = err.value.report
    assert not report.passed and report.margin > 1 and all(c.margin > 1 for c in report.cases)
    assert err.value.subject == "model.onnx" and "FAILED" in err.value.message
    # The unmodified model still passes on the same session: the failure is the weight change.
    assert check_generation_parity(model, session, io, PROMPTS[:2], 4, None).passed


def test_prompt_tuning_generates_what_the_peft_model_generates(llama):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, io, session = llama
    peft_model = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                                         num_virtual_tokens=6)).eval()
    with torch.no_grad():  # as after training: virtual tokens that change what the model says
        peft_model.prompt_encoder["default"].embedding.weight.normal_(0, 1.0)
    prefix = prompt_prefix_past(peft_model)
    assert len(prefix) == 2 * io.num_layers and prefix[0].shape == (1, io.num_kv_heads, 6, io.head_dim)

    tuned, plain = OrtGenerator(session, io, prefix), OrtGenerator(session, io)
    differs = 0
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        # peft's own forward on the whole sequence, step by step (it prepends the virtual tokens).
        expected, sequence = [], ids
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                logits = peft_model(input_ids=sequence, attention_mask=torch.ones_like(sequence)).logits
                expected.append(int(logits[0, -1].argmax()))
                sequence = torch.cat([sequence, torch.tensor([[expected[-1]]])], dim=1)
            first = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                                        do_sample=False)
        got = tuned.generate(prompt, NEW_TOKENS, None)
        assert got == expected
        assert got[0] == int(first[0, -1])
        assert tuned.generate(prompt, NEW_TOKENS, None, use_cache=False) == expected
        assert torch_greedy(peft_model, prompt, NEW_TOKENS, None) == expected
        differs += plain.generate(prompt, NEW_TOKENS, None) != expected

    assert differs > 0, "the virtual tokens should change the generated text"
    report = check_generation_parity(peft_model, session, io, PROMPTS, NEW_TOKENS, None, initial_past=prefix)
    assert report.passed and report.cases[0].samples == len(PROMPTS) * NEW_TOKENS
    with pytest.raises(ParityError):  # the base graph without the prefix is not the tuned model
        check_generation_parity(peft_model, session, io, PROMPTS, NEW_TOKENS, None)


def test_invalid_arguments_are_named(llama, tmp_path):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, io, session = llama
    peft_model = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                                         num_virtual_tokens=2))
    with pytest.raises(InvalidArgument) as err:
        export_decoder(peft_model, tmp_path / "m.onnx")
    assert err.value.subject == "model"
    with pytest.raises(InvalidArgument) as err:
        OrtGenerator(session, io, initial_past=[np.zeros((1, 2, 3, 16), np.float32)])
    assert err.value.subject == "initial_past"
    with pytest.raises(InvalidArgument) as err:
        OrtGenerator(session, io).generate([], 4, None)
    assert err.value.subject == "prompt_ids"
    with pytest.raises(InvalidArgument):
        prompt_prefix_past(model)
