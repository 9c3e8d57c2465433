"""A small SMTP load client: N parallel sessions, each sending its share of M messages over one connection.

    python benchmarks/loadgen.py HOST PORT [--sessions 20] [--messages 2000] [--size 1000]
                                 [--sender carol@example.org] [--recipient bob@example.net]

It speaks plain SMTP like smtplib would (EHLO once, then MAIL, RCPT, DATA and the message, waiting for
each reply: no pipelining), on one asyncio loop, so the same client drives every server a benchmark
compares. It prints one JSON object: messages sent, seconds from the first connection to the last
250, and messages per second; a refused message ends the run with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """Read one (possibly multi-line) reply and return its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line


async def expect(reader: asyncio.StreamReader, code: bytes, what: str) -> None:
    line = await read_reply(reader)
    if not line.startswith(code):
        raise RuntimeError(f"{what}: expected {code.decode()}, got {line.decode(errors='replace').strip()}")


async def session(host: str, port: int, count: int, message: bytes, sender: str, recipient: str) -> int:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        await expect(reader, b"220", "greeting")
        writer.write(b"EHLO loadgen.test\r\n")
        await expect(reader, b"250", "EHLO")
        for _ in range(count):
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await expect(reader, b"250", "MAIL")
            writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
            await expect(reader, b"250", "RCPT")
            writer.write(b"DATA\r\n")
            await expect(reader, b"354", "DATA")
            writer.write(message)
            await expect(reader, b"250", "end of data")
        writer.write(b"QUIT\r\n")
        await expect(reader, b"221", "QUIT")
    finally:
        writer.close()
    return count


def build_message(size: int, sender: str, recipient: str) -> bytes:
    head = f"From: {sender}\r\nTo: {recipient}\r\nSubject: load\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    body = body[: body.rfind(b"\r\n") + 2] if b"\r\n" in body else line
    return head + body + b".\r\n"


async def run(host: str, port: int, sessions: int, messages: int, size: int, sender: str, recipient: str) -> dict:
    message = build_message(size, sender, recipient)
    shares = [messages // sessions + (1 if i < messages % sessions else 0) for i in range(sessions)]
    began = time.perf_counter()
    sent = await asyncio.gather(*(session(host, port, n, message, sender, recipient) for n in shares if n))
    seconds = time.perf_counter() - began
    total = sum(sent)
    return {"messages": total, "sessions": sessions, "size": len(message), "seconds": seconds,
            "per_second": total / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1000, help="body size in bytes (default 1000)")
    parser.add_argument("--sender", default="carol@example.org")
    parser.add_argument("--recipient", default="bob@example.net")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run(args.host, args.port, args.sessions, args.messages, args.size, args.sender,
                                 args.recipient))
    except (RuntimeError, ConnectionError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
