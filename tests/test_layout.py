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
    committed = {p.name: p.read_bytes() for p in (ROOT / "src" / "edgetune" / "v1").iterdir() if p.suffix in (".py", ".pyi")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run protos/generate.py: {stale} differ"


def test_only_server_transport_imports_grpc():
    allowed = {"grpc_app.py", "client.py", "convert.py", "cli.py", "demo.py"}
    offenders = []
    for folder in ("trainers", "export", "src/edgetune", "server"):
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


def test_a_plain_install_is_not_shadowed_from_the_repository_root(tmp_path):
    """`pip install .` (not editable), then the package imports from the repository root."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if name.split("/")[0] in ("pyproject.toml", "README.md", "src", "trainers", "export", "server") \
                and (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True)
    code = ("import edgetune, edgetune.trainers, edgetune.export, edgetune.server; "
            "print('\\n'.join(m.__file__ for m in (edgetune, edgetune.trainers, edgetune.export, edgetune.server)))")
    # -S: no site-packages, so this checkout's editable install cannot answer instead.
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(site)) for line in out.stdout.split()), out.stdout
