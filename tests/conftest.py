"""Shared fixtures: real labs on loopback, and external tools that must exist in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

import smtplab

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of program `name`; skip locally when missing, but fail in CI (it must be installed)."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed, but CI must install it (see .ci/run)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def lab() -> Iterator[smtplab.Lab]:
    """A running default lab, stopped after the test."""
    with smtplab.start() as running:
        yield running


@pytest.fixture
def lab_dir(tmp_path):  # type: ignore[no-untyped-def]
    """A directory for a persistent lab."""
    return tmp_path / "lab"


# Tests read English unless they ask for another language (a developer's Spanish locale must not change them);
# `SMTPLAB_LANG=es pytest` still runs the suite in Spanish on purpose.
os.environ.setdefault("SMTPLAB_LANG", "en")


@pytest.fixture(autouse=True)
def _language_of_the_environment() -> Iterator[None]:
    """A test that chose a language (start(lang="es"), set_language) leaves none behind for the next one."""
    yield
    smtplab.set_language(None)
