"""IMAP limits on a shared host (issue 14 item 7): idle clients before login, half-sent literals, failed logins.

Each test waits for the server's own event (its BYE, its trace line), never for a clock.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

import smtplab
import smtplab.trace.ring
from smtplab.net.imapd import Limits


@pytest.fixture
def limits(lab: smtplab.Lab) -> Iterator[Limits]:
    """The live limits of imap.example.net (changed by a test, read by the server at each use)."""
    yield lab._network.imap["imap.example.net"].limits


def _connect(lab: smtplab.Lab) -> socket.socket:
    host = lab.host("imap.example.net")
    sock = socket.create_connection((host.address, host.ports["imap"]), timeout=30)  # a safety net, not a bound
    assert sock.makefile("rb").readline().startswith(b"* OK")
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_an_idle_client_is_logged_out_before_login(lab: smtplab.Lab, limits: Limits) -> None:
    """RFC 9051 5.4 (autologout): before authentication a silent connection gets BYE, then is closed."""
    limits.prelogin_timeout = 0.2
    sock = _connect(lab)
    received = _until_closed(sock)
    assert received.startswith(b"* BYE [UNAVAILABLE] Autologout")
    sock.close()


def test_a_logged_in_session_is_not_logged_out_by_that_limit(lab: smtplab.Lab, limits: Limits) -> None:
    imap = lab.imap("bob@example.net")
    limits.prelogin_timeout = 0.2
    idle = _connect(lab)
    assert _until_closed(idle).startswith(b"* BYE")  # the limit has passed, for this one
    idle.close()
    assert imap.select("INBOX")[0] == "OK"  # the logged-in session, silent as long, goes on
    imap.logout()


@pytest.mark.parametrize("literal", [b"a LOGIN {5}\r\n", b"a LOGIN {5+}\r\nbo"])
def test_a_half_sent_literal_is_given_up(lab: smtplab.Lab, limits: Limits, literal: bytes) -> None:
    """A literal announced and never (fully) sent: BYE, not a connection held open for ever."""
    limits.literal_timeout = 0.2
    sock = _connect(lab)
    sock.sendall(literal)
    received = _until_closed(sock)
    assert b"* BYE [UNAVAILABLE] Literal not sent in time." in received
    assert b"SERVERBUG" not in received
    sock.close()


def test_a_half_sent_append_after_login_is_given_up(lab: smtplab.Lab, limits: Limits) -> None:
    limits.literal_timeout = 0.2
    imap = lab.imap("bob@example.net")
    imap.send(b"a APPEND INBOX {100}\r\n")
    assert imap.readline().startswith(b"+ ")
    imap.send(b"only a part")
    assert imap.readline().startswith(b"* BYE [UNAVAILABLE] Literal not sent in time.")
    assert imap.readline() == b""
    imap.shutdown()
    assert lab.messages("bob@example.net") == []


def _failures(lab: smtplab.Lab) -> list[str]:
    return [e.text for e in lab.trace.filter(protocol="imap") if e.text.startswith("login failed")]


def _tls_client(lab: smtplab.Lab) -> imaplib.IMAP4:
    host = lab.host("imap.example.net")
    client = imaplib.IMAP4(host.address, host.ports["imap"], timeout=30)
    client.starttls(ssl_context=lab.services.client_context)
    return client


def test_failed_logins_wait_longer_each_time_per_connection_and_per_address(lab: smtplab.Lab, limits: Limits) -> None:
    """Each failure: NO [AUTHENTICATIONFAILED] (RFC 5530 3), after a delay that doubles with the failures of
    the connection and of the client address; a success from the address starts again."""
    limits.login_delay = 0.01
    client = _tls_client(lab)
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            client.login("bob@example.net", "wrong")
    client.logout()
    again = _tls_client(lab)  # a new connection from the same address carries on counting
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        again.login("nobody@example.net", "wrong")  # an unknown user is answered alike
    assert _failures(lab) == [f"login failed: answered after {d:g} s (the delay doubles with each failure)"
                              for d in (0.01, 0.02, 0.04)]
    again.login("bob@example.net", lab.users["bob@example.net"].password)
    again.logout()
    third = _tls_client(lab)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        third.login("bob@example.net", "wrong")
    third.logout()
    assert _failures(lab)[-1].startswith("login failed: answered after 0.01 s")


def test_the_answer_to_a_failed_login_waits_for_the_delay(lab: smtplab.Lab, limits: Limits) -> None:
    """While the delay runs nothing is answered: the NO comes after it, never before."""
    limits.login_delay = 600.0
    failed = threading.Event()

    def listener(event: smtplab.trace.ring.TraceEvent) -> None:
        if event.text.startswith("login failed"):
            failed.set()

    lab.trace.subscribe(listener)
    try:
        client = _tls_client(lab)
        client.send(b"a LOGIN bob@example.net wrong\r\n")
        assert failed.wait(30)  # the server has decided: the trace says so, then it waits
        client.sock.setblocking(False)
        with pytest.raises((ssl.SSLWantReadError, BlockingIOError)):
            client.sock.recv(1024)
        client.shutdown()
    finally:
        lab.trace.unsubscribe(listener)
