"""The package's import graph: no circles, stages point one way, first-party imports visible at module level.

The graph is read from the source (`ast`), function-level imports included, so an import hidden inside a
function still counts: that is how six circles hid behind function-level imports before the stages became
subpackages. See docs/ARCHITECTURE.md for the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medr1"

# Lower layers never import higher ones; different groups on one layer never import each other.
LAYERS = [
    {"paths"},
    {"data", "models", "runs"},
    {"task", "generation", "artifacts"},
    {"config"},
    {"training_settings"},
    {"prepare", "pipeline"},
    {"train", "evaluation"},
    {"report", "cli"},
    {"__main__"},
]
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}

# Modules allowed to import first-party modules inside functions; each such line says why in a comment.
LAZY_FIRST_PARTY = {"medr1.cli": "stage entry points import torch/transformers/pandas after the cheap checks"}

MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported first-party module, statement, inside a function?) for every import of `module`."""
    tree = ast.parse(MODULES[module].read_text())
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(child) for child in ast.walk(node) if child is not node}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] == "medr1" else None
            if resolved and resolved != module:
                out.append((resolved, node, id(node) in inside))
    return out


GRAPH = {m: {t for t, _, _ in _imports(m)} for m in MODULES}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_circle_check_finds_a_hidden_circle():
    # the check itself: a circle closed by a function-level import is found
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    assert {_group(m) for m in MODULES} - {"__init__"} <= set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_stages_import_only_lower_layers(module):
    # e.g. train/ and evaluation/ stand side by side and never import each other; data/ imports nothing above it
    me = _group(module)
    if me == "__init__":
        return
    wrong = sorted(t for t in GRAPH[module] if _group(t) not in (me, "__init__") and RANK[_group(t)] >= RANK[me])
    assert not wrong, f"{module} (layer {RANK[me]}) imports {wrong}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_first_party_imports_are_at_module_level(module):
    source = MODULES[module].read_text().splitlines()
    lazy = [node for _, node, inside in _imports(module) if inside]
    if module not in LAZY_FIRST_PARTY:
        assert not lazy, f"{module}:{lazy[0].lineno} imports first-party code inside a function"
    for node in lazy:
        assert "#" in source[node.lineno - 1], f"{module}:{node.lineno}: a lazy import says why in a comment"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_500_lines(module):
    assert len(MODULES[module].read_text().splitlines()) <= MAX_LINES, module


def test_subpackage_files_import_siblings_not_their_face():
    # the face (`medr1.data`) imports every sibling, so a sibling importing the face closes a circle at run time
    offenders = [(m, t) for m in MODULES for t in GRAPH[m]
                 if m.count(".") >= 2 and t == m.rpartition(".")[0]]
    assert not offenders


TESTS = PACKAGE.parent / "tests"


def test_no_test_module_imports_another():
    # shared test code lives in tests/helpers.py, tests/strategies.py, tests/api_contract.py and conftest.py fixtures
    offenders = []
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(TESTS)}: {n}" for n in names
                          if n.split(".")[-1].startswith("test_") or n.startswith("tests") or n == "conftest"]
    assert not offenders


def test_test_basenames_are_unique():
    # pytest's default (prepend) import mode imports each test file by its basename
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names))
