"""Execute every course notebook top to bottom, as CI and a learner would, and check it is committed clean."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from output_width import KNOWN_WIDE, overwide
from test_editions import EDITIONS

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SOLUTIONS = sorted((NOTEBOOKS_DIR / "solutions").glob("*.ipynb"))
# The Spanish edition (issue #19): the same checks; run once each, not twice, to keep CI within its time.
SPANISH_DIR = NOTEBOOKS_DIR / "es"
SPANISH = sorted(SPANISH_DIR.glob("*.ipynb"))
SPANISH_SOLUTIONS = sorted((SPANISH_DIR / "solutions").glob("*.ipynb"))
FEEDBACK = re.compile(r"<div class='smtplab-feedback'[^>]*><span style='color:[^']*'>(.)</span>(.*?)</div>", re.S)
CELL_TIMEOUT = 120  # seconds per cell
SOLUTION_RUNS = 1  # a solution is judged on one run (the notebooks themselves run twice: Run All again)
RUNS = 2  # top to bottom, then again in the same kernel
SPANISH_RUNS = 1  # the Spanish edition has the same code (tests/test_editions.py): one run proves its cells
ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks

# A Spanish notebook has its English one's cells (tests/test_editions.py): the same cells may be wide.
ENGLISH_NAME = {f"{es}.ipynb": f"{en}.ipynb" for en, es in EDITIONS.items()}

pytestmark = pytest.mark.notebook


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


def name_of(path: Path) -> str:
    """notebooks/solutions/x.ipynb -> "solutions/x.ipynb", notebooks/es/x.ipynb -> "es/x.ipynb"."""
    return str(path.relative_to(NOTEBOOKS_DIR))


@pytest.mark.parametrize("path", NOTEBOOKS + SPANISH, ids=name_of)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel must be python3"
    dirty = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS + SPANISH + SPANISH_SOLUTIONS, ids=name_of)
def test_every_cell_is_tagged_core_or_optional(path: Path) -> None:
    """docs/teaching.md builds its class plans from the core cells: every cell says which it is."""
    nb = nbformat.read(path, as_version=4)
    untagged = [cell.get("id", index) for index, cell in enumerate(nb.cells)
                if len({"core", "optional"} & set(cell.metadata.get("tags", []))) != 1]
    assert not untagged, f"{path.name}: cells {untagged} need exactly one of the tags core, optional"


def execute(path: Path, runs: int = RUNS) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    # Each edition runs in its own folder (notebooks/ or notebooks/es/), whether notebook or solution.
    edition = SPANISH_DIR if SPANISH_DIR in path.parents else NOTEBOOKS_DIR
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(edition)}},
    )
    failure = None
    try:
        # Twice in one kernel, as a learner does with Run All after Run All: the second run must start a
        # fresh lab over the first, and every check must judge the same answers the same way.
        with client.setup_kernel():
            for _ in range(runs):
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
    except CellExecutionError as exc:
        # The message holds the failing cell's source and its traceback, as a learner would see them.
        failure = ANSI_COLOURS.sub("", str(exc))
    if failure is not None:
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
    too_wide = overwide(nb, known=KNOWN_WIDE.get(ENGLISH_NAME.get(path.name, path.name), {}))
    if too_wide:
        pytest.fail(f"{path.name}: outputs wider than a notebook cell:\n" + "\n".join(too_wide), pytrace=False)
    return nb


def feedback_marks(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(mark, text) of every exercise Feedback the notebook displayed: ✔ right, ✘ wrong, … unanswered."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            found += FEEDBACK.findall("".join(html) if isinstance(html, list) else html)
    return found


def with_runs(paths: list[Path], runs: int) -> list[object]:
    return [pytest.param(path, runs, id=name_of(path)) for path in paths]


@pytest.mark.parametrize(("path", "runs"), with_runs(NOTEBOOKS, RUNS) + with_runs(SPANISH, SPANISH_RUNS))
def test_notebook_runs_top_to_bottom(path: Path, runs: int) -> None:
    nb = execute(path, runs)
    marks = feedback_marks(nb)
    assert all(mark != "✘" for mark, _ in marks), f"{path.name}: an untouched exercise must not say 'wrong'"


@pytest.mark.parametrize(("notebooks", "solutions"), [(NOTEBOOKS, SOLUTIONS), (SPANISH, SPANISH_SOLUTIONS)],
                         ids=["en", "es"])
def test_every_notebook_has_a_solution(notebooks: list[Path], solutions: list[Path]) -> None:
    missing = {p.name for p in notebooks} - {p.name for p in solutions}
    assert not missing, f"notebooks without a solution in their solutions/ folder: {sorted(missing)}"


@pytest.mark.parametrize(("path", "runs"), with_runs(SOLUTIONS, SOLUTION_RUNS) + with_runs(SPANISH_SOLUTIONS, SPANISH_RUNS))
def test_solutions_pass_every_exercise(path: Path, runs: int) -> None:
    nb = execute(path, runs)
    marks = feedback_marks(nb)
    assert marks, f"{path.name}: no exercise feedback was displayed"
    wrong = [text for mark, text in marks if mark != "✔"]
    assert not wrong, f"{path.name}: the solution does not pass: {wrong}"
