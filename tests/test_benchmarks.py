"""The benchmark harness still works end to end (small sizes; the numbers themselves live in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402


@pytest.mark.parametrize("kind", ["bare", "lab-plain"])
def test_the_load_client_drives_each_intake_server(kind: str) -> None:
    result = run_all.intake_round(kind, messages=40, sessions=4)
    assert result is not None, f"{kind} did not start"
    assert result["per_second"] > 0 and result["cpu_us_per_message"] > 0


def test_load_client_reports_a_refusal_as_an_error() -> None:
    started = run_all.start_server("lab-plain")
    assert started is not None
    server, address, port, _pid = started
    try:  # nobody@example.net has no mailbox at the lab's MX: 550 at RCPT ends the run
        done = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), address, str(port), "--messages", "3",
                               "--sessions", "1", "--recipient", "nobody@example.net"],
                              capture_output=True, text=True, timeout=60)
    finally:
        run_all.stop_server(server)
    assert done.returncode == 1
    assert "RCPT: expected 250, got 550" in json.loads(done.stdout)["error"]


def test_storage_cost_measures_a_real_delivery(tmp_path: Path) -> None:
    assert run_all.storage_cost(str(tmp_path), messages=5) > 0
    assert list(tmp_path.iterdir()) == []  # its folder is removed afterwards


def test_the_committed_results_render_as_a_table() -> None:
    results = json.loads((BENCH / "results.json").read_text())
    text = run_all.table(results)
    for measure in ("lab start", "MX intake ratio", "memory: 30 labs", "course"):
        assert measure in text
