"""Text generation bundles: KV-cache export gated on greedy parity against the merged and the
unmerged peft model; device-side streaming equals PyTorch."""

import json
import pytest

from edgetune.errors import InvalidArgument, ParityError
from edgetune.export.bundle import export_bundle
from edgetune.runtime import verify_bundle
from edgetune.runtime import TextGenerator
from edgetune.trainers.config import load_config
from edgetune.trainers.generation import prompt_ids, torch_greedy
from edgetune.trainers.run import load_run, load_unmerged, parity_texts
from edgetune.trainers.train import train
from tests.conftest import assert_valid_manifest, copy_with_broken_adapter, write_reverse_pairs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two epochs of tiny random decoders: any of them may answer every prompt alike (degenerate),
    depending on the data order, so the tests below export with ``allow_degenerate``; they check
    parity and the runtime, not learning."""
    root = tmp_path_factory.mktemp("gen_runs")
    data = write_reverse_pairs(root / "rev.jsonl", rows=80)
    out = {}
    for method, arch in (("lora", "llama"), ("prompt_tuning", "llama"), ("ia3", "gpt2"), ("full", "qwen2")):
        cfg = load_config(overrides={"task": "text_generation", "data.path": str(data), "model.arch": arch,
                                     "model.weights": "random", "method": method, "optim.epochs": 2,
                                     "optim.lr": 1e-2, "optim.batch_size": 16, "data.max_length": 48})
        out[method] = train(cfg, root / method).run_dir
    return out


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "ia3", "full"])
def test_bundle_generates_like_pytorch(runs, tmp_path, method):
    # Two epochs of a tiny random decoder may leave it answering every prompt alike (ia3 here):
    # such a run exports only with consent, which the manifest records.
    degenerate = json.loads((runs[method] / "report.json").read_text())["degenerate"]
    result = export_bundle(runs[method], tmp_path / "bundle", device="cpu", allow_degenerate=True)
    manifest = verify_bundle(result.dir)
    assert_valid_manifest(manifest)
    assert manifest["source_run"]["exported_despite"] == (["degenerate"] if degenerate else [])
    assert manifest["task"] == "text_generation" and manifest["prompt_format"]["kind"] == "template"
    gen = manifest["generation"]
    assert gen["decoder_io"]["num_layers"] == 2 and (gen["prompt_past"] is not None) == (method == "prompt_tuning")
    compared = [c["compared"] for c in manifest["parity"]["cases"]]
    assert ("peft unmerged vs onnxruntime" in compared) == (method != "full")
    assert ("merged pytorch vs onnxruntime" in compared) == (method != "prompt_tuning")
    prompts = len(parity_texts(runs[method]))
    for case in manifest["parity"]["cases"]:
        assert case["passed"] and case["margin"] <= 1 and case["top1_agreed"] == case["top1_compared"], case
        assert f"{prompts} held-out prompts" in case["name"]  # every held-out prompt, not the first few
    greedy = [c for c in manifest["parity"]["cases"] if c["name"].startswith("greedy")]
    assert greedy and all(c["top1_compared"] > 0 and c["samples"] >= prompts for c in greedy)

    run = load_run(runs[method])
    reference = load_unmerged(runs[method]) if method == "prompt_tuning" else run.model
    generator = TextGenerator(result.dir, device="cpu")
    eos = run.tokenizer.eos_token_id
    for prompt in ("reverse: red cat sun", "reverse: book tree moon dog"):
        ids = prompt_ids(run.tokenizer, run.meta["prompt_format"], prompt)
        assert generator.prompt_ids(prompt) == ids
        expected = [t for t in torch_greedy(reference, ids, 6, eos) if t != eos]
        streamed = list(generator.stream(prompt, 6))
        assert [t for t, _ in streamed] == expected
        # Trailing undecodable bytes (a random model emits partial UTF-8) are not streamed.
        decoded = run.tokenizer.decode(expected, skip_special_tokens=True)
        assert "".join(p for _, p in streamed) == decoded.rstrip("\ufffd")
    with pytest.raises(InvalidArgument) as e:
        generator.generate("   ")
    assert e.value.subject == "prompt"


def test_a_broken_merge_fails_the_generation_export(runs, tmp_path):
    # The saved adapter disagrees with the merged checkpoint, as a wrong merge would make it.
    run = copy_with_broken_adapter(runs["lora"], tmp_path / "run")
    with pytest.raises(ParityError):
        export_bundle(run, tmp_path / "bundle", device="cpu", allow_degenerate=True)
    failed = json.loads((tmp_path / "bundle.invalid" / "manifest.json").read_text())
    assert failed["valid"] is False
    for case in failed["parity"]["cases"]:
        if case["compared"] == "merged pytorch vs onnxruntime":
            assert case["passed"] and case["margin"] <= 1
        else:
            assert case["compared"] == "peft unmerged vs onnxruntime" and case["margin"] > 1


def test_device_runtime_needs_neither_torch_nor_transformers(runs, tmp_path):
    import subprocess
    import sys

    bundle = export_bundle(runs["lora"], tmp_path / "bundle", device="cpu", allow_degenerate=True).dir
    script = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
              "from edgetune.runtime import TextGenerator\n"
              "g = TextGenerator(sys.argv[1], device='cpu')\n"
              "print(len(g.prompt_ids('reverse: red cat sun')), repr(g.generate('reverse: red cat sun', 3)))\n"
              "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    proc = subprocess.run([sys.executable, "-c", script, str(bundle)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = TextGenerator(bundle, device="cpu")
    assert proc.stdout.split()[0] == str(len(expected.prompt_ids("reverse: red cat sun")))


def test_generation_is_bounded_by_the_model_positions(runs, tmp_path):
    generator = TextGenerator(export_bundle(runs["lora"], tmp_path / "b", device="cpu", allow_degenerate=True).dir,
                              device="cpu")
    assert generator.max_positions == 512
    with pytest.raises(InvalidArgument) as e:
        generator.generate("reverse: red", 600)
    assert e.value.subject == "max_new_tokens"
    # A prompt longer than the model can see keeps its end and still generates.
    assert isinstance(generator.generate("reverse: " + "red cat " * 400, 3), str)
