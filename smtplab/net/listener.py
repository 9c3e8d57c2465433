"""Stopping a lab listener built on `asyncio.start_server` (the IMAP and POP3 servers): one way for both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def close_listener(server: asyncio.Server, writers: Iterable[asyncio.StreamWriter],
                         tasks: Iterable[asyncio.Task[object]]) -> None:
    """Stop listening, drop every open connection and wait for its session task to end.

    Connections are aborted, not shut down gracefully (no TLS close_notify): a stopped host just goes away, as a
    crashed server would, and a POP3 session dropped this way never reaches UPDATE (RFC 1939 section 6).
    """
    server.close()
    for writer in list(writers):
        writer.transport.abort()
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    await server.wait_closed()
