"""The ways a learner gets the course stay consistent: README, CI, Binder."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    assert "jupyter lab" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_binder_installs_the_project_requirements() -> None:
    lines = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    assert "-r ../requirements.txt" in lines
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.12"
    assert "pip install --no-deps ." in (ROOT / "binder" / "postBuild").read_text()


def test_runtime_dependencies_are_pinned_in_requirements() -> None:
    pinned = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in re.findall(r'^\s+"([a-z0-9-]+)[=<>]', pyproject.split("dependencies = [", 1)[1].split("]", 1)[0], re.M):
        assert name in pinned, f"{name} is a dependency but not pinned in requirements.txt"
