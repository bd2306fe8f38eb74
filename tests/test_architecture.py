"""The package's shape: no import cycles, and a serving path that never imports torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> import name, as pyproject.toml maps them
PACKAGES = {
    "neurocast": "neurocast",
    "streaming": "neurocast.streaming",
    "models": "neurocast.models",
    "server": "neurocast.server",
    "clients": "neurocast.clients",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``module`` imports anywhere (functions included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    found.add(full)
                elif base in known:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
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
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def test_cycle_finder_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    # a module importing its own package's __init__ is a cycle through the re-exports
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


SERVING_RUN = textwrap.dedent(
    """
    import json, sys, time

    import neurocast.models.serving
    import neurocast.server
    import neurocast.streaming
    from neurocast.clients.client import Client
    from neurocast.server.app import create_app
    from neurocast.server.config import Settings
    from neurocast.server.runner import ServerThread

    app = create_app(Settings(token="t" * 20, packaged_models=True))
    with ServerThread(app) as server, Client(server.url, token="t" * 20) as client:
        source = {"kind": "simulator", "modality": "meg", "seed": 0}
        session = client.create_session(source, ["demo-classifier"])
        deadline = time.monotonic() + 60
        while client.session(session.id).n_decoded == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        decoded = client.session(session.id).n_decoded
        client.delete_session(session.id)
        results = client.decode(sys.argv[1], models=["demo-classifier"])
    torch = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"decoded": decoded, "results": len(results.results), "torch": torch}))
    """
)


@pytest.mark.timeout(240)
def test_serving_path_never_imports_torch(tmp_path: Path) -> None:
    """A session and a batch job through the real server, in a fresh interpreter."""
    from test_server_support import write_simulated_recording

    recording = write_simulated_recording(
        tmp_path / "sim_raw.fif", 3.0, modality="meg", sfreq=1000.0
    )
    script = tmp_path / "serve.py"
    script.write_text(SERVING_RUN)
    proc = subprocess.run(
        [sys.executable, str(script), str(recording)],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["decoded"] > 0
    assert result["results"] > 0
    assert result["torch"] == []
