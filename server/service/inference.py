"""Inference over exported bundles: warm predictors (``edgetune.runtime``) kept in a small LRU cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from edgetune.errors import FailedPrecondition, InvalidArgument
from edgetune.runtime import PREDICTORS, Predictor, TextGenerator, TextPredictor, load_predictor

from edgetune.server.service.config import ServerConfig
from edgetune.server.service.exports import Exports

MAX_PREDICT_INPUTS = 64


class Inference:
    """Classify images or texts, or stream a completion, with a valid export's bundle."""

    def __init__(self, config: ServerConfig, exports: Exports):
        self.config, self.exports = config, exports
        self._predictors: OrderedDict[tuple[str, str | None], Predictor] = OrderedDict()
        self._predictors_lock = threading.Lock()

    def predict(self, export_id: str, images: list[bytes], top_k: int, texts: list[str] | None = None,
                variant: str | None = None) -> list[list[tuple[str, float]]]:
        """Top-k labels per image (image exports) or per text (text classification exports), from
        ``variant`` of the export (default: its manifest's default variant)."""
        texts = texts or []
        field, n = ("texts", len(texts)) if texts else ("images", len(images))
        if images and texts:
            raise InvalidArgument("texts", "send images or texts, not both")
        if n == 0:
            raise InvalidArgument("images", "at least one image or text is required")
        if n > MAX_PREDICT_INPUTS:
            raise InvalidArgument(field, f"at most {MAX_PREDICT_INPUTS} per request")
        if top_k < 0:
            raise InvalidArgument("top_k", "must be >= 0")
        predictor = self._runtime(export_id, variant)
        if isinstance(predictor, TextGenerator):
            raise FailedPrecondition("export_id", f"export {export_id} generates text; use Generate")
        is_text = isinstance(predictor, TextPredictor)
        if is_text != bool(texts):
            kind = "text" if is_text else "image"
            raise InvalidArgument(field, f"export {export_id} is a {kind} classifier; send {kind}s")
        k = min(top_k or 5, len(predictor.labels))
        predictions = predictor.predict_texts(texts, top_k=k) if is_text else predictor.predict_encoded(images, top_k=k)
        return [p.top for p in predictions]

    def generate(self, export_id: str, prompt: str, max_new_tokens: int) -> Iterator[tuple[int, str]]:
        """(token id, text piece) per new token of a greedy completion."""
        if not 0 <= max_new_tokens <= 4096:
            raise InvalidArgument("max_new_tokens", f"must be in [0, 4096], got {max_new_tokens}")
        if not prompt.strip():
            raise InvalidArgument("prompt", "must be a non-empty string")
        generator = self._runtime(export_id)
        if not isinstance(generator, TextGenerator):
            raise FailedPrecondition("export_id", f"export {export_id} is a classifier; use Predict")
        return generator.stream(prompt, max_new_tokens or None)

    def _runtime(self, export_id: str, variant: str | None = None) -> Predictor:
        key = (export_id, variant)
        with self._predictors_lock:
            if key in self._predictors:
                self._predictors.move_to_end(key)
                return self._predictors[key]
        row = self.exports.valid(export_id)
        task = (row["manifest"] or {}).get("task")
        if task not in PREDICTORS:
            raise FailedPrecondition("export_id", f"export {export_id} has an unknown task {task!r}")
        predictor = load_predictor(row["path"], variant=variant)
        with self._predictors_lock:
            self._predictors[key] = predictor
            while len(self._predictors) > self.config.predictor_cache:
                self._predictors.popitem(last=False)
        return predictor
