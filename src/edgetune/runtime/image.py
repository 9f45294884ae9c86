"""Image classification over a verified bundle: the manifest's preprocessing, then ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.errors import InvalidArgument, NotFound
from edgetune.tasks import IMAGE_CLASSIFICATION

from .imaging import Preprocessing, decode_rgb, load_rgb, normalize, resize_uint8
from .manifest import BundleModel
from .scores import Prediction, check_top_k, top_labels

TASK = IMAGE_CLASSIFICATION


class ImagePredictor(BundleModel):
    """Loads a valid image bundle (hashes verified) and classifies image files or encoded images."""

    task = TASK

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, variant: str | None = None):
        super().__init__(bundle_dir, device, threads, spinning, variant)
        self.preprocessing = Preprocessing.from_dict(self.manifest["preprocessing"])
        self.input_name = self.manifest["inputs"][0]["name"]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a normalized NCHW float32 batch."""
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    def pixels(self, image) -> np.ndarray:
        """A decoded PIL image resized to the model's input (HWC uint8)."""
        return resize_uint8(image, self.preprocessing.size, self.preprocessing.interpolation)

    def predict_files(self, paths: list[str | Path], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        check_top_k(top_k)
        for p in paths:
            if not Path(p).is_file():
                raise NotFound(str(p), "image not found")
        return self._predict([str(p) for p in paths], load_rgb, lambda i, p: p, top_k, batch_size)

    def predict_encoded(self, images: list[bytes], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        """Encoded images (PNG, JPEG, ...); a bad one is named ``images[i]``."""
        check_top_k(top_k)
        return self._predict(images, decode_rgb, lambda i, _: f"images[{i}]", top_k, batch_size)

    def _predict(self, items: list, decode, name, top_k: int, batch_size: int) -> list[Prediction]:
        out = []
        for start in range(0, len(items), batch_size):
            arrays = []
            for i, item in enumerate(items[start:start + batch_size], start):
                try:
                    arrays.append(self.pixels(decode(item)))
                except Exception as e:  # noqa: BLE001 - any decode failure is the caller's image
                    raise InvalidArgument(name(i, item), f"cannot decode as an image: {e}") from None
            tops = top_labels(self.logits(normalize(np.stack(arrays), self.preprocessing)), self.labels, top_k)
            out += [Prediction(name(i, item), top) for i, (item, top) in
                    enumerate(zip(items[start:start + batch_size], tops), start)]
        return out
