"""Shared fixtures: small real image folders written to tmp dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgetune.digits import write_digits_imagefolder

torch.set_num_threads(max(1, torch.get_num_threads()))


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


@pytest.fixture
def pattern_folder(tmp_path) -> Path:
    return write_pattern_folder(tmp_path / "patterns")


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def small_digits_folder(tmp_path_factory) -> Path:
    return write_digits_imagefolder(tmp_path_factory.mktemp("digits_small") / "digits", limit_per_class=20)
