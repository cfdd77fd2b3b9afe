"""The layers hold: no import cycle among the project's modules (imports inside functions count), no import of
another module's private name, and import-linter's contracts kept (the engine free of storage and Streamlit).

import-linter (``.importlinter``, run by ``.ci/run`` as ``lint-imports``) checks the layers between packages;
this scan adds what it does not: cycles between single modules, the page scripts and ``app.py``, and private
names. Imports under ``if TYPE_CHECKING:`` are type hints only and do not count.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("nas_core", "nas_service", "storage", "dashboard", "pages", "app")


def _modules() -> dict[str, Path]:
    """Module name -> file, for the project's packages, the page scripts and ``app.py`` (not tests, benches,
    migrations or the virtual environment)."""
    out = {"app": ROOT / "app.py"}
    for package in PROJECT[:-1]:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "migrations" not in rel.parts:
                out[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported project module, imported name, line) for every import statement outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text(), str(path))
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            hidden.update(id(n) for sub in node.body for n in ast.walk(sub))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found += [(t, "", node.lineno) for a in node.names if (t := _resolve(a.name))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                target = full if full in MODULES else _resolve(base)
                if target:
                    found.append((target, "" if full in MODULES else a.name, node.lineno))
    return [(t, n, line) for t, n, line in found if t != module]


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_the_scan_sees_the_project() -> None:
    assert {"nas_core.config", "nas_service.cli", "storage.repo", "app"} <= set(MODULES)
    assert any(t == "nas_core.errors" for t, _, _ in GRAPH["nas_core.config"])


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    edges = defaultdict(set)
    for m, found in GRAPH.items():
        edges[m].update(t for t, _, _ in found)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    assert cycles == []


def test_no_module_imports_another_modules_private_name() -> None:
    private = [
        f"{m}:{line} imports {t}.{name}"
        for m, found in GRAPH.items()
        for t, name, line in found
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_pages_hold_only_page_scripts_that_nothing_imports() -> None:
    pages = sorted(p.name for p in (ROOT / "pages").iterdir() if p.suffix == ".py")
    assert pages == ["compare.py", "export.py", "launch.py", "monitor.py", "overview.py"]
    importers = [m for m, found in GRAPH.items() for t, _, _ in found if t.startswith("pages")]
    assert importers == []


def test_import_linter_contracts_hold() -> None:
    """The engine never imports storage, Streamlit or the service; the layers; no sibling cycles."""
    lint = Path(sys.executable).parent / "lint-imports"  # import-linter, a requirement of the tests
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
