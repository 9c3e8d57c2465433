"""Stable ports: a lab started again in the same directory listens where it did, `ports=BASE` pins them."""

from __future__ import annotations

import random
import socket
import stat
import warnings
from pathlib import Path

import pytest

import smtplab
from smtplab.hosts import PORT_OFFSETS, plan_ports


def all_ports(lab: smtplab.Lab) -> dict[str, dict[str, int]]:
    return {"dns": {"dns": lab.dns.port}, **{name: dict(h.ports) for name, h in lab.hosts.items()}}


def free_base() -> int:
    """A base below Linux's ephemeral range (32768-60999), so no other lab's free-port pick lands there."""
    for _ in range(50):
        base = random.randrange(20000, 32000, 100)
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.2" if _distinct() else "127.0.0.1", base))
            return base
        except OSError:
            continue
        finally:
            probe.close()
    pytest.skip("no free port base found")


def _distinct() -> bool:
    probe = socket.socket()
    try:
        probe.bind(("127.0.9.9", 0))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_a_lab_started_again_in_its_directory_keeps_its_ports(tmp_path: Path) -> None:
    with smtplab.start(directory=tmp_path) as lab:
        first = all_ports(lab)
    state = tmp_path / "ports.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    with smtplab.start(directory=tmp_path) as lab:
        assert all_ports(lab) == first
        assert set(first["imap.example.net"]) == {"imap", "imaps", "pop3", "pop3s"}


def test_a_taken_port_moves_and_the_lab_says_so_once(tmp_path: Path) -> None:
    with smtplab.start(directory=tmp_path) as lab:
        first = all_ports(lab)
        mx1 = lab.host("mx1")
        address, port = mx1.address, mx1.ports["smtp"]
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((address, port))
    squatter.listen()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with smtplab.start(directory=tmp_path) as lab:
                again = all_ports(lab)
                notes = [e.text for e in lab.trace.events() if e.protocol == "lab" and "ports taken" in e.text]
                lab.send("alice@example.org", "bob@example.net", "still delivered", "via the moved MX port")
                assert [m["Subject"] for m in lab.messages("bob@example.net")] == ["still delivered"]
    finally:
        squatter.close()
    moved = [w for w in caught if issubclass(w.category, RuntimeWarning) and "ports taken" in str(w.message)]
    assert len(moved) == 1 and f"mx1.example.net smtp {port} -> {again['mx1.example.net']['smtp']}" in str(moved[0].message)
    assert len(notes) == 1
    assert again["mx1.example.net"]["smtp"] != port
    assert {k: v for k, v in again.items() if k != "mx1.example.net"} == \
        {k: v for k, v in first.items() if k != "mx1.example.net"}


def test_ports_base_pins_every_port() -> None:
    base = free_base()
    with smtplab.start(ports=base) as lab:
        assert lab.dns.port == base
        hosts = list(lab.hosts.values())
        for n, host in enumerate(hosts, start=1):
            assert host.ports == {s: base + 10 * n + PORT_OFFSETS[s] for s in host.ports}
        assert lab.host("imap.example.net").ports["pop3s"] == base + 10 * 6 + 6
        lab.send("alice@example.org", "bob@example.net", "pinned", "hello")
        assert len(lab.messages("bob@example.net")) == 1


def test_ports_base_wins_over_the_saved_ports(tmp_path: Path) -> None:
    with smtplab.start(directory=tmp_path):
        pass
    base = free_base()
    with smtplab.start(directory=tmp_path, ports=base) as lab:
        assert lab.dns.port == base and lab.host("mx1").ports["smtp"] == base + 40


def test_a_pinned_port_that_is_taken_is_an_error() -> None:
    base = free_base()
    squatter = socket.socket()
    squatter.bind(("127.0.2.11" if _distinct() else "127.0.0.1", base + 40))  # mx1's smtp
    squatter.listen()
    try:
        with pytest.raises(smtplab.PortInUse, match=f"mx1.example.net smtp: port {base + 40} is taken"):
            smtplab.start(ports=base)
    finally:
        squatter.close()
    assert smtplab.current() is None


def test_a_base_that_does_not_fit_is_refused() -> None:
    with pytest.raises(smtplab.SmtpLabError, match="choose a base from 1024"):
        plan_ports(65525, [("a", ("smtp",))])
    with pytest.raises(smtplab.SmtpLabError, match="choose a base from 1024"):
        smtplab.start(ports=80)


def test_the_lab_table_names_every_port_and_its_tls(lab: smtplab.Lab) -> None:
    html = lab._repr_html_()
    imap = lab.host("imap.example.net")
    assert f'<span title="995 on the Internet">pop3s {imap.ports["pop3s"]}</span>' in html
    assert f'<span title="465 on the Internet">submissions {lab.host("smtp.example.org").ports["submissions"]}' in html
    assert "TLS from the first byte (RFC 8314)" in html


def test_a_host_brought_up_on_a_taken_port_moves_and_is_remembered(tmp_path: Path) -> None:
    with smtplab.start(directory=tmp_path) as lab:
        mx2 = lab.host("mx2")
        address, port = mx2.address, mx2.ports["smtp"]
        mx2.down()
        squatter = socket.socket()
        squatter.bind((address, port))
        squatter.listen()
        try:
            with pytest.warns(RuntimeWarning, match=f"mx2.example.net smtp {port} -> "):
                mx2.up()
        finally:
            squatter.close()
        moved = mx2.ports["smtp"]
    assert moved != port
    with smtplab.start(directory=tmp_path) as lab:
        assert lab.host("mx2").ports["smtp"] == moved


def test_a_stepping_session_on_an_implicit_tls_port_is_a_clear_error(lab: smtplab.Lab) -> None:
    with pytest.raises(smtplab.SessionError, match="submissions, TLS from the first byte, use smtplib.SMTP_SSL"):
        lab.session("smtp.example.org", "submissions")
    with pytest.raises(smtplab.SessionError, match="runs imap, imaps, pop3, pop3s"):
        lab.session("imap.example.net", "pop3")
