"""The course's Binder and JupyterLab setup: Graphviz installed, no Jupyter-news popup, one repository URL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def test_binder_installs_graphviz() -> None:
    """Without `dot` the first diagram of every kernel waits for the WebAssembly renderer to compile."""
    packages = BINDER.joinpath("apt.txt").read_text().split()
    assert "graphviz" in packages


def test_the_news_popup_is_off_in_the_settings_jupyterlab_reads(tmp_path: Path) -> None:
    """binder/overrides.json is what JupyterLab's settings machinery reads as overrides: fetchNews is Never."""
    settings_utils = pytest.importorskip("jupyterlab_server.settings_utils")
    jupyterlab = pytest.importorskip("jupyterlab")
    app_dir = Path(jupyterlab.__file__).resolve().parent.parent.parent.parent.parent / "share" / "jupyter" / "lab"
    schemas = app_dir / "schemas"
    if not (schemas / "@jupyterlab" / "apputils-extension" / "notification.json").exists():
        pytest.skip(f"no JupyterLab schemas under {schemas}")
    settings = tmp_path / "settings"
    settings.mkdir()

    def defaults() -> dict[str, object]:
        found, _ = settings_utils.get_settings(str(settings), str(schemas), str(tmp_path / "user"),
                                               schema_name="@jupyterlab/apputils-extension:notification")
        return {name: spec.get("default") for name, spec in found["schema"]["properties"].items()}

    assert defaults()["fetchNews"] != "false", "JupyterLab asks by default: the override must change that"
    shutil.copy(BINDER / "overrides.json", settings / "overrides.json")
    assert defaults()["fetchNews"] == "false"  # overrides become the schema's defaults
    assert defaults()["checkForUpdates"] is False


def test_post_build_installs_the_overrides_where_jupyterlab_looks(tmp_path: Path) -> None:
    """Run binder/postBuild's settings step in a fake prefix: the file lands in <prefix>/share/jupyter/lab/settings."""
    script = BINDER.joinpath("postBuild").read_text()
    assert "cp binder/overrides.json" in script
    step = script.split("pip install --no-deps .", 1)[1]
    fake_python = tmp_path / "bin" / "python"
    fake_python.parent.mkdir()
    fake_python.write_text(f"#!/bin/sh\necho {tmp_path / 'prefix'}\n")
    fake_python.chmod(0o700)
    subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=ROOT, check=True,
                   env={"PATH": f"{fake_python.parent}:/usr/bin:/bin"})
    installed = tmp_path / "prefix" / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert json.loads(installed.read_text()) == json.loads(BINDER.joinpath("overrides.json").read_text())


def test_the_binder_link_names_the_repository_once() -> None:
    """A fork sets its repository in one place: the README's Binder links use the same owner/name."""
    readme = ROOT.joinpath("README.md").read_text()
    repos = set(re.findall(r"mybinder\.org/v2/gh/([^/]+/[^/]+)/", readme))
    assert len(repos) == 1, repos
    assert f"COURSE_REPOSITORY={repos.pop()}" in readme
