"""The lab DNS asked synchronously, in the shapes pyspf, dkimpy and authheaders expect (`mailauth.evaluate`).

The receiving MX's SPF, DKIM and DMARC checks run on worker threads; their libraries ask a blocking
resolver. Each question goes from the asking host's own address and, inside a message's work, is
announced (`trace.ring.announce_dns_question`) so the lab DNS ties it to that message.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import spf

from ..trace.ring import announce_dns_question, current_correlation

__all__ = ["LabDns"]


class LabDns:
    """Synchronous lookups against the lab DNS, in the shapes pyspf, dkimpy and authheaders expect.

    Each thread that asks keeps one UDP socket open to the lab DNS (a stub resolver's socket), instead
    of opening and closing one per question: the MX asks three or four questions for every message.
    """

    def __init__(self, address: str, port: int, timeout: float = 2.0) -> None:
        self.address, self.port, self.timeout = address, port, timeout
        self._local = threading.local()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def _socket(self) -> socket.socket:
        source = getattr(self._local, "source", "")
        sockets: dict[str, socket.socket] = self._local.__dict__.setdefault("sockets", {})
        sock = sockets.get(source)
        if sock is None:
            family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
            with self._lock:
                self._sockets.append(sock)
            sockets[source] = sock
        return sock

    @contextlib.contextmanager
    def asking_from(self, address: str) -> Iterator[str]:
        """Send this thread's questions from `address`, the asking host's own, as a real MX's resolver
        would; yields the socket's "address:port", the client the DNS server's trace shows."""
        previous = getattr(self._local, "source", "")
        self._local.source = address
        try:
            host, port = self._socket().getsockname()[:2]
            yield f"{host}:{port}"
        finally:
            self._local.source = previous

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def _answer(self, name: str, qtype: str) -> list[Any]:
        query = dns.message.make_query(name, qtype)
        sock = self._socket()
        if current_correlation():  # the lab DNS ties the question to the message being checked
            host, port = sock.getsockname()[:2]
            announce_dns_question(f"{host}:{port}", query.id)
        try:
            response = dns.query.udp(query, self.address, timeout=self.timeout, port=self.port, sock=sock,
                                     ignore_unexpected=True)
            if response.flags & dns.flags.TC:  # too big for UDP: ask again over TCP (RFC 7766)
                response = self._over_tcp(query)
        except dns.exception.Timeout:
            raise spf.TempError(f"DNS timeout for {name}") from None
        if response.rcode() != dns.rcode.NOERROR:  # NXDOMAIN; REFUSED or SERVFAIL: nothing to use either
            return []
        answer = response.resolve_chaining().answer  # type: ignore[attr-defined]  # a QueryMessage: follows CNAMEs
        return list(answer) if answer is not None else []

    def _over_tcp(self, query: dns.message.Message) -> dns.message.Message:
        """Ask again over TCP from the asking host's address, announced like the UDP question was."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.bind((getattr(self._local, "source", "") or "", 0))
            if current_correlation():
                host, port = sock.getsockname()[:2]
                announce_dns_question(f"{host}:{port}", query.id)
            sock.connect((self.address, self.port))
            return dns.query.tcp(query, self.address, timeout=self.timeout, port=self.port, sock=sock)

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT")]

    def spf_records(self, name: str, qtype: str) -> list[Any]:
        out: list[Any] = []
        for rdata in self._answer(name, qtype):
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
        return out

    def dkim_txt(self, name: bytes, timeout: float = 5) -> bytes | None:
        records = self.txt(name.decode("ascii", "replace").rstrip("."))
        return records[0].encode() if records else None

    def dmarc_txt(self, name: str) -> str | None:
        records = self.txt(name)
        return records[0] if records else None
