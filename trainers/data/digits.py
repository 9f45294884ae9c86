"""scikit-learn's digits (1,797 real 8x8 handwritten digits) written as an ImageFolder.

The data ships inside the scikit-learn wheel, so the demo and the tests need no network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_imagefolder(out_dir: str | Path, limit_per_class: int | None = None) -> Path:
    """Write ``out_dir/<digit>/<index>.png`` (8-bit grayscale, 8x8). Returns ``out_dir``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out_dir)
    counts: dict[int, int] = {}
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        label = int(label)
        if limit_per_class is not None and counts.get(label, 0) >= limit_per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        d = out / str(label)
        d.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(d / f"{i:04d}.png")
    return out
