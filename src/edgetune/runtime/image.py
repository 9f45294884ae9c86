"""Image classification over a verified bundle: the manifest's preprocessing, then ONNX Runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from edgetune.errors import InvalidArgument, NotFound
from edgetune.tasks import IMAGE_CLASSIFICATION

from .imaging import (MAX_IMAGE_BYTES, MAX_PIXELS, ImageTooLarge, Preprocessing, decode_rgb, load_rgb, normalize,
                      resize_uint8)
from .manifest import BundleModel
from .scores import Prediction, check_top_k, predictions

TASK = IMAGE_CLASSIFICATION


class ImagePredictor(BundleModel):
    """Loads a valid image bundle (hashes verified) and classifies image files or encoded images."""

    task = TASK

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, variant: str | None = None):
        super().__init__(bundle_dir, device, threads, spinning, variant)
        try:
            self.preprocessing = Preprocessing.from_dict(self.manifest["preprocessing"])
            self.input_name = self.manifest["inputs"][0]["name"]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise InvalidArgument(str(self.dir / "manifest.json"),
                                  f"no usable preprocessing and inputs ({type(e).__name__}: {e})") from None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a normalized NCHW float32 batch."""
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    def pixels(self, image) -> np.ndarray:
        """A decoded PIL image resized to the model's input (HWC uint8)."""
        return resize_uint8(image, self.preprocessing.size, self.preprocessing.interpolation)

    def predict_files(self, paths: list[str | Path], top_k: int = 5, batch_size: int = 32, *,
                      max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> list[Prediction]:
        """Image files; ``max_pixels`` and ``max_bytes`` bound each before it is decoded (``load_rgb``)."""
        check_top_k(top_k)
        for p in paths:
            if not Path(p).is_file():
                raise NotFound(str(p), "image not found")
        return self._predict([str(p) for p in paths], partial(load_rgb, max_pixels=max_pixels, max_bytes=max_bytes),
                             lambda i, p: p, top_k, batch_size)

    def predict_encoded(self, images: list[bytes], top_k: int = 5, batch_size: int = 32, *,
                        max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> list[Prediction]:
        """Encoded images (PNG, JPEG, ...); a bad one, or one over ``max_pixels`` / ``max_bytes``,
        is named ``images[i]``."""
        check_top_k(top_k)
        return self._predict(images, partial(decode_rgb, max_pixels=max_pixels, max_bytes=max_bytes),
                             lambda i, _: f"images[{i}]", top_k, batch_size)

    def _predict(self, items: list, decode, name, top_k: int, batch_size: int) -> list[Prediction]:
        out = []
        for start in range(0, len(items), batch_size):
            arrays = []
            for i, item in enumerate(items[start:start + batch_size], start):
                try:
                    arrays.append(self.pixels(decode(item)))
                except ImageTooLarge as e:
                    raise InvalidArgument(name(i, item), str(e)) from None
                except Exception as e:  # noqa: BLE001 - any decode failure is the caller's image
                    raise InvalidArgument(name(i, item), f"cannot decode as an image: {e}") from None
            chunk = items[start:start + batch_size]
            out += predictions([name(i, item) for i, item in enumerate(chunk, start)],
                               self.logits(normalize(np.stack(arrays), self.preprocessing)), self.labels, top_k)
        return out
