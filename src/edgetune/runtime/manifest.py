"""A bundle's manifest: reading it, and verifying the bundle before anything runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from edgetune.errors import InvalidArgument, NotFound
from edgetune.integrity import sha256_file

from .sessions import create_session

if TYPE_CHECKING:
    import onnxruntime as ort

BUNDLE_FORMAT = "edgetune.bundle/v1"
# What ONNX Runtime raises for a model file it cannot load (its error classes share no base of their own).
_MODEL_ERRORS = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.Fail,
                 ort_errors.NotImplemented, ort_errors.NoSuchFile)


def manifest_of(bundle_dir: str | Path) -> dict:
    """The manifest as written (not verified: see ``verify_bundle``)."""
    path = Path(bundle_dir) / "manifest.json"
    if not Path(bundle_dir).exists():
        raise NotFound(str(bundle_dir), "no such bundle directory")
    if not path.is_file():
        raise NotFound(str(bundle_dir), "not a bundle (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgument(str(path), f"unreadable manifest: {e}") from None
    except RecursionError:
        raise InvalidArgument(str(path), "unreadable manifest: nested too deeply") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InvalidArgument(str(path), f"unknown bundle format {manifest.get('format')!r}"
                              if isinstance(manifest, dict) else "not a JSON object")
    return manifest


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check a bundle is marked valid and every file matches its sha256; returns the manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = manifest_of(bundle_dir)
    path = bundle_dir / "manifest.json"
    if not manifest.get("valid"):
        raise InvalidArgument(str(bundle_dir), "bundle is not valid (it failed the parity gate)")
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.onnx" not in files:
        raise InvalidArgument(str(path), "manifest lists no model.onnx hash")
    for name, entry in files.items():
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or not isinstance(entry, dict):
            raise InvalidArgument(str(path), f"files[{name!r}] is not a file of the bundle with its sha256")
        f = bundle_dir / name
        if not f.is_file() or sha256_file(f) != entry.get("sha256"):
            raise InvalidArgument(str(f), "missing or sha256 does not match the manifest")
    return manifest


def variant_file(manifest: dict, variant: str | None = None) -> tuple[str, str]:
    """(precision, file) of a bundle's variant: ``variant`` (fp32, fp16, int8), or the manifest's
    ``default_variant`` when None. Bundles from before variants have model.onnx (fp32) alone."""
    variants = manifest.get("variants") or {"fp32": {"file": "model.onnx"}}
    name = variant or manifest.get("default_variant") or "fp32"
    if not isinstance(variants, dict) or not isinstance(name, str):
        raise InvalidArgument("variants", "the manifest's variants are not a mapping of precisions")
    if name not in variants:
        dropped = (manifest.get("dropped_variants") or {}).get(name)
        why = f" (dropped at export: {dropped['reason']})" if dropped else ""
        raise InvalidArgument("variant", f"the bundle has {', '.join(variants)}, not {name!r}{why}")
    file = variants[name].get("file") if isinstance(variants[name], dict) else None
    if not isinstance(file, str):
        raise InvalidArgument("variants", f"the manifest names no file for {name}")
    return name, file


def expect_task(manifest: dict, bundle_dir: str | Path, task: str) -> None:
    if manifest.get("task") != task:
        raise InvalidArgument("bundle", f"{bundle_dir} is a {manifest.get('task')} bundle, not {task}")


class BundleModel:
    """A verified bundle of the subclass's ``task``, with its labels and a warm ONNX Runtime session
    on one of its variants (``variant``: fp32, fp16, int8; default: the manifest's default)."""

    task: str

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, variant: str | None = None):
        self.dir = Path(bundle_dir)
        self.manifest = verify_bundle(self.dir)
        expect_task(self.manifest, bundle_dir, self.task)
        self.labels: list[str] = list(self.manifest.get("labels") or [])
        self.variant, model_file = variant_file(self.manifest, variant)
        if model_file not in self.manifest["files"]:  # verify_bundle checked exactly these
            raise InvalidArgument(str(self.dir / "manifest.json"), f"the {self.variant} variant's file "
                                                                   f"{model_file!r} has no sha256")
        self.session = load_model(self.dir / model_file, device, threads, spinning)


def load_model(path: Path, device: str = "auto", threads: int | None = None, spinning: bool = True
               ) -> ort.InferenceSession:
    """An ONNX Runtime session on a bundle's model file, which must hold all its tensors: one that
    names external data (a path outside the bundle, say) is refused before anything reads it, and
    a file ONNX Runtime cannot load is an InvalidArgument naming it."""
    try:
        locations = external_data(path.read_bytes())
    except ValueError as e:
        raise InvalidArgument(str(path), f"not an ONNX model ({e})") from None
    if locations:
        raise InvalidArgument(str(path), f"refers to external data {locations[0]!r}; a bundle's model holds its "
                                         "own tensors, so it is not loaded")
    try:
        return create_session(path, device, threads, spinning)
    except _MODEL_ERRORS as e:
        raise InvalidArgument(str(path), f"ONNX Runtime cannot load it: {' '.join(str(e).split())[:300]}") from None


# Where an ONNX file's messages hold tensors (onnx.proto field numbers): message -> {field: message}.
_TENSOR_PATHS = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_DEPTH = 100  # protobuf's own default nesting limit


def external_data(model: bytes) -> list[str]:
    """The external data locations the tensors of a serialized ONNX model name (graphs, subgraphs,
    functions, training graphs), read from the protobuf wire format without the onnx package.
    ValueError when the bytes are not a protobuf message."""
    found: list[str] = []
    _scan(memoryview(model), "model", found, 0)
    return found


def _scan(buf: memoryview, kind: str, found: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    location, external = "", False
    for number, value in _fields(buf):
        if kind == "tensor":  # data_location EXTERNAL, or any external_data entry, counts
            external = external or (number == 14 and value == _EXTERNAL) or number == 13
            if number == 13 and isinstance(value, memoryview):
                entry = dict(_fields(value))
                key, where = entry.get(1), entry.get(2)
                if isinstance(key, memoryview) and key.tobytes() == b"location" and isinstance(where, memoryview):
                    location = where.tobytes().decode("utf-8", "replace")
        elif number in _TENSOR_PATHS[kind] and isinstance(value, memoryview):
            _scan(value, _TENSOR_PATHS[kind][number], found, depth + 1)
    if external:
        found.append(location)


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview | None]]:
    """(field number, value) of each field of one protobuf message: varints as ints, length-delimited
    fields as views, fixed-width ones as None."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire}")
        if i > end:
            raise ValueError("truncated")
        yield number, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        if i >= len(buf):
            raise ValueError("truncated")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    raise ValueError("varint too long")
