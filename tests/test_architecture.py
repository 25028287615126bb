"""The layer contract (import-linter, configured in pyproject.toml), zero import cycles, and no
function-level imports of domainclip modules (they hid cycles)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "domainclip"
LAZY_ALLOWED = {  # the package root stays light; the CLI checks the config before importing torch
    "domainclip/__init__.py": {"domainclip.export.loader"},
    "domainclip/__main__.py": {"domainclip.pipeline.run", "domainclip.pipeline.config_checks",
                               "domainclip.pipeline.received"},
    # a received config is checked before Hydra runs; its checksums only when it comes with a bundle
    "domainclip/pipeline/received.py": {"domainclip.export.loader"},
    "domainclip/data/__init__.py": {"domainclip.data.datamodule"},  # Lightning only for training
}


def components(nodes, edges) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan): the import cycles."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def test_layers_import_only_downward(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_import_cycles_between_modules_or_packages(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    graph = grimp.build_graph("domainclip", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    assert components(modules, edges) == []

    def package(m: str) -> str:
        return ".".join(m.split(".")[:2])

    between: dict[str, set[str]] = {}
    for m, targets in edges.items():
        if m.endswith(".__main__"):  # `python -m domainclip.X` entry points are command-line code
            continue
        for t in targets:
            if package(m) != package(t):
                between.setdefault(package(m), set()).add(package(t))
    assert components(sorted(between), between) == []


def test_domainclip_modules_are_imported_at_module_level():
    lazy = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("domainclip"):
                    lazy.setdefault(rel, set()).add(node.module)
                elif isinstance(node, ast.Import):
                    lazy.setdefault(rel, set()).update(a.name for a in node.names if a.name.startswith("domainclip"))
    lazy = {k: v for k, v in lazy.items() if v}
    assert lazy == LAZY_ALLOWED


def test_reading_cards_does_not_import_lightning():
    """``python -m domainclip.cards`` / ``doctor`` / ``captions`` / ``shards`` load cards, and the
    run's start-up config checks refuse a bad value, without Lightning, torchmetrics or
    scikit-learn (seconds of import); ``domainclip.data.SplitDataModule`` and
    ``domainclip.evaluation.classification_metrics`` still resolve."""
    import subprocess

    heavy = ("pytorch_lightning", "torchmetrics", "sklearn")
    code = ("import sys, domainclip.cards.__main__, domainclip.doctor, domainclip.captions.__main__, "
            "domainclip.shards.__main__, domainclip.pipeline.config_checks; "
            f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded; "
            "from domainclip.data import SplitDataModule; assert 'pytorch_lightning' in sys.modules; "
            "from domainclip.evaluation import classification_metrics; assert 'torchmetrics' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
