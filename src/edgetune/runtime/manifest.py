"""A bundle's manifest: reading it, and verifying the bundle before anything runs it."""

from __future__ import annotations

import json
from pathlib import Path

from edgetune.errors import InvalidArgument, NotFound
from edgetune.integrity import sha256_file

from .sessions import create_session

BUNDLE_FORMAT = "edgetune.bundle/v1"


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
        f = bundle_dir / name
        if not f.is_file() or sha256_file(f) != (entry or {}).get("sha256"):
            raise InvalidArgument(str(f), "missing or sha256 does not match the manifest")
    return manifest


def variant_file(manifest: dict, variant: str | None = None) -> tuple[str, str]:
    """(precision, file) of a bundle's variant: ``variant`` (fp32, fp16, int8), or the manifest's
    ``default_variant`` when None. Bundles from before variants have model.onnx (fp32) alone."""
    variants = manifest.get("variants") or {"fp32": {"file": "model.onnx"}}
    name = variant or manifest.get("default_variant") or "fp32"
    if name not in variants:
        dropped = (manifest.get("dropped_variants") or {}).get(name)
        why = f" (dropped at export: {dropped['reason']})" if dropped else ""
        raise InvalidArgument("variant", f"the bundle has {', '.join(variants)}, not {name!r}{why}")
    return name, variants[name]["file"]


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
        self.session = create_session(self.dir / model_file, device, threads, spinning)
