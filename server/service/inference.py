"""Inference over exported bundles: warm predictors (``edgetune.runtime``) kept in a small LRU cache.

Two front doors share them: ``predict`` / ``generate`` (edgetune.v1.Inference) and the tensor
calls of the Open Inference Protocol (``model_info``, ``infer``), so both compute the same numbers.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgetune.errors import EdgetuneError, FailedPrecondition, InvalidArgument, NotFound, shown
from edgetune.runtime import (PREDICTORS, ImagePredictor, Prediction, Predictor, TextGenerator, TextPredictor,
                              load_predictor)
from edgetune.runtime.scores import predictions
from edgetune.tasks import IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION

from edgetune.server.service.config import ServerConfig
from edgetune.server.service.exports import Exports

MAX_PREDICT_INPUTS = 64
MAX_PREDICT_LABELS = 10_000  # inputs x top_k of one Predict reply (labels up to 128 characters each)
OUTPUTS = ("probabilities", "logits", "class_index", "label")  # what ``infer`` returns, in this order


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # the Open Inference Protocol's names: FP32, INT64, BYTES
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to call ``infer`` on an export."""

    name: str
    versions: tuple[str, ...]  # the export's variants; the first is its default
    inputs: tuple[Tensor, ...]  # any one of them (image exports: encoded images or pixels)
    outputs: tuple[Tensor, ...]


class Inference:
    """Classify images or texts, or stream a completion, with a valid export's bundle."""

    def __init__(self, config: ServerConfig, exports: Exports):
        self.config, self.exports = config, exports
        self._predictors: OrderedDict[tuple[str, str | None], Predictor] = OrderedDict()
        self._predictors_lock = threading.Lock()

    def predict(self, export_id: str, images: list[bytes], top_k: int, texts: list[str] | None = None,
                variant: str | None = None) -> list[Prediction]:
        """A prediction (top-k labels with class indices, the logits) per image (image exports) or
        per text (text classification exports), from ``variant`` of the export (default: its
        manifest's default variant)."""
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
        classes = len(predictor.labels)
        if top_k > classes:
            raise InvalidArgument("top_k", f"export {export_id} has {classes} classes; top_k must be 1-{classes} "
                                           "(0: 5, or all when fewer)")
        k = top_k or min(5, classes)
        if n * k > MAX_PREDICT_LABELS:
            raise InvalidArgument("top_k", f"{n} inputs x top_k {k} is over {MAX_PREDICT_LABELS} labels in one reply")
        return predictor.predict_texts(texts, top_k=k) if is_text else predictor.predict_encoded(images, top_k=k)

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

    def model_info(self, export_id: str) -> ModelInfo:
        """An export as an Open Inference Protocol model, read from its manifest (no session is
        loaded); FailedPrecondition for one that is not a classifier or not valid, NotFound for an
        unknown id."""
        manifest = self.exports.valid(export_id)["manifest"] or {}
        task, classes = manifest.get("task"), len(manifest.get("labels") or [])
        if task not in (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION):
            raise FailedPrecondition("model_name", f"export {export_id} is a {task} export: not served as a tensor "
                                                   "model (use Generate)")
        default = manifest.get("default_variant") or "fp32"
        versions = (default, *(v for v in (manifest.get("variants") or {}) if v != default))
        if task == TEXT_CLASSIFICATION:
            inputs = (Tensor("text", "BYTES", (-1,)),)
        else:
            size = (manifest.get("preprocessing") or {}).get("size", -1)
            inputs = (Tensor("image", "BYTES", (-1,)),
                      Tensor(manifest["inputs"][0]["name"], "FP32", (-1, 3, size, size)))
        outputs = (Tensor("probabilities", "FP32", (-1, classes)), Tensor("logits", "FP32", (-1, classes)),
                   Tensor("class_index", "INT64", (-1,)), Tensor("label", "BYTES", (-1,)))
        return ModelInfo(export_id, versions, inputs, outputs)

    def ready(self, export_id: str, version: str) -> bool:
        try:
            versions = self.model_info(export_id).versions
        except EdgetuneError:
            return False
        return not version or version in versions

    def infer(self, export_id: str, version: str, inputs: dict[str, np.ndarray | list[bytes]]
              ) -> dict[str, np.ndarray | list[bytes]]:
        """Run an export on one input tensor, named as ``model_info`` says: every output of
        ``OUTPUTS``, computed as ``predict`` computes them (the same predictions, all classes)."""
        info = self.model_info(export_id)
        if version and version not in info.versions:
            raise NotFound("model_version", f"export {export_id} has no variant {shown(version)}")
        if len(inputs) != 1:
            raise InvalidArgument("inputs", f"send exactly one input tensor, got {len(inputs)}")
        (name, value), = inputs.items()
        spec = next((t for t in info.inputs if t.name == name), None)
        if spec is None:
            raise InvalidArgument("inputs", f"export {export_id} takes one of: "
                                            f"{', '.join(t.name for t in info.inputs)}; got {shown(name)}")
        if (spec.datatype == "BYTES") != isinstance(value, list):
            raise InvalidArgument(f"inputs.{name}", f"must be {spec.datatype} {list(spec.shape)}")
        n = len(value)
        if not 1 <= n <= MAX_PREDICT_INPUTS:
            raise InvalidArgument(f"inputs.{name}", f"1 to {MAX_PREDICT_INPUTS} items per request, got {n}")
        # The default variant shares Predict's warm session (one cache entry per export and variant).
        predictor = self._classifier(export_id, None if version in ("", info.versions[0]) else version)
        classes = len(predictor.labels)
        try:
            if name == "text":
                try:
                    texts = [b.decode("utf-8") for b in value]
                except UnicodeDecodeError:
                    raise InvalidArgument("texts[0]", "every element must be UTF-8") from None
                found = predictor.predict_texts(texts, top_k=classes)
            elif name == "image":
                found = predictor.predict_encoded(list(value), top_k=classes)
            else:
                if value.dtype != np.float32 or tuple(value.shape[1:]) != spec.shape[1:]:
                    raise InvalidArgument(f"inputs.{name}", f"expected FP32 {list(spec.shape)}, got "
                                                            f"{value.dtype} {list(value.shape)}")
                found = predictions([f"{name}[{i}]" for i in range(n)], predictor.logits(value), predictor.labels,
                                    classes)
        except InvalidArgument as e:  # Predict's names for an element (images[i], texts[i]) in this API's
            raise InvalidArgument(re.sub(r"^(images|texts)(?=\[)", f"inputs.{name}", e.subject), e.message) from None
        probabilities = np.zeros((n, classes), np.float32)
        for row, p in zip(probabilities, found):
            row[p.indices] = [s for _, s in p.top]
        return {"probabilities": probabilities, "logits": np.array([p.logits for p in found], np.float32),
                "class_index": np.array([p.indices[0] for p in found], np.int64),
                "label": [p.top[0][0].encode() for p in found]}

    def _classifier(self, export_id: str, variant: str | None) -> ImagePredictor | TextPredictor:
        predictor = self._runtime(export_id, variant)
        if not isinstance(predictor, (ImagePredictor, TextPredictor)):
            raise FailedPrecondition("model_name", f"export {export_id} generates text: not served as a tensor "
                                                   "model (use Generate)")
        return predictor

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
