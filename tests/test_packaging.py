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


def test_readme_has_the_spanish_quick_start_and_binder_link() -> None:
    """Issue #19: "En español" gives the same two commands (opening the Spanish welcome, JupyterLab in Spanish)
    and a Binder link of the English link's form opening notebooks/es/00-bienvenida.ipynb."""
    readme = (ROOT / "README.md").read_text()

    def commands(section: str) -> list[str]:
        block = readme.split(section, 1)[1].split("```", 2)[1]
        return [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]

    english, spanish = commands("## Quick start"), commands("## En español")
    assert spanish[1] == english[1]
    assert spanish[0] == english[0].replace(
        "cp binder/overrides.json .venv/share/jupyter/lab/settings/",
        "cp binder/overrides.es.json .venv/share/jupyter/lab/settings/overrides.json").replace(
        "notebooks/00-welcome.ipynb", "notebooks/es/00-bienvenida.ipynb")
    assert "notebooks/es/00-bienvenida.ipynb" in spanish[0]
    links = re.compile(r"\((https://mybinder\.org/v2/gh/[^)]*)\)")
    english_links = links.findall(readme.split("## The course", 1)[1].split("\n## ", 1)[0])
    spanish_links = links.findall(readme.split("## En español", 1)[1].split("\n## ", 1)[0])
    assert english_links and spanish_links == [
        link.replace("notebooks/00-welcome.ipynb", "notebooks/es/00-bienvenida.ipynb") for link in english_links]


def test_binder_can_show_jupyterlab_in_spanish() -> None:
    """binder/ installs JupyterLab's Spanish language pack; the Spanish quick start's settings are the course's
    settings plus the Spanish interface."""
    import json

    wanted = [line.strip() for name in ("binder/requirements.txt", "requirements.txt")
              for line in (ROOT / name).read_text().splitlines()]
    assert any(re.fullmatch(r"jupyterlab-language-pack-es-ES==[\w.]+", line) for line in wanted)
    english = json.loads((ROOT / "binder" / "overrides.json").read_text())
    spanish = json.loads((ROOT / "binder" / "overrides.es.json").read_text())
    assert spanish == {**english, "@jupyterlab/translation-extension:plugin": {"locale": "es_ES"}}
