"""Bundles reproduce outside Python: the Node.js runtime in clients/node-runtime (onnxruntime-node,
a maintained JS tokenizer, a PNG decoder) runs image and text bundles from the manifest alone and
matches Python ONNX Runtime within 1e-4 on every variant."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetune.export.bundle import export_bundle
from edgetune.runtime import ImagePredictor, TextPredictor
from edgetune.runtime.imaging import preprocess_files
from edgetune.trainers.config import load_config
from edgetune.trainers.recipes.text_classification import train_text
from tests.conftest import write_topic_texts

NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node-runtime"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir(),
    reason="needs node and `npm ci` in clients/node-runtime (make test does both)")]


def _images(folder: Path, digits_folder: Path) -> list[Path]:
    """Real digits, and PNGs of every colour type and of sizes up and down from the model's."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = sorted((digits_folder / "3").glob("*.png"))[:3] + sorted((digits_folder / "8").glob("*.png"))[:3]
    made = {"rgb_odd.png": Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)),
            "rgba.png": Image.fromarray(rng.integers(0, 256, (64, 20, 4), dtype=np.uint8), "RGBA"),
            "grey.png": Image.fromarray(rng.integers(0, 256, (33, 33), dtype=np.uint8), "L"),
            "palette.png": Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).quantize(64),
            "large.png": Image.fromarray(np.kron(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
                                                 np.ones((10, 10, 1), np.uint8))),
            "tiny.png": Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))}
    for name, image in made.items():
        image.save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def bundles(digits_resnet_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("node_bundles")
    image = export_bundle(digits_resnet_run, root / "image", device="cpu", precisions="fp32,fp16,int8").dir
    data = write_topic_texts(root / "topics.jsonl")
    cfg = load_config(overrides={"task": "text_classification", "data.path": str(data), "model.arch": "bert",
                                 "model.weights": "random", "method": "full", "optim.epochs": 3, "optim.lr": 1e-2,
                                 "optim.batch_size": 16, "data.max_length": 24})
    text = export_bundle(train_text(cfg, root / "text_run").run_dir, root / "text", device="cpu",
                         precisions="fp32,fp16,int8").dir
    return image, text


def test_node_reproduces_every_variant_from_the_manifest(bundles, digits_folder, tmp_path):
    image_bundle, text_bundle = bundles
    images = _images(tmp_path / "images", digits_folder)
    rows = json.loads((text_bundle.parent / "text_run" / "heldout.json").read_text())
    texts = [r["text"] for r in rows[:12]] + [" ".join(["pizza oven bread"] * 30),  # longer than max_length
                                              "Café naïve: 東京 cloud?!", "  padded   spaces  "]
    cases = []
    for bundle, kind in ((image_bundle, "image"), (text_bundle, "text")):
        manifest = json.loads((bundle / "manifest.json").read_text())
        for variant in manifest["variants"]:
            if kind == "image":
                predictor = ImagePredictor(bundle, device="cpu", variant=variant)
                logits = predictor.logits(preprocess_files(images, predictor.preprocessing))
                cases.append({"bundle": str(bundle), "variant": variant, "kind": kind,
                              "inputs": [str(p) for p in images], "logits": logits.tolist()})
            else:
                predictor = TextPredictor(bundle, device="cpu", variant=variant)
                cases.append({"bundle": str(bundle), "variant": variant, "kind": kind, "inputs": texts,
                              "logits": predictor.logits(texts).tolist(), "ids": predictor.encoder.ids(texts)})
    assert {(c["kind"], c["variant"]) for c in cases} >= {("image", "fp32"), ("image", "int8"), ("text", "fp32"),
                                                          ("text", "int8")}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(["node", "check.js", str(tmp_path / "cases.json")], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=300)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(results) == len(cases), (proc.stdout, proc.stderr)
    for r in results:
        assert r["ok"] and r["max_abs_logit_diff"] <= 1e-4 and r["max_abs_prob_diff"] <= 1e-4, r
        assert r["kind"] == "image" or r["ids_match"], r


def test_node_refuses_a_tampered_bundle(bundles, tmp_path):
    copy = shutil.copytree(bundles[0], tmp_path / "bundle")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[100] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    script = ("import { loadBundle } from './bundle.js';"
              "try { await loadBundle(process.argv[1]); console.log('loaded'); } catch (e) { console.log(e.message); }")
    proc = subprocess.run(["node", "--input-type=module", "-e", script, str(copy)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert "model.onnx: sha256 does not match the manifest" in proc.stdout, proc.stderr
