"""Shared fixtures: small real image folders written to tmp dirs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgetune.trainers.data.digits import write_digits_imagefolder

torch.set_num_threads(max(1, torch.get_num_threads()))
# The data cache (dataset indexes, decoded pixels) of this test session: never the user's ~/.cache.
os.environ["EDGETUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgetune-test-cache-")
atexit.register(shutil.rmtree, os.environ["EDGETUNE_CACHE_DIR"], True)


def write_pattern_folder(root: Path, classes=("a", "b", "c"), per_class: int = 12, size: int = 24,
                         seed: int = 0) -> Path:
    """Distinct, learnable images: each class a different colour channel plus noise."""
    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., k % 3] += 150
            Image.fromarray(img).save(d / f"{c}_{i}.png")
    return root


def write_identical_folder(root: Path, classes=("a", "b", "c"), per_class: int = 12, size: int = 24) -> Path:
    """Images with the same pixels in every class (files differ only in a PNG text chunk, so none
    is a byte duplicate): nothing to learn, and any model gives every input the same outputs."""
    from PIL.PngImagePlugin import PngInfo

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            info = PngInfo()
            info.add_text("n", f"{c}{i}")
            img.save(root / c / f"{c}_{i}.png", pnginfo=info)
    return root


@pytest.fixture
def pattern_folder(tmp_path) -> Path:
    return write_pattern_folder(tmp_path / "patterns")


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def small_digits_folder(tmp_path_factory) -> Path:
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits_small") / "digits", limit_per_class=20)


TOPICS = {"sport": "goal match team score league coach player win".split(),
          "food": "pizza pasta salad cook recipe oven taste bread".split(),
          "tech": "laptop code server chip cloud phone app data".split()}
_FILLER = "the a today really very some my our new old".split()


def write_topic_texts(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """Learnable text classification rows (JSONL): topic words decide the label."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            label = rng.choice(sorted(TOPICS))
            words = [rng.choice(TOPICS[label]) for _ in range(rng.randint(3, 8))]
            words += [rng.choice(_FILLER) for _ in range(rng.randint(2, 6))]
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


@pytest.fixture
def topic_texts(tmp_path) -> Path:
    return write_topic_texts(tmp_path / "topics.jsonl")


_WORDS = "red blue green cat dog sun moon tree car book".split()


def write_reverse_pairs(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """Learnable instruction rows (JSONL): reverse three words."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            words = rng.sample(_WORDS, 3)
            f.write(json.dumps({"prompt": "reverse: " + " ".join(words), "response": " ".join(reversed(words))}) + "\n")
    return path


def copy_with_broken_adapter(run_dir: Path, dest: Path) -> Path:
    """A copy of a LoRA run whose saved adapter no longer matches its merged checkpoint."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, dest)
    path = dest / "adapter" / "adapter_model.safetensors"
    tensors = {k: v + 0.5 if "lora_B" in k else v for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))
    return dest


MANIFEST_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "bundle-manifest.schema.json"


def assert_valid_manifest(manifest: dict) -> None:
    """The manifest matches the published JSON Schema, and no string in it is a path of this machine."""
    import json

    import jsonschema

    jsonschema.Draft202012Validator(json.loads(MANIFEST_SCHEMA.read_text())).validate(manifest)
    paths = []

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str) and (value.startswith("/") or "/tmp/" in value or str(Path.home()) in value):
            paths.append(f"{where}: {value}")

    walk(manifest, "manifest")
    assert not paths, paths


@pytest.fixture(scope="session")
def digits_resnet_run(digits_folder, tmp_path_factory) -> Path:
    """A real model trained on real data: ResNet-18 (random init) on scikit-learn's digits at 32 px,
    3 epochs (> 95% held-out accuracy; 359 images held out, 300 kept for INT8 calibration)."""
    from edgetune.trainers.config import load_config
    from edgetune.trainers.recipes.image_classification import train_image

    cfg = load_config(overrides={"data.path": str(digits_folder), "data.image_size": 32, "model.arch": "resnet18",
                                 "model.weights": "random", "optim.epochs": 3, "optim.batch_size": 32})
    return train_image(cfg, tmp_path_factory.mktemp("digits_resnet") / "run").run_dir
