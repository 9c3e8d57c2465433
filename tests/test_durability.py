"""Durability across a crash: `kill -9` of a lab process, a restart on the same directory, nothing lost,
nothing twice (issue 14 items 3-5), and the virtual clock going on from where it was (item 4)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import smtplab
from smtplab.errors import BadDuration

ROOT = Path(__file__).resolve().parents[1]


class LabProcess:
    """`python -m smtplab up --json --dir D` in a subprocess, as a terminal user runs it."""

    def __init__(self, directory: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.directory = directory
        self.proc = subprocess.Popen([sys.executable, "-m", "smtplab", "up", "--json", "--dir", str(directory)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the lab did not start: {self.proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        self.info: dict[str, Any] = json.loads(line)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "smtplab", "ctl", "--dir", str(self.directory), *args],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    def kill(self) -> None:
        """kill -9: no cleanup, no flush, exactly what a crash leaves."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[LabProcess]:
    process = LabProcess(tmp_path / "lab")
    try:
        yield process
    finally:
        process.stop()


# --- the virtual clock (issue 14 item 4) ---

@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf, -60, "-5m", 11 * 365 * 86400, "4000d", "nan"])
def test_absurd_advances_are_refused_and_the_lab_keeps_working(lab: smtplab.Lab, amount: Any) -> None:
    with pytest.raises(BadDuration) as refused:  # ClockError, or BadDuration for text that is no duration
        lab.clock.advance(amount)
    assert isinstance(refused.value, smtplab.SmtpLabError)
    assert isinstance(refused.value, smtplab.ClockError) or isinstance(amount, str)
    assert any(w in str(refused.value) for w in ("lab clock", "ten years", "duration"))
    assert lab.clock.offset == 0
    result = lab.send("alice@example.org", "bob@example.net", "Still fine", "after a refused advance")
    assert lab.queue_item(result.queue_id).recipients[0].state == "delivered"


def test_the_clock_offset_survives_a_restart(lab_dir: Path) -> None:
    with smtplab.start(directory=lab_dir) as lab:
        lab.host("mx1").down()
        lab.host("mx2").down()
        lab.clock.advance("1d")
        result = lab.send("alice@example.org", "bob@example.net", "Late", "retry in a minute")
        assert lab.queue_item(result.queue_id).recipients[0].state == "deferred"
        offset = lab.clock.offset
    state = lab_dir / "clock.json"
    assert state.stat().st_mode & 0o777 == 0o600
    with smtplab.start(directory=lab_dir) as lab:
        assert lab.clock.offset == pytest.approx(offset)
        lab.clock.advance("2m")  # the 1-minute retry is due now, not in a day
        assert lab.queue_item(result.queue_id).recipients[0].state == "delivered"


def test_ctl_advance_refuses_nonsense_and_persists_the_rest(lab_process: LabProcess) -> None:
    for amount in ("nan", "inf", "-5m", "5000d"):
        refused = lab_process.ctl("advance", "--", amount)  # "--": "-5m" is not an option
        assert refused.returncode == 1, refused
        assert refused.stderr.startswith("smtplab: ") and "Traceback" not in refused.stderr
    done = lab_process.ctl("advance", "1d")
    assert done.returncode == 0, done.stderr
    lab_process.stop()
    assert json.loads((lab_process.directory / "clock.json").read_text())["offset"] == 86400
