"""Every notebook runs top to bottom on a fresh kernel and shows at least one plot."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# A hang guard, not a speed check: a plan cell takes minutes on a busy 2-core machine.
CELL_TIMEOUT_S = 1800
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows no plot"


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_outputs_read_as_text(path):
    """Saved outputs carry no terminal escape codes and no bare object reprs."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = out.get("text", "") + "".join(str(v) for v in out.get("data", {}).values())
            assert "\x1b[" not in text, f"cell {i} of {path.name} stores ANSI escape codes"
            assert " object at 0x" not in text and "Styler at 0x" not in text, f"cell {i}: a bare repr"
