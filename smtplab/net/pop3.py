"""POP3 on a provider's Maildirs: "download and delete", beside IMAP's "keep on the server".

RFC 1939 (the protocol and its three states), RFC 2449 (CAPA and response codes), RFC 2595 (STLS) and
RFC 8314 (implicit TLS on the pop3s port). A session sees its user's INBOX only, as it was when the
maildrop was locked; DELE marks, and only QUIT (the UPDATE state) removes. Messages retrieved with RETR
move from new/ to cur/ with the Seen flag at UPDATE, so IMAP shows them as read (as Dovecot does).
Every line both ways goes to the lab trace; message bodies collapse to their size, PASS to a mark.
This module listens and starts sessions; the protocol itself is smtplab.net.pop3_session.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..i18n import N_, lazy
from ..trace.events import Close
from ..trace.ring import Trace
from .guard import BACKLOG, ConnectionGuard
from .listener import close_listener
from .maildrop import uidl_of
from .pop3_session import IDLE_TIMEOUT, MAX_LINE, Pop3Session

__all__ = ["Pop3Service", "MAX_LINE", "IDLE_TIMEOUT", "uidl_of"]


class Pop3Service:
    """One POP3 listener of a host: `pop3` (STLS, 110's role) or `pop3s` (implicit TLS, 995's)."""

    def __init__(self, host_name: str, address: str, ssl_context: ssl.SSLContext, trace: Trace, *,
                 implicit_tls: bool, check_password: Callable[[str, str], bool],
                 maildrop: Callable[[str], Path | None], peer_name: Callable[[str], str] = lambda a: "client",
                 guard: ConnectionGuard | None = None) -> None:
        self.host_name = host_name
        self.address = address
        self.port = 0
        self.port_name = "pop3s" if implicit_tls else "pop3"
        self.implicit_tls = implicit_tls
        self.ssl_context = ssl_context
        self.trace = trace
        self.check_password = check_password
        self.maildrop = maildrop
        self.peer_name = peer_name
        self.idle_timeout = IDLE_TIMEOUT
        self._guard = guard  # who may connect, and how many at once (guard.py)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        # pop3s: the server socket does the handshake (RFC 8314) before the session starts; doing it later
        # with start_tls would let the ClientHello land in the stream's plain-text buffer first.
        serve: Any = self._serve
        if self._guard is not None:  # another Unix user's connection, or one too many, is closed first
            # RFC 2449 section 8: SYS/TEMP, a temporary problem of the server's, not of this client's.
            serve = self._guard.callback(self._serve, self.host_name, self.port_name,
                                         busy=b"-ERR [SYS/TEMP] Too many connections, try again later\r\n")
        self._server = await asyncio.start_server(serve, self.address, port, backlog=BACKLOG,
                                                  ssl=self.ssl_context if self.implicit_tls else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every session (no UPDATE: nothing is deleted, RFC 1939 section 6)."""
        if self._server is None:
            return
        await close_listener(self._server, self._writers, self._tasks)
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        session = Pop3Session(self, reader, writer)
        try:
            await session.run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            session.record("close", lazy(N_("connection lost ({error})"), error=exc.__class__.__name__), payload=Close(repr(exc)))
        except asyncio.CancelledError:  # not re-raised: asyncio 3.11's stream callback would log it as an error
            session.record("close", lazy(N_("connection closed: the host went down")), payload=Close("host down"))
        except Exception as exc:  # a bug ends this session only: in the trace, never a traceback on stderr
            session.record("error", lazy(N_("session failed: {error}"), error=repr(exc)), payload=Close(repr(exc)))
        else:
            session.record("close", lazy(N_("connection closed")), payload=Close())
        finally:
            session.unlock()
            self._writers.discard(writer)
            writer.close()  # sends what is still buffered (the last +OK), then closes
            if task is not None:
                self._tasks.discard(task)
