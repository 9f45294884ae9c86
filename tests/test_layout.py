"""Generated stubs are current; the import rules between stages hold; the install exposes only `edgetune.*`."""

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    fresh = {f"{pkg}/{p.name}": p.read_bytes() for pkg in ("v1", "oip") for p in (tmp_path / "edgetune" / pkg).iterdir()}
    committed = {f"{pkg}/{p.name}": p.read_bytes() for pkg in ("v1", "oip")
                 for p in (ROOT / "src" / "edgetune" / pkg).iterdir() if p.suffix in (".py", ".pyi")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run protos/generate.py: {stale} differ"


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


# --- Import rules: each stage imports only what is upstream of it. -------------------------------
# Every import counts, function-local ones too (parsed, not executed).

ROOTS = {"src/edgetune": "edgetune", "trainers": "edgetune.trainers", "export": "edgetune.export",
         "server": "edgetune.server"}
HEAVY = ("torch", "torchvision", "transformers", "timm", "peft", "onnx", "onnxscript")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ROOTS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            if package == "edgetune" and rel.parts[0] in ("v1", "trainers", "export", "server"):
                continue  # generated stubs; the stage folders are their own roots
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (a ``from M import x`` counts M and M.x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _violations(prefix: str, forbidden: tuple[str, ...], allow=lambda module: False) -> list[str]:
    bad = []
    for name, imported in IMPORTS.items():
        if (name == prefix or name.startswith(prefix + ".")) and not allow(name):
            hits = sorted(i for i in imported if any(i == f or i.startswith(f + ".") for f in forbidden))
            if hits:
                bad.append(f"{MODULES[name].relative_to(ROOT)} imports {', '.join(hits)}")
    return bad


def test_the_device_runtime_needs_no_training_stack():
    assert _violations("edgetune.runtime", (*HEAVY, "edgetune.trainers", "edgetune.export", "edgetune.server")) == []


def test_light_modules_stay_light():
    """Names, settings and registries load without a framework: the CLI answers --help and bad
    arguments, and the service validates requests, without importing torch."""
    light = ("edgetune.tasks", "edgetune.errors", "edgetune.progress", "edgetune.integrity", "edgetune.atomic",
             "edgetune.trainers.data.images", "edgetune.trainers.data.cache", "edgetune.cli.main",
             "edgetune.cli.remote", "edgetune.trainers.config", "edgetune.trainers.models.registry",
             "edgetune.trainers.models.catalog", "edgetune.trainers.models.weights")
    bad = []
    for module in light:
        bad += _violations(module, HEAVY)
    assert bad == []


def test_trainers_import_neither_export_nor_server():
    assert _violations("edgetune.trainers", ("edgetune.export", "edgetune.server", "edgetune.cli")) == []


def test_export_imports_no_server():
    assert _violations("edgetune.export", ("edgetune.server", "edgetune.cli")) == []


def test_the_service_data_plane_imports_no_grpc():
    assert _violations("edgetune.server", ("grpc", "grpc_health", "grpc_reflection", "edgetune.v1",
                                           "google.protobuf"),
                       allow=lambda m: m.startswith("edgetune.server.transport")) == []


def test_the_transport_imports_no_trainers():
    assert _violations("edgetune.server.transport", ("edgetune.trainers", "edgetune.export")) == []


def test_no_import_circles():
    graph = {name: {i for i in imported if i in MODULES and i != name} for name, imported in IMPORTS.items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(str(MODULES[m].relative_to(ROOT)) for m in component))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_every_package_folder_is_installed():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"} | {"edgetune.v1"}
    assert packages == declared


@pytest.mark.parametrize("argv", [["--help"], ["train", "image", "--data", "/nonexistent/data", "--out", "x"],
                                  ["export", "/nonexistent/run", "--out", "b"], ["train", "text", "--bogus"]])
def test_the_cli_rejects_and_helps_without_loading_a_framework(argv, tmp_path):
    code = ("import sys\nfrom edgetune.cli.main import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\nheavy = sorted(m for m in %r if m in sys.modules)\n"
            "print('RC', rc, 'HEAVY', heavy)" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1].endswith("HEAVY []"), out.stdout + out.stderr
    assert "device:" not in out.stdout + out.stderr


def test_the_shipped_health_proto_is_the_one_the_server_runs(tmp_path):
    """protos/grpc/health/v1/health.proto (for clients in other languages) describes exactly the
    messages and methods of grpcio-health-checking's service."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2
    from grpc_tools import protoc

    out = tmp_path / "health.pb"
    assert protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"--descriptor_set_out={out}",
                        "grpc/health/v1/health.proto"]) == 0
    shipped = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    served = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(served)
    for d in (shipped, served):
        d.ClearField("name")
        d.ClearField("options")
        for message in (*d.message_type, *(n for m in d.message_type for n in m.nested_type)):
            for f in message.field:
                f.ClearField("json_name")  # protoc fills it in; the generated module leaves it out
    assert shipped == served
