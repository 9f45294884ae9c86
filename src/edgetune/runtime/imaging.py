"""Image decoding and preprocessing, shared by training and bundle inference.

One definition means the pixels an exported model sees on a device are computed exactly as
during training and validation. Only numpy and Pillow: no torch needed to run a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input: resize to ``size`` x ``size``, scale to [0, 1], normalize."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "layout": "NCHW", "channels": "RGB",
                "scale": "1/255"}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   interpolation=d.get("interpolation", "bilinear"))


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully (so truncated files fail here) and convert to RGB."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def decode_rgb(data: bytes) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, ...) fully and convert to RGB."""
    import io

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.convert("RGB")


def resize_uint8(image: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize to a square ``size`` and return HWC uint8."""
    if image.size != (size, size):
        image = image.resize((size, size), _RESAMPLE[interpolation])
    return np.asarray(image, dtype=np.uint8)


def normalize(hwc_uint8: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """HWC uint8 (or NHWC) -> CHW (or NCHW) float32, scaled and normalized."""
    x = hwc_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_files(paths: list[str | Path], prep: Preprocessing) -> np.ndarray:
    """Decode, resize and normalize files into an NCHW float32 batch."""
    arrays = [resize_uint8(load_rgb(p), prep.size, prep.interpolation) for p in paths]
    return normalize(np.stack(arrays), prep)
