"""Batch export: many runs, in parallel processes, resumable, one failure never stopping the rest.

    items = [BatchItem(run, out, precisions), ...]   # or read_batch_file(path, out_root, ...)
    results = export_batch(items, workers=2)          # one ItemResult per item, in order

Resumable: a bundle whose manifest carries the same ``export.key`` (``export_key``: what the
export reads from the run, hashed, with the options and the edgetune version) and whose files
still match their hashes is up to date and skipped, so a batch killed midway redoes only what it
had not finished (a bundle appears only by an atomic rename, and the next export of it clears a killed one's
temporary folder).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.errors import EdgetuneError, InvalidArgument

from .provenance import export_key
from .specs import THREADS_ENV, parse_precisions

EXPORTED, UP_TO_DATE, FAILED = "exported", "up to date", "failed"
@dataclass
class BatchItem:
    run: Path
    out: Path
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    allow_degenerate: bool = False
    allow_unfinished: bool = False
    atol: float | None = None
    rtol: float | None = None
    device: str = "auto"  # where the fp32 parity gate runs (variants are gated on the CPU)

    def options(self) -> dict:
        return {"precisions": parse_precisions(self.precisions), "allow_degenerate": self.allow_degenerate,
                "allow_unfinished": self.allow_unfinished, "atol": self.atol, "rtol": self.rtol}


@dataclass
class ItemResult:
    run: str
    out: str
    status: str  # EXPORTED, UP_TO_DATE or FAILED
    seconds: float
    detail: str  # the variants kept (and the default), or why it failed


def up_to_date(item: BatchItem) -> bool:
    """The bundle at ``item.out`` is valid, intact, and was exported from this run with these options."""
    from edgetune.runtime.manifest import verify_bundle

    try:
        manifest = verify_bundle(item.out)
    except EdgetuneError:
        return False
    return (manifest.get("export") or {}).get("key") == export_key(item.run, item.options())


def _variants_summary(manifest: dict) -> str:
    kept = ", ".join(manifest.get("variants") or ["fp32"])
    dropped = ", ".join(f"{p} dropped" for p in manifest.get("dropped_variants") or {})
    return f"{kept} (default {manifest.get('default_variant', 'fp32')})" + (f"; {dropped}" if dropped else "")


def export_one(item: BatchItem) -> ItemResult:
    """Export one item (or skip it when up to date); never raises: a failure is its result."""
    from .bundle import export_bundle

    t0 = time.monotonic()
    try:
        if up_to_date(item):
            manifest = json.loads((item.out / "manifest.json").read_text())
            return ItemResult(str(item.run), str(item.out), UP_TO_DATE, 0.0, _variants_summary(manifest))
        result = export_bundle(item.run, item.out, device=item.device, force=item.out.exists(), atol=item.atol,
                               rtol=item.rtol, allow_degenerate=item.allow_degenerate,
                               allow_unfinished=item.allow_unfinished, precisions=item.precisions)
        return ItemResult(str(item.run), str(item.out), EXPORTED, time.monotonic() - t0,
                          _variants_summary(result.manifest))
    except EdgetuneError as e:
        return ItemResult(str(item.run), str(item.out), FAILED, time.monotonic() - t0, f"{e.subject}: {e.message}")
    except Exception as e:  # noqa: BLE001 - one member's bug must not stop the batch
        return ItemResult(str(item.run), str(item.out), FAILED, time.monotonic() - t0,
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _worker_init() -> None:
    from edgetune.launch import die_with_parent
    from edgetune.quiet import quiet_libraries

    die_with_parent()  # a killed batch leaves no export running behind it
    quiet_libraries()
    import torch

    torch.set_num_threads(max(1, int(os.environ.get(THREADS_ENV, "1"))))


def export_batch(items: list[BatchItem], workers: int = 1, on_result=None) -> list[ItemResult]:
    """Export every item, ``workers`` at a time in separate processes; results in item order.
    ``on_result(result)`` is called as each finishes."""
    check_items(items)
    out: dict[int, ItemResult] = {}
    todo = []
    for i, item in enumerate(items):  # cheap checks here: only stale items start an export process
        if up_to_date(item):
            manifest = json.loads((Path(item.out) / "manifest.json").read_text())
            out[i] = ItemResult(str(item.run), str(item.out), UP_TO_DATE, 0.0, _variants_summary(manifest))
            if on_result:
                on_result(out[i])
        else:
            todo.append(i)
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            out[i] = export_one(items[i])
            if on_result:
                on_result(out[i])
        return [out[i] for i in range(len(items))]
    # Each process's ONNX Runtime and torch get their share of the cores: exports side by side do
    # not oversubscribe them, and the latency each records is what that share gives.
    os.environ[THREADS_ENV] = str(max(1, (os.cpu_count() or 1) // workers))
    context = multiprocessing.get_context("spawn")

    def failed(i: int, why: str) -> ItemResult:
        return ItemResult(str(items[i].run), str(items[i].out), FAILED, 0.0, why)

    # A process that dies abruptly (OOM kill, a native crash) breaks the whole pool: what it still
    # held then runs again one item per pool, where a death is that item's own.
    broken = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(export_one, items[i]): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            try:
                out[i] = future.result()
            except BrokenProcessPool:
                broken.append(i)
                continue
            except Exception as e:  # noqa: BLE001 - a result that did not come back
                out[i] = failed(i, f"export process failed: {type(e).__name__}: {e}")
            if on_result:
                on_result(out[i])
    for i in sorted(broken):
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_worker_init) as pool:
            try:
                out[i] = pool.submit(export_one, items[i]).result()
            except BrokenProcessPool:
                out[i] = failed(i, "its export process died (killed, e.g. out of memory)")
            except Exception as e:  # noqa: BLE001
                out[i] = failed(i, f"export process failed: {type(e).__name__}: {e}")
        if on_result:
            on_result(out[i])
    return [out[i] for i in range(len(items))]


def check_items(items: list[BatchItem]) -> None:
    """Two items never write one bundle."""
    seen: dict[Path, Path] = {}
    for item in items:
        out = Path(item.out).resolve()
        if out in seen:
            raise InvalidArgument("out", f"{item.run} and {seen[out]} would both write {item.out}")
        seen[out] = item.run


def read_batch_file(path: str | Path, out_root: Path, defaults: dict) -> list[BatchItem]:
    """A batch file: JSON (a list of {"run", "out"?, "precision"?, "allow_degenerate"?, ...}) or
    plain text, one run directory per line (``#`` comments). ``out`` defaults to
    ``out_root/<run folder name>``; relative paths are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidArgument("batch file", f"{path}: {e.strerror}") from None
    base = path.parent
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except ValueError as e:
            raise InvalidArgument("batch file", f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise InvalidArgument("batch file", f"{path}: not valid JSON (nested too deeply)") from None
        if not isinstance(entries, list):
            raise InvalidArgument("batch file", f"{path}: expected a JSON list of entries")
    else:
        entries = [{"run": line.split("#")[0].strip()} for line in text.splitlines() if line.split("#")[0].strip()]
    items = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
            raise InvalidArgument("batch file", f"{path}: entry {i} needs a \"run\" path")
        run = base / entry["run"]
        out = base / entry["out"] if entry.get("out") else out_root / run.name
        precision = entry.get("precision", defaults.get("precisions", ["fp32"]))
        items.append(BatchItem(run, out, precision.split(",") if isinstance(precision, str) else list(precision),
                               bool(entry.get("allow_degenerate", defaults.get("allow_degenerate", False))),
                               bool(entry.get("allow_unfinished", defaults.get("allow_unfinished", False))),
                               entry.get("atol", defaults.get("atol")), entry.get("rtol", defaults.get("rtol"))))
    return items


def results_table(results: list[ItemResult]) -> str:
    """A summary table, one row per item, and a last line counting each status."""
    width = max([len(r.run) for r in results] + [3])
    lines = [f"{'run':{width}}  {'status':10}  {'time':>7}  detail"]
    for r in results:
        lines.append(f"{r.run:{width}}  {r.status:10}  {r.seconds:6.1f}s  {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in (EXPORTED, UP_TO_DATE, FAILED)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
