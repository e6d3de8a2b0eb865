"""The tree keeps the shape of its architecture: layers checked by import-linter, no import cycles,
every subpackage says what it holds, no module grows past one idea's size."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("simulator", "backend", "calibration")
MAX_LINES = 450


def test_the_layer_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is part of the dev extras"
    out = subprocess.run([exe], check=False, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout[-3000:]


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    """The contract is not vacuous: a copy of the tree where the specs import the scenario fails."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.csv", "*.png"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "simulator" / "spec" / "dtypes.py"
    bad.write_text(bad.read_text() + "\nfrom simulator.scenario import schema  # noqa: E402,F401\n")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([exe], check=False, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "simulator.spec.dtypes -> simulator.scenario" in out.stdout, out.stdout[-2000:]


def test_no_module_imports_one_that_imports_it_back():
    graph = grimp.build_graph(*PACKAGES)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module < imported and graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported, graph.find_shortest_chain(importer=imported, imported=module)))
    assert not cycles, cycles


@pytest.mark.parametrize("package", sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/__init__.py")
                                            if p.parts[len(ROOT.parts)] in PACKAGES))
def test_every_subpackage_says_what_it_holds(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py needs a docstring saying what it holds"


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for name in PACKAGES for p in (ROOT / name).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these by concept: {big}"
