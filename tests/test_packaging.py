"""The ways a learner gets the course stay consistent: README, CI, Binder."""

from __future__ import annotations

import os
import re
import shutil
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


def test_a_wheel_carries_the_catalogs_and_speaks_spanish(tmp_path: Path) -> None:
    """The .po files are package data: an installed wheel (not only this checkout) translates."""
    import subprocess
    import sys
    import zipfile

    # A copy of the tree, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                 "__pycache__", ".*_cache", "notebooks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("smtplab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    catalogs = {Path(name).name for name in names if name.startswith("smtplab/locale/es/LC_MESSAGES/")}
    assert {path.name for path in (ROOT / "smtplab" / "locale" / "es" / "LC_MESSAGES").glob("*.po")} <= catalogs
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    probe = ("import smtplab, smtplab.i18n as i; assert i.LOCALE_DIR.is_relative_to(sys.argv[1]), i.LOCALE_DIR\n"
             "try: smtplab.start(lang='xx')\nexcept smtplab.UnknownLanguage as e: print(e)")
    # Run from tmp_path: `python -c` puts the working directory first on sys.path (the checkout's smtplab).
    shown = subprocess.run([sys.executable, "-c", "import sys\n" + probe, str(tmp_path / "site")], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "site"), "SMTPLAB_LANG": "es"},
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "no está traducido" in shown.stdout
