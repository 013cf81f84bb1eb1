"""Notebooks are sources: committed without outputs, one `parameters` cell, short cells, no definitions.

Executing them is tested in tests/test_pipeline.py (slow), which runs all of them on params/smoke.yaml.
"""

import json

import pytest

from medr1.paths import NOTEBOOKS_DIR
from medr1.pipeline import NOTEBOOKS, VISION_NOTEBOOKS, notebook_parameters

ALL = NOTEBOOKS + VISION_NOTEBOOKS

MAX_CELL_LINES = 15


def _cells(name):
    return json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())["cells"]


def test_the_numbered_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_committed_without_outputs(name):
    for i, cell in enumerate(_cells(name)):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", ALL)
def test_one_parameters_cell_with_params_file(name):
    tagged = [c for c in _cells(name) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert {"params_file", "run_name"} <= set(notebook_parameters(NOTEBOOKS_DIR / f"{name}.ipynb"))


@pytest.mark.parametrize("name", ALL)
def test_title_first_and_cells_short_without_definitions(name):
    cells = _cells(name)
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
        assert len(lines) <= MAX_CELL_LINES, f"{name} cell {i}: {len(lines)} lines; move logic into medr1/"
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in lines), \
            f"{name} cell {i} defines a function or class; that belongs in medr1/"
