"""Lab life cycle: the default topology, scenarios as data, loopback only, nothing leaked."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

import psutil
import pytest

import smtplab


def test_default_topology(lab: smtplab.Lab) -> None:
    assert set(lab.hosts) == {
        "smtp.example.org", "imap.example.org", "smtp.example.net",
        "mx1.example.net", "mx2.example.net", "imap.example.net",
    }
    assert set(lab.host("smtp.example.org").ports) == {"submission", "submissions", "smtp"}
    assert set(lab.host("mx1").ports) == {"smtp"}
    assert set(lab.host("imap.example.net").ports) == {"imap", "imaps", "pop3", "pop3s"}
    assert set(lab.users) == {"alice@example.org", "bob@example.net"}
    passwords = [u.password for u in lab.users.values()]
    assert all(len(p) >= 10 for p in passwords) and len(set(passwords)) == 2
    addresses = [h.address for h in lab.hosts.values()] + [lab.dns.address]
    assert all(a.startswith("127.") for a in addresses)
    if sys.platform.startswith("linux"):
        assert len(set(addresses)) == len(addresses), "each host has its own loopback address on Linux"


def test_passwords_are_new_for_each_lab() -> None:
    with smtplab.start() as first:
        one = first.users["alice@example.org"].password
    with smtplab.start() as second:
        assert second.users["alice@example.org"].password != one


def test_nothing_listens_outside_loopback(lab: smtplab.Lab) -> None:
    mine = [c for c in psutil.Process().net_connections(kind="inet") if c.status in ("LISTEN", "NONE")]
    ports = {p for h in lab.hosts.values() for p in h.ports.values()} | {lab.dns.port}
    bound = {c.laddr.port: c.laddr.ip for c in mine}
    assert ports <= set(bound), "every lab service is a socket of this process"
    for connection in mine:
        assert connection.laddr.ip.startswith("127.") or connection.laddr.ip == "::1", connection


def _resources() -> tuple[int, int, set[str]]:
    gc.collect()
    process = psutil.Process()
    return process.num_fds(), len(process.net_connections(kind="all")), {t.name for t in threading.enumerate()}


def test_start_stop_twenty_times_leaks_nothing() -> None:
    with smtplab.start() as warm:  # first start imports and caches; measure after it
        warm.send("alice@example.org", "bob@example.net", "warm", "up")
    fds, sockets, threads = _resources()
    for _ in range(20):
        lab = smtplab.start()
        lab.send("alice@example.org", "bob@example.net", "x", "y")
        lab.imap("bob@example.net").logout()
        lab.stop()
    after_fds, after_sockets, after_threads = _resources()
    assert after_sockets == sockets
    assert after_fds == fds
    assert after_threads == threads, after_threads - threads


def test_starting_again_stops_the_previous_lab() -> None:
    first = smtplab.start()
    port = first.host("mx1").ports["smtp"]
    address = first.host("mx1").address
    second = smtplab.start()
    try:
        assert not first.running and second.running
        assert smtplab.current() is second
        import socket

        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=2).close()
        with pytest.raises(smtplab.LabNotRunning, match="smtplab.start"):
            first.lookup_mx("example.net")
    finally:
        second.stop()
    assert smtplab.current() is None


def test_scenario_as_data() -> None:
    scenario = {
        "providers": [
            {"domain": "school.test", "hosts": {"mail": ["submission", "smtp", "imap"]},
             "mx": {"mail": 5}, "users": {"teacher": "s3cret-teacher", "student": None}},
            {"domain": "home.test", "hosts": {"mx": ["smtp"], "imap": ["imap"]}, "mx": {"mx": 10},
             "users": ["parent"]},
        ]
    }
    with smtplab.start(scenario=scenario) as lab:
        assert set(lab.hosts) == {"mail.school.test", "mx.home.test", "imap.home.test"}
        assert lab.users["teacher@school.test"].password == "s3cret-teacher"
        assert [r.exchange for r in lab.lookup_mx("home.test")] == ["mx.home.test"]
        lab.send("teacher@school.test", "parent@home.test", "Report", "All good.")
        assert [m["Subject"] for m in lab.messages("parent@home.test")] == ["Report"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({}, "providers"),
        ({"providers": [{"domain": "a.test", "hosts": {"mx": ["pop3"]}}]}, "unknown service"),
        ({"providers": [{"domain": "a.test", "hosts": {"w": ["imap"]}, "mx": {"w": 10}}]}, "runs no 'smtp'"),
        ({"providers": [{"domain": "a.test", "hosts": {"m": ["smtp"]}, "users": ["x"]}]}, "no host running 'imap'"),
        ({"providers": [{"domain": "a.test"}, {"domain": "a.test"}]}, "own domain"),
    ],
)
def test_bad_scenarios_say_what_is_wrong(bad: dict, message: str) -> None:
    with pytest.raises(smtplab.ScenarioError, match=message):
        smtplab.start(scenario=bad)


def test_unknown_host_and_user_errors(lab: smtplab.Lab) -> None:
    with pytest.raises(smtplab.UnknownHost, match="hosts: smtp.example.org"):
        lab.host("pop.example.net")
    with pytest.raises(smtplab.UnknownUser, match="alice@example.org"):
        lab.send("eve@example.org", "bob@example.net")


def test_core_does_not_import_jupyter() -> None:
    code = (
        "import sys, smtplab; lab = smtplab.start(); lab.stop(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stdout + result.stderr


def test_persistent_lab_keeps_its_ca(lab_dir) -> None:  # type: ignore[no-untyped-def]
    with smtplab.start(directory=lab_dir) as lab:
        first = open(lab.ca_file, "rb").read()
    with smtplab.start(directory=lab_dir) as lab:
        assert open(lab.ca_file, "rb").read() == first
        lab.send("alice@example.org", "bob@example.net", "same CA", "still trusted")


def test_one_shared_address_warns_that_spf_and_blocklists_cannot_work(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """macOS and Windows route only 127.0.0.1: the lab still runs there, and says what it cannot show."""
    import smtplab.network

    monkeypatch.setattr(smtplab.network, "_distinct_loopback_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="SPF and blocklist checks"):
        lab = smtplab.start(scenario=smtplab.Scenario.security())
    try:
        assert {h.address for h in lab.hosts.values()} == {"127.0.0.1"}
        lab.send("alice@example.org", "bob@example.net", "one address", "still delivered")
        assert len(lab.messages("bob@example.net")) == 1
    finally:
        lab.stop()
