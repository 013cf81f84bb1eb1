"""The docs stay true to the repository: links resolve, module paths and names exist, the README stays a front door.

Docs rot silently: a module moves (issue 23 moved all of them) and `medr1/vision.py` in the README points at
nothing; a heading is reworded and every `#anchor` to it breaks. These checks read the Markdown as text (no
imports, no network), so they take well under a second.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medr1"
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
README_MAX_LINES = 160  # issue 23: a front door of about 150 lines; the rest lives in docs/ by reader

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
DOTTED = re.compile(r"(?<![\w/.])medr1(?:\.[A-Za-z_]\w*)+")
MODULE_PATH = re.compile(r"(?<![\w/.])medr1/[\w/]+\.py\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link syntax to its text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Vision: MedVLM-R1 (images)", "vision-medvlm-r1-images"),
    ("GPU (`run_gpu.py`)", "gpu-run_gpupy"),
    ("What the first measurements showed (shared 2-core AMD EPYC, noisy; rerun on a quiet machine)",
     "what-the-first-measurements-showed-shared-2-core-amd-epyc-noisy-rerun-on-a-quiet-machine"),
    ("`data/`: questions in, validated", "data-questions-in-validated"),
])
def test_slug_follows_github(heading, anchor):
    assert slug(heading) == anchor


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in _prose(path):
        if m := HEADING.match(line):
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            seen.setdefault(f"{base}-{n}" if n else base, 1)
    return set(seen)


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in _prose(path):
        line = re.sub(r"`[^`]*`", "", line)  # a link inside inline code is an example, not a link
        out += [(number, m.group(1)) for m in LINK.finditer(line)]
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc):
    broken = []
    for number, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked offline
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.is_relative_to(ROOT):
            broken.append(f"{_rel(doc)}:{number}: {target} leaves the repository")
        elif not dest.exists():
            broken.append(f"{_rel(doc)}:{number}: {target} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{_rel(doc)}:{number}: {target}: no heading with anchor #{anchor} in {_rel(dest)}")
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_broken_link_and_anchor(tmp_path, monkeypatch):
    # the check itself, on a throwaway repository: a missing file and a missing anchor are both reported
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top\n\n## A section\n\n[ok](#a-section) [gone](b.md) [bad](#nowhere)\n"
                                   "```\n[in code](c.md)\n```\n`[inline](d.md)`\n")
    with pytest.raises(AssertionError) as failure:
        test_relative_links_resolve(tmp_path / "a.md")
    message = str(failure.value)
    assert "b.md does not exist" in message and "#nowhere" in message
    assert "c.md" not in message and "d.md" not in message and "#a-section" not in message


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/ by reader"
    # the two commands open the README, before anything else
    first_block = lines[lines.index("```bash") + 1:]
    first_block = first_block[:first_block.index("```")]
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]
    text = "\n".join(lines)
    missing = [nb.stem for nb in sorted((ROOT / "notebooks").glob("*.ipynb")) if nb.stem not in text]
    assert not missing, f"README's notebook table lacks {missing}"


@cache
def _module_names(path: Path) -> frozenset[str]:
    """Top-level names a module defines or imports (what `module.name` can reach)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:  # `A = ...` and `A, B = ...`
                names |= {t.id for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dotted_problem(ref: str) -> str | None:
    """Why `medr1.a.b[.name]` names nothing, or None: the longest module prefix, then at most one name in it."""
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        if module := _module_file(parts[:cut]):
            rest = parts[cut:]
            if not rest:
                return None
            if len(rest) == 1 and rest[0] in _module_names(module):
                return None
            return f"{'.'.join(rest)} is not defined in {_rel(module)}"
    return "no such module"


def test_dotted_check_rejects_old_flat_names():
    assert dotted_problem("medr1.data.published.set_fingerprint") is None
    assert dotted_problem("medr1.data.DataError") is None  # re-exported by the face
    assert dotted_problem("medr1.prefix_sharing") is not None  # moved to medr1.generation.prefix_sharing
    assert dotted_problem("medr1.eval_sets.set_fingerprint") is not None


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_module_references_exist(doc):
    stale = []
    for number, line in _prose(doc):
        stale += [f"{_rel(doc)}:{number}: {p} does not exist" for p in MODULE_PATH.findall(line)
                  if not (ROOT / p).is_file()]
        stale += [f"{_rel(doc)}:{number}: {ref}: {why}" for ref in DOTTED.findall(line)
                  if (why := dotted_problem(ref))]
    assert not stale, "\n".join(stale) + "\n(modules live in subpackages: docs/ARCHITECTURE.md)"


def _architecture_rows() -> list[tuple[int, str, str]]:
    """(line, module path relative to medr1/, main-names cell) of every module table row."""
    rows = []
    for number, line in _prose(ARCHITECTURE):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3 and cells[0].strip("`").endswith(".py"):
            rows.append((number, cells[0].strip("`"), cells[2]))
    return rows


def test_architecture_lists_every_module():
    listed = {path for _, path, _ in _architecture_rows()}
    text = ARCHITECTURE.read_text(encoding="utf-8")
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    # a subpackage's __init__.py may go unlisted when the subpackage has its own section
    unlisted = sorted(m for m in modules - listed
                      if not (m.count("/") == 1 and m.endswith("/__init__.py") and f"`{m.split('/')[0]}/`" in text))
    assert not unlisted, f"docs/ARCHITECTURE.md has no row for {unlisted}"
    assert not listed - modules, f"docs/ARCHITECTURE.md lists modules that do not exist: {sorted(listed - modules)}"


def test_architecture_main_names_exist():
    wrong = []
    for number, path, cell in _architecture_rows():
        names = _module_names(PACKAGE / path)
        for span in re.findall(r"`([^`]+)`", cell):
            name = re.sub(r"\(.*\)$", "", span).strip()
            if "." in name:  # a dotted reference: checked by test_module_references_exist
                continue
            if not (fnmatch.filter(names, name) if "*" in name else name in names):
                wrong.append(f"docs/ARCHITECTURE.md:{number}: {name} is not a name of medr1/{path}")
    assert not wrong, "\n".join(wrong)
