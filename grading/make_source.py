"""Build an nbgrader course from the course notebooks: `python grading/make_source.py COURSE_DIR`.

Each notebook becomes an assignment of its own name (`source/00-welcome/00-welcome.ipynb` ...):

- an exercise cell is the student's cell (its placeholder, e.g. `answer = None`) followed by the worked
  solution from `notebooks/solutions/`, between `### BEGIN SOLUTION` and `### END SOLUTION`. nbgrader's
  `generate_assignment` strips that part, so the released notebook is the student notebook again;
- every check cell (`handshake.check_session(my_session, lab)` ...) becomes an autograded test worth one
  point: it shows the course's feedback and fails when the check does not pass;
- every other cell is read-only for nbgrader's checksums where it sets the lab up, and left as it is.

Then, in COURSE_DIR: `nbgrader generate_assignment 00-welcome`, release, collect, `nbgrader autograde
00-welcome`. `grading/nbgrader_config.py` (copied into COURSE_DIR) holds the course's settings.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK = re.compile(r"^\s*([a-z_][a-z0-9_]*)\.(check_\w+)\((.*)\)\s*$", re.S)  # e.g. handshake.check_session(...)


def _region(source: str) -> str:
    """The lines from BEGIN SOLUTION to END SOLUTION, indentation kept."""
    lines = source.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
    last = next(i for i, line in enumerate(lines) if line.strip() == END)
    return "\n".join(lines[first:last + 1])


def _meta(kind: str, grade_id: str, points: int = 0) -> dict[str, object]:
    meta: dict[str, object] = {"grade_id": grade_id, "schema_version": 3, "locked": kind != "solution",
                               "solution": kind == "solution", "grade": kind == "test", "task": False}
    if kind == "test":
        meta["points"] = points
    return meta


def source_notebook(name: str) -> nbformat.NotebookNode:
    """The nbgrader source version of notebook `name` (e.g. "00-welcome")."""
    student = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    solution = nbformat.read(NOTEBOOKS / "solutions" / f"{name}.ipynb", as_version=4)
    solved = {cell.get("id"): cell for cell in solution.cells
              if cell.cell_type == "code" and BEGIN in cell.source}
    out = copy.deepcopy(student)
    checks = 0
    for cell in out.cells:
        if cell.get("id") in solved:
            mine = solved[cell.get("id")].source
            # a function to write keeps its solution inside: its stub must stay inside the function
            cell.source = mine if re.search(r"^\s+" + re.escape(BEGIN), mine, re.M) else \
                f"{cell.source}\n{_region(mine)}"
            cell.metadata["nbgrader"] = _meta("solution", f"{cell.get('id')}-answer")
        elif cell.cell_type == "code" and (match := CHECK.match(cell.source)):
            checks += 1
            cell.source = (f"feedback = {match.group(1)}.{match.group(2)}({match.group(3)})\n"
                           "display(feedback)\n"
                           "assert feedback.ok, str(feedback)")
            cell.metadata["nbgrader"] = _meta("test", f"{cell.get('id')}-check", points=1)
    if not checks:
        raise ValueError(f"{name}: no cell of its own runs a check (module.check_...(...)), so nbgrader has no test "
                         "cell to grade; give each check a cell of its own")
    return out


def build(course_dir: Path) -> list[str]:
    """Write source/<assignment>/<assignment>.ipynb for every course notebook; return the assignments."""
    assignments = []
    course_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("nbgrader_config.py"), course_dir / "nbgrader_config.py")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        name = path.stem
        try:
            notebook = source_notebook(name)
        except ValueError as exc:  # a lesson written another way is left out, and says why
            print(f"skipped {exc}", file=sys.stderr)
            continue
        target = course_dir / "source" / name
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target / f"{name}.ipynb")
        assignments.append(name)
    return assignments


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for assignment in build(Path(sys.argv[1])):
        print(assignment)
