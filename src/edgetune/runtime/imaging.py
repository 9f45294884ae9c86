"""Image decoding and preprocessing, shared by training and bundle inference.

One definition means the pixels an exported model sees on a device are computed exactly as
during training and validation. Only numpy and Pillow: no torch needed to run a bundle.

What a device must do, exactly (the manifest's ``preprocessing`` says the same, and training does
the same through these functions; the Node.js check in ``clients/node-runtime`` reproduces it):

1. Decode to 8-bit RGB: grayscale replicated to three channels, palette colours looked up,
   alpha dropped (not composited over any background), EXIF orientation not applied.
2. Squash to ``size`` x ``size`` (aspect ratio not kept, nothing cropped) with an antialiased
   bilinear (triangle) filter in fixed point, one axis at a time as Pillow does each axis:
   horizontal pass, then vertical pass, each output value an 8-bit integer. Per axis
   (``n_in`` -> ``n_out``), in float64: ``scale = n_in / n_out``, ``support = max(scale, 1)``; output ``i`` has ``center = (i + 0.5) * scale``, reads inputs
   ``j`` from ``xmin = max(trunc(center - support + 0.5), 0)`` to
   ``min(trunc(center + support + 0.5), n_in)`` (exclusive) with weights
   ``max(0, 1 - |(j - center + 0.5) * (1 / support)|)``, each divided by their sum (summed in
   order of ``j``) and then made integers ``k = trunc(w * 2**22 + 0.5)``. The value is
   ``clamp((2**21 + sum(k * pixel)) >> 22, 0, 255)``. An axis whose length does not change is copied.
3. ``(pixel / 255 - mean) / std`` per channel, in float32, laid out NCHW.

Limits, checked before anything is decoded (images come from remote clients and uploads):
``MAX_IMAGE_BYTES`` (64 MiB) of encoded bytes, and ``MAX_PIXELS`` (40,000,000: about 120 MB as
RGB) of width times height, read from the header (a 164 KB PNG can declare 13000x13000 pixels, 850
MB decoded). Both are keywords of ``load_rgb`` and ``decode_rgb``; over either, ``ImageTooLarge``
(a ``ValueError``). Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``) still applies on top, and
what it refuses is refused as ``ImageTooLarge`` too.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # width * height an image may declare (module docstring)
MAX_IMAGE_BYTES = 64 * 1024**2  # encoded bytes an image may have


class ImageTooLarge(ValueError):
    """An image over the pixel budget or the byte limit, refused before it is decoded."""


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
                "scale": "1/255", **DEVICE_STEPS}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        if d.get("interpolation", "bilinear") != "bilinear":
            raise ValueError(f"unknown interpolation {d['interpolation']!r}: bundles resize with 'bilinear'")
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]))


# The manifest's exact statement of steps 1 and 2 of the module docstring (a device needs nothing else).
DEVICE_STEPS = {
    "decode": {"bits": 8, "grayscale": "replicated to RGB", "palette": "looked up", "alpha": "dropped, not composited",
               "exif_orientation": "not applied"},
    "resize": {"aspect": "squash to size x size, no crop", "filter": "antialiased bilinear (triangle, support "
               "max(n_in/n_out, 1))", "order": "horizontal pass, then vertical", "intermediate": "uint8",
               "coefficients": "float64 weights normalized to sum 1, then trunc(w * 2^22 + 0.5)",
               "rounding": "(2^21 + sum(k * pixel)) >> 22, clamped to [0, 255]",
               "reference": "edgetune.runtime.imaging.resize_hwc"},
    "normalize": "(pixel / 255 - mean) / std per channel, float32",
}


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Decode an image file fully (so truncated files fail here) and convert to RGB.
    ``ImageTooLarge`` past ``max_bytes`` on disk or ``max_pixels`` in its header."""
    with open(path, "rb") as f:
        _check_bytes(os.fstat(f.fileno()).st_size, max_bytes)
        return _decode(f, max_pixels)


def decode_rgb(data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, ...) fully and convert to RGB.
    ``ImageTooLarge`` past ``max_bytes`` or ``max_pixels`` in its header."""
    _check_bytes(len(data), max_bytes)
    return _decode(io.BytesIO(data), max_pixels)


def _check_bytes(n: int, max_bytes: int) -> None:
    if n > max_bytes:
        raise ImageTooLarge(f"{n} bytes exceeds the {max_bytes}-byte limit")


# The decoders images may reach (MPO: phone JPEGs); no EPS (Ghostscript), PSD, ICO, ...
DECODE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "WEBP", "GIF", "TIFF")


def _decode(f: BinaryIO, max_pixels: int) -> Image.Image:
    """Open lazily (the header only), check the pixel budget, then decode. Pillow's bomb warning is
    an exception only where warnings are made errors (filters are process-wide: not changed here)."""
    try:
        im = Image.open(f, formats=DECODE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"over Pillow's decompression bomb limit: {e}") from None
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{width}x{height} pixels exceeds the {max_pixels}-pixel budget")
        im.load()
        return im.convert("RGB")


def resize_uint8(image: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """A decoded RGB image squashed to a square ``size``, HWC uint8 (``resize_hwc``)."""
    if interpolation != "bilinear":
        raise ValueError(f"unknown interpolation {interpolation!r}: images resize with 'bilinear'")
    return resize_hwc(np.asarray(image, dtype=np.uint8), size)


RESIZE_VERSION = "r1"  # names the decoded-pixel cache files: a new resize rule is a new name
PRECISION_BITS = 22  # fixed-point bits of the resize coefficients (Pillow's, for 8-bit images)


@lru_cache(maxsize=256)
def _coefficients(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(input index, integer weight) per output index and tap, zero-padded to the widest row: step 2
    of the module docstring (exact integers, so the order of the sum does not matter)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    rows = []
    for i in range(n_out):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        ss = 1.0 / support
        weights = [max(0.0, 1.0 - abs((j - center + 0.5) * ss)) for j in range(xmin, xmax)]
        total = 0.0
        for w in weights:
            total += w
        rows.append((xmin, [int((w / total if total else w) * (1 << PRECISION_BITS) + 0.5) for w in weights]))
    taps = max(len(k) for _, k in rows)
    index, weight = np.zeros((n_out, taps), np.int64), np.zeros((n_out, taps), np.int32)
    for i, (xmin, k) in enumerate(rows):
        index[i, :len(k)] = np.arange(xmin, xmin + len(k))
        weight[i, :len(k)] = k
    return index, weight


def _resample_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """One pass of step 2 along ``axis`` of an HWC uint8 array."""
    if x.shape[axis] == n_out:
        return x
    index, weight = _coefficients(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    # int32 cannot overflow: the weights sum to about 2**22, so |acc| < 2**21 + 255 * 2**22 < 2**31
    acc = np.full(x.shape[:axis] + (n_out,) + x.shape[axis + 1:], 1 << (PRECISION_BITS - 1), np.int32)
    for t in range(index.shape[1]):
        acc += weight[:, t].reshape(shape) * np.take(x, index[:, t], axis=axis)
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_hwc(hwc_uint8: np.ndarray, size: int) -> np.ndarray:
    """Step 2 of the module docstring: squash HWC uint8 pixels to ``size`` x ``size``."""
    return _resample_axis(_resample_axis(np.asarray(hwc_uint8, np.uint8), size, 1), size, 0)


def normalize(hwc_uint8: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """HWC uint8 (or NHWC) -> CHW (or NCHW) float32, scaled and normalized."""
    x = hwc_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_files(paths: list[str | Path], prep: Preprocessing) -> np.ndarray:
    """Decode, resize and normalize files into an NCHW float32 batch."""
    arrays = [resize_uint8(load_rgb(p), prep.size, prep.interpolation) for p in paths]
    return normalize(np.stack(arrays), prep)
