"""Generated stubs are current; layering rules hold; the install exposes only `edgetune.*`."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "edgetune" / "v1").iterdir()}
    committed = {p.name: p.read_bytes() for p in (ROOT / "edgetune" / "v1").iterdir() if p.suffix in (".py", ".pyi")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run protos/generate.py: {stale} differ"


def test_only_server_transport_imports_grpc():
    allowed = {"grpc_app.py", "client.py", "convert.py", "cli.py", "demo.py"}
    offenders = []
    for folder in ("trainers", "export", "edgetune", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            if "v1" in path.parts or (folder == "server" and path.name in allowed):
                continue
            if re.search(r"^\s*(import grpc|from grpc|from edgetune\.v1)", path.read_text(), re.M):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_generic_top_level_packages_are_installed():
    for name in ("trainers", "export", "server"):
        spec = importlib.util.find_spec(name)
        # Run from the repo root the folders are visible as plain directories; an install must
        # not add them to site-packages.
        assert spec is None or "site-packages" not in str(spec.origin or spec.submodule_search_locations)
    assert importlib.util.find_spec("edgetune.trainers").submodule_search_locations[0].endswith("trainers")
