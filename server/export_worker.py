"""One export, one process: ``python -m edgetune.server.export_worker --db DB --export ID --run-dir DIR``.

Runs ``export_bundle`` for a queued export (its options are in the store), writes its progress as
events, and records the outcome: SUCCEEDED with the manifest and a tar of the bundle on disk (what
DownloadArtifact streams), or FAILED with the reason (a failed parity gate keeps its manifest).
Exit code 0 whenever the outcome is recorded; anything else is a crash the runner reports (or, at
a server stop, re-queues: an export is redone from the start, its bundle appearing atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path

from edgetune.errors import EdgetuneError, ParityError
from edgetune.launch import die_with_parent
from edgetune.progress import LogLine
from edgetune.server.store import FAILED, SUCCEEDED, Store

ARTIFACT = "bundle.tar"


def write_artifact(bundle: Path, out: Path, name: str) -> tuple[str, int]:
    """A deterministic tar of the bundle (sorted, mtime 0, no owners, mode 0644) under ``name/``,
    written next to it; returns (sha256, bytes)."""
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(f for f in bundle.rglob("*") if f.is_file()):
            info = tf.gettarinfo(str(p), arcname=f"{name}/{p.relative_to(bundle).as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644  # the extracting side applies its umask, as for any file it writes
            with open(p, "rb") as f:
                tf.addfile(info, f)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    tmp.rename(out)
    return h.hexdigest(), out.stat().st_size


def run_export(store: Store, export_id: str, run_dir: Path) -> None:
    from edgetune.export.bundle import export_bundle
    from edgetune.export.parity import parity_line

    row = store.get_export(export_id)
    options, out = row["options"], Path(row["path"])

    def progress(event) -> None:
        if isinstance(event, LogLine):
            store.add_event(export_id, "log", {"message": event.message})

    try:
        result = export_bundle(run_dir, out, device="cpu", force=out.exists(), atol=options.get("atol"),
                               rtol=options.get("rtol"), allow_degenerate=options.get("allow_degenerate", False),
                               precisions=options.get("precisions", ["fp32"]), source=row["job_id"],
                               progress=progress)
    except ParityError as e:
        invalid = out.with_name(out.name + ".invalid")
        manifest = _read_json(invalid / "manifest.json")
        reason = e.report.summary() if e.report is not None else e.message.split("; failed bundle")[0]
        store.add_event(export_id, "log", {"message": reason})
        store.set_export_state(export_id, FAILED, reason, valid=False, manifest=manifest, path=str(invalid))
        return
    except EdgetuneError as e:
        store.set_export_state(export_id, FAILED, f"{e.subject}: {e.message}", valid=False)
        return
    store.add_event(export_id, "log", {"message": parity_line(result.parity)})
    sha, size = write_artifact(out, out.parent / ARTIFACT, export_id)
    store.set_export_state(export_id, SUCCEEDED, valid=True, manifest=result.manifest, artifact_sha256=sha,
                           artifact_bytes=size)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgetune.server.export_worker")
    p.add_argument("--db", required=True)
    p.add_argument("--export", required=True)
    p.add_argument("--run-dir", required=True)
    args = p.parse_args(argv)
    die_with_parent()
    from edgetune.quiet import quiet_libraries

    quiet_libraries()
    store = Store(args.db)
    try:
        run_export(store, args.export, Path(args.run_dir))
    except Exception as e:  # noqa: BLE001 - recorded, so the export never stays RUNNING
        store.set_export_state(args.export, FAILED, f"export crashed: {type(e).__name__}: {e}", valid=False)
        raise
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
