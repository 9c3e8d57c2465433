"""The IMAP connection: pymap's protocol layer, with the lab's commands, answers and limits.

pymap's parser and its command loop (``pymap.imap``) are kept; the lab subclasses them here (no patch):

- NAMESPACE (RFC 2342), ENABLE (RFC 5161), UNSELECT (RFC 3691); SELECT answers FLAGS with every keyword
  of the folder and PERMANENTFLAGS with ``\\*`` (new keywords allowed, RFC 3501 7.1); \\Recent as
  :mod:`.mailbox` explains.
- CLOSE after EXAMINE deselects without expunging (RFC 3501 6.4.2; pymap answered an error).
- DELETE of the selected mailbox first leaves it (``* OK [CLOSED]``, RFC 7162 3.2.11), then deletes it:
  the session goes on in the authenticated state (pymap sent ``* BYE``).
- ``BINARY.PEEK[...]`` is answered as ``BINARY[...]`` (RFC 3516 4.2; pymap echoed ``BINARY.PEEK``).
- Each response goes out in one write: an IDLE update was five TLS records, and imapclient read a
  fragment as the whole line.
- Limits: before authentication a connection may stay idle for ``prelogin_timeout`` seconds, then gets
  ``* BYE`` (autologout, RFC 9051 5.4); a literal must arrive within ``literal_timeout``; each failed
  LOGIN/AUTHENTICATE waits a delay that doubles with the failures of the connection and of the client
  address, then gets ``NO [AUTHENTICATIONFAILED]`` (RFC 5530 3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, closing
from typing import Any

from proxyprotocol.sock import SocketInfo
from pymap.context import connection_exit
from pymap.exceptions import InvalidAuth
from pymap.imap import IMAPConnection
from pymap.imap.state import ConnectionState
from pymap.interfaces.login import LoginInterface
from pymap.parsing.command.any import NoOpCommand
from pymap.parsing.command.auth import DeleteCommand, SelectCommand
from pymap.parsing.command.select import CloseCommand, FetchCommand, StoreCommand
from pymap.parsing.response import (
    CommandResponse,
    Response,
    ResponseBad,
    ResponseBye,
    ResponseCode,
    ResponseOk,
    UntaggedResponse,
)
from pymap.parsing.response.code import MailboxId, PermanentFlags, UidNext, UidValidity, Unseen
from pymap.parsing.response.specials import ExistsResponse, FlagsResponse, RecentResponse
from pymap.parsing.specials import FetchAttribute
from pymap.parsing.specials.flag import Flag, Recent, Wildcard
from pymap.selected import SelectedMailbox
from pysasl.creds.server import ServerCredentials

from . import pymap_patch
from .commands import EnableCommand, NamespaceCommand, UnselectCommand

__all__ = ["LabImapServer", "LoginThrottle", "Limits"]

_Ret = tuple[CommandResponse, SelectedMailbox | None]


class Limits:
    """How long a client may take, and how a failed login is slowed down (one per server)."""

    def __init__(self, *, prelogin_timeout: float = 60.0, literal_timeout: float = 60.0,
                 login_delay: float = 0.5, login_delay_max: float = 16.0) -> None:
        self.prelogin_timeout = prelogin_timeout
        self.literal_timeout = literal_timeout
        self.login_delay = login_delay
        self.login_delay_max = login_delay_max


class LoginThrottle:
    """Failed logins per client address; the delay before the next NO doubles with each one."""

    FORGET_AFTER = 15 * 60.0  # an address with no failure for this long starts again

    def __init__(self, limits: Limits, now: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._now = now
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, address: str, connection_failures: int) -> float:
        """Count one more failure from `address`; return the delay to wait before answering it."""
        now = self._now()
        count, last = self._failures.get(address, (0, now))
        if now - last > self.FORGET_AFTER:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        if len(self._failures) > 4096:  # bounded: forget the oldest half
            for key, _ in sorted(self._failures.items(), key=lambda item: item[1][1])[:2048]:
                del self._failures[key]
        failures = max(count, connection_failures)
        return min(self._limits.login_delay * 2 ** (failures - 1), self._limits.login_delay_max)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class _Peek(FetchAttribute):
    """``BINARY.PEEK[...]``, answered as ``BINARY[...]`` (RFC 3516 4.2, as BODY.PEEK is as BODY)."""

    @property
    def for_response(self) -> FetchAttribute:
        answer = FetchAttribute(b"BINARY", self.section, self.partial)
        return answer.for_response


class LabState(ConnectionState):
    """pymap's connection state, with the lab's commands and answers."""

    def __init__(self, login: LoginInterface, config: Any, throttle: LoginThrottle, address: str,
                 on_login_failed: Callable[[float], None]) -> None:
        super().__init__(login, config)
        self._throttle = throttle
        self._address = address
        self._failures = 0
        self._on_login_failed = on_login_failed
        self._flags: frozenset[Flag] = frozenset()  # the folder's flags as this session was last told

    @property
    def authenticated(self) -> bool:
        return self._session is not None

    async def do_authenticate(self, cmd: Any, creds: ServerCredentials | None) -> CommandResponse:
        try:
            response = await super().do_authenticate(cmd, creds)
        except InvalidAuth:  # wrong password or unknown user alike: NO [AUTHENTICATIONFAILED] (RFC 5530)
            self._failures += 1
            delay = self._throttle.failed(self._address, self._failures)
            self._on_login_failed(delay)
            await asyncio.sleep(delay)
            raise
        self._throttle.succeeded(self._address)
        return response

    async def _announce_flags(self, resp: CommandResponse) -> None:
        """RFC 3501 7.2.6: when the folder's flags grew (a new keyword), say so with FLAGS (and
        PERMANENTFLAGS in a read-write session) before the command completes."""
        if self._selected is None:
            return
        flags = await self.session.permanent_flags(self._selected)  # type: ignore[attr-defined]
        if flags != self._flags:
            self._flags = flags
            resp.add_untagged(FlagsResponse((flags - {Wildcard}) | {Recent}))
            if not self._selected.readonly:
                resp.add_untagged_ok(b"Flags permitted.", PermanentFlags(flags))

    async def do_store(self, cmd: StoreCommand) -> _Ret:  # type: ignore[override]
        resp, updates = await super().do_store(cmd)
        await self._announce_flags(resp)
        return resp, updates

    async def do_noop(self, cmd: NoOpCommand) -> _Ret:  # type: ignore[override]
        resp, updates = await super().do_noop(cmd)
        await self._announce_flags(resp)
        return resp, updates

    async def do_select(self, cmd: SelectCommand) -> _Ret:  # type: ignore[override]
        self._selected = None
        mailbox, updates = await self.session.select_mailbox(cmd.mailbox, cmd.readonly)
        self._flags = mailbox.permanent_flags
        defined = mailbox.permanent_flags - {Wildcard}
        if updates.readonly:
            resp = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-ONLY"))
            resp.add_untagged_ok(b"Read-only mailbox.", PermanentFlags([]))
        else:
            resp = ResponseOk(cmd.tag, b"Selected mailbox.", ResponseCode.of(b"READ-WRITE"))
            resp.add_untagged_ok(b"Flags permitted.", PermanentFlags(mailbox.permanent_flags))
        resp.add_untagged(FlagsResponse(defined | mailbox.session_flags))
        resp.add_untagged(ExistsResponse(updates.messages.exists))
        resp.add_untagged(RecentResponse(updates.session_flags.recent))  # this session's \Recent
        resp.add_untagged_ok(b"Predicted next UID.", UidNext(mailbox.next_uid))
        resp.add_untagged_ok(b"UIDs valid.", UidValidity(mailbox.uid_validity))
        if mailbox.first_unseen:
            resp.add_untagged_ok(b"First unseen message.", Unseen(mailbox.first_unseen))
        resp.add_untagged_ok(b"Object ID.", MailboxId(mailbox.mailbox_id))
        return resp, updates

    async def do_close(self, cmd: CloseCommand) -> _Ret:  # type: ignore[override]
        # RFC 3501 6.4.2: CLOSE expunges only a mailbox selected read-write; after EXAMINE it just leaves.
        if not self.selected.readonly:
            await self.session.expunge_mailbox(self.selected)
        self._selected = None
        return ResponseOk(cmd.tag, cmd.command + b" completed."), None

    async def do_unselect(self, cmd: UnselectCommand) -> _Ret:
        self._selected = None  # RFC 3691 2: no expunge
        return ResponseOk(cmd.tag, cmd.command + b" completed."), None

    async def do_namespace(self, cmd: NamespaceCommand) -> _Ret:
        # RFC 2342 5: one personal namespace, prefix "", delimiter "/"; no other users', no shared.
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp.add_untagged(UntaggedResponse(b'NAMESPACE (("" "/")) NIL NIL'))
        return resp, None

    async def do_enable(self, cmd: EnableCommand) -> _Ret:
        if self._selected is not None:  # RFC 5161 3.1: only in the authenticated state
            return ResponseBad(cmd.tag, b"ENABLE: only before a mailbox is selected."), None
        # None of the server's extensions needs enabling (no CONDSTORE, QRESYNC, UTF8=ACCEPT): an empty
        # ENABLED response says so (RFC 5161 3.2).
        resp = ResponseOk(cmd.tag, cmd.command + b" completed.")
        resp.add_untagged(UntaggedResponse(b"ENABLED"))
        return resp, None

    async def do_delete(self, cmd: DeleteCommand) -> _Ret:  # type: ignore[override]
        closed = False
        if self._selected is not None and cmd.mailbox == self._selected.lookup and cmd.mailbox != "INBOX":
            # RFC 3501 6.3.4 does not say what becomes of a session whose selected mailbox it deletes:
            # leave it first, so the session goes on authenticated (Dovecot disconnects instead).
            self._selected, closed = None, True
        resp, updates = await super().do_delete(cmd)
        if closed:
            resp.add_untagged_ok(b"Selected mailbox deleted: none is selected now.", ResponseCode.of(b"CLOSED"))
        return resp, updates

    async def do_fetch(self, cmd: FetchCommand) -> _Ret:  # type: ignore[override]
        cmd.attributes = [_Peek(a.attribute, a.section, a.partial) if a.value == b"BINARY.PEEK" else a
                          for a in cmd.attributes]
        return await super().do_fetch(cmd)


class _Buffer:
    """Collects one response's writes, to hand them to the transport in one write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))


class _TimedReader:
    """The connection's reader, with a deadline on each literal (LITERAL+ ones included)."""

    def __init__(self, reader: Any, read_literal: Callable[[int], Any]) -> None:
        self._reader = reader
        self._read_literal = read_literal

    def readexactly(self, n: int) -> Any:
        return self._read_literal(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class LabConnection(IMAPConnection):
    """pymap's command loop, with the lab's limits and whole-response writes."""

    def __init__(self, commands: Any, config: Any, reader: Any, writer: Any, sock_info: SocketInfo,
                 limits: Limits, state: LabState) -> None:
        super().__init__(commands, config, _TimedReader(reader, self._read_literal), writer,  # type: ignore[arg-type]
                         sock_info)
        self._raw_reader = reader
        self._limits = limits
        self._state = state
        self._said_bye = False

    async def _bye(self, text: bytes) -> None:
        self._said_bye = True
        await self.write_response(ResponseBye(text, ResponseCode.of(b"UNAVAILABLE")))

    async def _read_literal(self, n: int) -> bytes:
        try:
            return await asyncio.wait_for(self._raw_reader.readexactly(n), self._limits.literal_timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            await self._bye(b"Literal not sent in time.")
            raise EOFError from None

    async def send_error_disconnect(self) -> None:
        if not self._said_bye:  # the connection ended on a limit: its BYE is sent already
            await super().send_error_disconnect()

    async def readline(self) -> memoryview:
        if self._state.authenticated:
            return await super().readline()
        try:
            return await asyncio.wait_for(super().readline(), self._limits.prelogin_timeout)
        except TimeoutError:  # RFC 9051 5.4: autologout; before login nobody's mail is at stake
            await self._bye(b"Autologout: idle for too long before logging in.")
            raise EOFError from None

    async def write_response(self, resp: Response) -> None:
        buffer = _Buffer()
        try:
            await resp.async_write(buffer)  # type: ignore[arg-type]
            self.writer.write(b"".join(buffer.parts))
            await self.writer.drain()
        except ConnectionError:
            pass


class LabImapServer:
    """Called by asyncio.start_server (through the PROXY-protocol reader) for each connection."""

    def __init__(self, login: LoginInterface, config: Any, limits: Limits,
                 on_login_failed: Callable[[float], None] | None = None) -> None:
        pymap_patch.apply()  # on first use, checked: see smtplab.net.imapd.pymap_patch
        self._login = login
        self._config = config
        self._limits = limits
        self._throttle = LoginThrottle(limits)
        self._on_login_failed = on_login_failed

    async def __call__(self, reader: Any, writer: Any, sock_info: SocketInfo,
                       on_login_failed: Callable[[float], None] | None = None) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        report = on_login_failed or self._on_login_failed or (lambda delay: None)
        state = LabState(self._login, self._config, self._throttle, str(peer[0]), report)
        conn = LabConnection(self._config.commands, self._config, reader, writer, sock_info, self._limits, state)
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            await conn.run(state)

