"""Grading as teachers do it: the course through nbgrader, from source to autograded scores.

grading/make_source.py turns each notebook into an nbgrader assignment; `nbgrader generate_assignment`
releases it with the solutions stripped; a sample class (a correct, a partly wrong and an empty
submission) goes through `nbgrader autograde`, whose autograded tests are the course's own checks.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import IN_CI

if not IN_CI:  # CI installs nbgrader: there a missing one fails, it is not skipped
    pytest.importorskip("nbgrader")

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "00-welcome"
STUB = "...  # YOUR CODE HERE"


def _make_source() -> object:
    spec = importlib.util.spec_from_file_location("make_source", ROOT / "grading" / "make_source.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)  # nbgrader runs alembic from the same environment
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("course")
    assignments = _make_source().build(directory)  # type: ignore[attr-defined]
    course = sorted(p.stem for p in (ROOT / "notebooks").glob("0[0-7]-*.ipynb"))  # the course's lessons 00-07
    assert set(course) <= set(assignments), set(course) - set(assignments)
    # Released and checked: the course's lessons 00-07 (docs/teaching.md grades these) and every sample class.
    for assignment in sorted(set(course) | set(CLASSES)):
        _nbgrader(directory, "generate_assignment", assignment, "--force")
    return directory


def test_every_release_is_the_student_notebook_without_solutions(course: Path) -> None:
    for student in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if not (course / "release" / student.stem).exists():
            continue  # a lesson make_source could not turn into an assignment (it says why)
        released = nbformat.read(course / "release" / student.stem / student.name, as_version=4)
        mine = nbformat.read(student, as_version=4)
        text = "\n".join(cell.source for cell in released.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, student.name
        assert [c.get("id") for c in released.cells] == [c.get("id") for c in mine.cells]
        for theirs, ours in zip(released.cells, mine.cells, strict=True):
            grading = theirs.metadata.get("nbgrader", {})
            if grading.get("solution"):
                assert theirs.source == f"{ours.source}\n{STUB}" or STUB in theirs.source, theirs.source
            elif grading.get("grade"):
                assert "assert feedback.ok" in theirs.source and grading["points"] == 1
            else:
                assert theirs.source == ours.source
        solutions = nbformat.read(ROOT / "notebooks" / "solutions" / student.name, as_version=4)
        for cell in solutions.cells:  # no answer of the worked solutions survives into the release
            for line in re.findall(r"### BEGIN SOLUTION\n(.*?)\n\s*### END SOLUTION", cell.source, re.S):
                assert line.strip() not in text, line


def _submit(course: Path, assignment: str, student: str, answers: dict[str, str]) -> None:
    released = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    notebook = copy.deepcopy(released)
    for cell in notebook.cells:
        if cell.get("id") in answers:
            cell.source = cell.source.replace(STUB, answers[cell.get("id")])
    target = course / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target / f"{assignment}.ipynb")


# Each assignment: the answer that makes its first exercise wrong, and the feedback marks of that partly wrong
# submission. 06 has a function to write: its answer goes inside the released function, after the indentation
# the stub keeps.
CLASSES = {
    ASSIGNMENT: ('answer = "smtp.example.org"', ["✘ Exercise 1", "✔ Exercise 2", "✔ Exercise 3"]),
    "06-anti-spam": ('return "sends forged invoices (reported by bob@example.net)"',  # only the notebook's listing
                     ["✘ Exercise 1", "✔ Exercise 2"]),
}


@pytest.mark.parametrize("assignment", sorted(CLASSES))
def test_a_sample_class_is_autograded_with_the_courses_checks(course: Path, assignment: str) -> None:
    wrong, marks = CLASSES[assignment]
    source = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    answers = {cell.get("id"): re.search(r"### BEGIN SOLUTION\n(.*?)\n\s*### END SOLUTION", cell.source,
                                         re.S).group(1).lstrip(" ")  # type: ignore[union-attr]
               for cell in source.cells if cell.metadata.get("nbgrader", {}).get("solution")}
    exercises = len(marks)
    assert len(answers) == exercises
    first = next(iter(answers))
    _submit(course, assignment, "correct", answers)
    _submit(course, assignment, "partly", {**answers, first: wrong})  # exercise 1 wrong
    _submit(course, assignment, "empty", {})
    _nbgrader(course, "autograde", assignment, "--force")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {student: (gradebook.find_submission(assignment, student).score,
                            gradebook.find_submission(assignment, student).max_score)
                  for student in ("correct", "partly", "empty")}
    top = float(exercises)
    assert scores == {"correct": (top, top), "partly": (top - 1, top), "empty": (0.0, top)}
    graded = nbformat.read(course / "autograded" / "partly" / assignment / f"{assignment}.ipynb", as_version=4)
    feedback = "".join(str(output.get("data", {}).get("text/plain", "")) for cell in graded.cells
                       for output in cell.get("outputs", []))
    for mark in marks:
        assert mark in feedback, f"the learner sees the course's feedback: {mark!r} not in {feedback[:2000]}"
