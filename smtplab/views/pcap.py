"""The lab's traffic as a capture file: pcapng for Wireshark and tshark, with the TLS key log beside it.

Capturing on the loopback interface (tcpdump, Wireshark) needs privileges that learners on Binder or a
shared JupyterHub do not have. The lab does not need them: its servers record every byte at the TCP
transport, below TLS, with the time it crossed (`wire.WireTap`). From those records this module builds
the packets a capture would have held (dpkt builds and writes them): for each TCP connection the handshake
(SYN, SYN-ACK, ACK), the data in segments of at most 65,000 bytes with their sequence and
acknowledgement numbers, the acknowledgements, and FIN (or RST) at the close; for each DNS question over
UDP the query and the answer datagram. Addresses and ports are the real ones of both ends (the lab's
hosts have their own 127.x addresses); times are lab time, as in the trace and the Received headers.

The servers listen on ports the system gave them, not 25, 587, 143 and 53, so Wireshark does not guess
the protocols by port: `Capture.decode_as` says which port carries what (tshark and Wireshark's `-d`,
or Analyze > Decode As in the Wireshark window). With the key log (`-o tls.keylog_file:PATH`, or
Preferences > Protocols > TLS > (Pre)-Master-Secret log filename) Wireshark decrypts the TLS sessions
and shows the SMTP and IMAP inside STARTTLS; see `LabCA.keylog` for what that file is and why real
servers never write one.

The lab keeps the bytes of its newest connections (200 SMTP, 200 IMAP, 2000 DNS questions: `smtplab.lab`'s
WIRE_KEEP), 256 KiB of each; a connection with more has a packet comment where its record ends, and no FIN.
Reading a capture back without tshark (`Capture.summary`, `Capture.frames`) is `views/frames.py`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import SmtpLabError
from ..i18n import _
from ..net.wire import LIMIT, WireTap
from .frames import TCP_FLAGS, Frame, frames, summary

__all__ = ["Capture", "CaptureError", "ToolMissing", "Frame", "frames", "write_capture", "write_taps", "summary",
           "PORT_PROTOCOLS"]

SEGMENT = 65_000  # the largest TCP payload written (loopback's MTU is 65,536)
WINDOW = 65_535
MSS = 65_495  # what Linux announces on loopback
LOOPBACK_MAC = bytes(6)  # a Linux loopback capture has Ethernet headers with zero addresses
# The lab's port names and the Wireshark dissector for each (`-d tcp.port==N,smtp`).
PORT_PROTOCOLS = {"smtp": "smtp", "submission": "smtp", "imap": "imap", "pop3": "pop", "dns": "dns"}
# Implicit TLS (RFC 8314): the port is TLS from the first byte, and the protocol is inside it.
IMPLICIT_TLS = {"submissions": "smtp", "imaps": "imap", "pop3s": "pop"}


class CaptureError(SmtpLabError):
    """The capture could not be written (no such message, or the file could not be created)."""


class ToolMissing(SmtpLabError):
    """A program the lab runs for you (tshark) is not installed."""


@dataclass(frozen=True)
class Capture:
    """A capture written by `lab.pcap()`: the pcapng file and its key log; unpacks as `pcap, keylog`."""

    pcap: Path
    keylog: Path
    decode_as: tuple[str, ...] = ()  # e.g. "tcp.port==40123,smtp": the lab's ports and their protocols
    packets: int = 0
    connections: int = 0
    sessions: int = 0  # TLS sessions whose secrets are in the key log

    def __iter__(self) -> Iterator[Path]:
        return iter((self.pcap, self.keylog))

    def tshark_args(self, *, keys: bool = True) -> list[str]:
        """The tshark (or wireshark) options that open this capture: the file, the ports, the key log."""
        args = ["-r", str(self.pcap)]
        for entry in self.decode_as:
            args += ["-d", entry]
        if keys:
            args += ["-o", f"tls.keylog_file:{self.keylog}"]
        return args

    def command(self, program: str = "wireshark", *, keys: bool = True) -> str:
        """A command line to paste into a terminal, e.g. `wireshark -r ... -d ... -o tls.keylog_file:...`
        (one option per line, continued with backslashes)."""
        import shlex

        args = self.tshark_args(keys=keys)
        options = [" ".join(shlex.quote(a) for a in args[i: i + 2]) for i in range(0, len(args), 2)]
        return " \\\n    ".join([program, *options])

    def tshark(self, display_filter: str = "", *options: str, keys: bool = True) -> str:
        """Run tshark on this capture (with the lab's ports and, if `keys`, the key log); return what it prints.

        Raises ToolMissing when tshark is not installed (`summary()` reads the file without it).
        """
        import shutil
        import subprocess

        program = shutil.which("tshark")
        if program is None:
            raise ToolMissing(_("tshark is not installed here (Debian/Ubuntu: apt-get install tshark); "
                                "capture.summary() lists the frames without it, or open the file in Wireshark: "
                                "{command}").format(command=self.command()))
        args = [program, "-n", *self.tshark_args(keys=keys), *options]
        if display_filter:
            args += ["-Y", display_filter]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise CaptureError(_("tshark failed: {stderr}").format(stderr=result.stderr.strip()))
        return result.stdout.rstrip("\n")

    def summary(self, *, port: int | None = None, limit: int | None = None) -> str:
        """The frames of the capture (only those of `port`), listed in pure Python (no tshark needed); TLS stays
        encrypted."""
        return summary(self.pcap, self.decode_as, port=port, limit=limit)

    def frames(self) -> list[Frame]:
        """The TCP and UDP frames of the capture, numbered as Wireshark numbers them."""
        return frames(self.pcap)

    def __str__(self) -> str:
        return (f"{self.pcap} ({self.packets} packets, {self.connections} connections); TLS keys of "
                f"{self.sessions} sessions in {self.keylog}")


def write_capture(lab: Any, path: str | Path, message: Any, taps: list[WireTap], keylog_source: Path) -> Capture:
    """Write `lab`'s kept traffic, `taps` (or only the connections and DNS questions of `message` among them),
    to `path`, and the lines of `keylog_source` for its TLS sessions beside it."""
    if message is not None:
        from .journey import message_events, message_key

        key = message_key(message)
        conns = {event.conn for event in message_events(lab.trace, message) if event.conn}
        taps = [tap for tap in taps if conns.intersection(tap.conns)]
        if not taps:
            raise CaptureError(_("no traffic of message {key!r} is kept: give a queue id or Message-ID from "
                                 "lab.send(...) or lab.queue (the lab keeps the newest connections only)").format(
                key=key))
    # Which port carries which protocol, for the servers in this capture (Wireshark's "Decode As").
    served = {(tap.transport, tap.server[1]) for tap in taps}
    decode_as = []
    for host in lab.hosts.values():
        for service, port in host.ports.items():
            if ("tcp", port) not in served:
                continue
            if service in PORT_PROTOCOLS:
                decode_as.append(f"tcp.port=={port},{PORT_PROTOCOLS[service]}")
            elif service in IMPLICIT_TLS:
                decode_as += [f"tcp.port=={port},tls", f"tls.port=={port},{IMPLICIT_TLS[service]}"]
    decode_as += [f"{transport}.port=={lab.dns.port},dns" for transport in ("udp", "tcp")
                  if (transport, lab.dns.port) in served]
    return write_taps(taps, path, keylog_source=keylog_source, decode_as=tuple(dict.fromkeys(decode_as)))


def write_taps(taps: Iterable[WireTap], path: str | Path, *, keylog_source: Path | None = None,
               keylog: str | Path | None = None, decode_as: tuple[str, ...] = ()) -> Capture:
    """Write the packets of `taps` to the pcapng file `path` and, beside it (`NAME.keylog`), the lines of
    `keylog_source` that belong to the TLS sessions in them. Both files are created 0600."""
    import dpkt  # type: ignore[import-untyped]

    pcap_path = Path(path)
    keylog_path = Path(keylog) if keylog is not None else pcap_path.with_suffix(".keylog")
    taps = list(taps)
    timed: list[_Packet] = []
    randoms: set[str] = set()
    for tap in taps:
        timed += _udp_packets(tap) if tap.transport == "udp" else _tcp_packets(tap)
        randoms.update(_client_randoms(tap))
    timed.sort(key=lambda packet: packet.time)  # stable: each connection's packets keep their order
    with _create_private(pcap_path) as out:
        # Snap length above the largest frame (65,000 bytes of TCP payload and the headers).
        writer = dpkt.pcapng.Writer(out, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
        for packet in timed:
            if packet.comment:
                pcapng = dpkt.pcapng
                block = pcapng.EnhancedPacketBlockLE(pkt_data=packet.data, opts=[
                    pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_COMMENT, text=packet.comment),
                    pcapng.PcapngOptionLE(code=pcapng.PCAPNG_OPT_ENDOFOPT)])
                writer.writepkt(block, ts=packet.time)
            else:
                writer.writepkt_time(packet.data, packet.time)
    sessions = _write_keylog(keylog_path, keylog_source, randoms, pcap_path.name)
    return Capture(pcap_path, keylog_path, decode_as, len(timed), len(taps), sessions)


def _create_private(path: Path, mode: str = "wb") -> IO[Any]:
    """Open `path` for writing, created (or emptied) with mode 0600 before any byte is written; missing
    folders are made 0700."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        except OSError:
            os.close(fd)
            raise
    except OSError as exc:
        raise CaptureError(_("cannot write {path}: {error}; give a path in a folder you can write to, e.g. "
                             "lab.pcap('capture.pcapng')").format(path=path, error=exc.strerror or exc)) from None
    return open(fd, mode)


@dataclass
class _Packet:
    time: float
    data: bytes  # the whole frame: Ethernet, IP, TCP or UDP, payload
    comment: str = ""


# --- TCP and UDP packets from a tap ---

def _frame(source: str, destination: str, ident: int, layer: Any) -> bytes:
    """An Ethernet frame (zero addresses, as on Linux's loopback) carrying `layer` (TCP or UDP) over IPv4 or IPv6."""
    import socket

    import dpkt  # type: ignore[import-untyped]

    protocol = dpkt.ip.IP_PROTO_TCP if isinstance(layer, dpkt.tcp.TCP) else dpkt.ip.IP_PROTO_UDP
    if ":" in source:
        ip: Any = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, source),
                               dst=socket.inet_pton(socket.AF_INET6, destination), nxt=protocol, hlim=64,
                               plen=len(layer), data=layer)
        kind = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(source), dst=socket.inet_aton(destination), p=protocol,
                        id=ident & 0xFFFF, df=1, ttl=64, data=layer)  # checksums: computed by dpkt
        kind = dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=LOOPBACK_MAC, dst=LOOPBACK_MAC, type=kind, data=ip))


def _isn(tap: WireTap, side: str) -> int:
    # Initial sequence numbers look random, as real ones do, and are the same each time a capture is written.
    return zlib.crc32(f"{tap.conn}|{tap.client}|{tap.server}|{tap.opened}|{side}".encode())


def _tcp_packets(tap: WireTap) -> list[_Packet]:
    import dpkt  # type: ignore[import-untyped]

    ends = {"C": (tap.client[0], tap.client[1]), "S": (tap.server[0], tap.server[1])}
    other = {"C": "S", "S": "C"}
    seq = {side: _isn(tap, side) for side in "CS"}
    ident = {side: _isn(tap, side + "ip") & 0xFFFF for side in "CS"}
    out: list[_Packet] = []
    last = [tap.opened]

    def emit(moment: float, side: str, flags: str, payload: bytes = b"", options: bytes = b"") -> None:
        moment = max(moment, last[0])  # the clock read on the loop never goes back within a connection
        last[0] = moment
        source, target = ends[side], ends[other[side]]
        segment = dpkt.tcp.TCP(sport=source[1], dport=target[1], seq=seq[side] & 0xFFFFFFFF,
                               ack=seq[other[side]] & 0xFFFFFFFF if "A" in flags else 0, win=WINDOW,
                               flags=sum(TCP_FLAGS[flag] for flag in flags), opts=options, data=payload)
        segment.off = (20 + len(options)) // 4  # the header length in 32-bit words, options included
        ident[side] += 1
        out.append(_Packet(moment, _frame(source[0], target[0], ident[side], segment)))

    # The three-way handshake (RFC 9293 §3.5), done when the server accepted the connection.
    mss = struct.pack("!BBH", 2, 4, MSS)  # the MSS option (RFC 9293 §3.2)
    emit(tap.opened, "C", "S", options=mss)
    seq["C"] += 1
    emit(tap.opened, "S", "SA", options=mss)
    seq["S"] += 1
    emit(tap.opened, "C", "A")

    chunks = list(tap.chunks)
    closing = [] if tap.truncated else sorted(tap.ends, key=lambda end: end.after)
    done: set[str] = set()
    reset = False
    # Each piece of data (or FIN) is acknowledged by the other side, at once unless that side's own next
    # segment follows and carries the acknowledgement (what delayed ACKs do).
    steps: list[tuple[float, str, str, bytes]] = []
    index = 0
    for position, chunk in enumerate(chunks):
        while index < len(closing) and closing[index].after <= position:
            end = closing[index]
            steps.append((end.time, end.direction, end.kind, b""))
            index += 1
        for offset in range(0, len(chunk.data), SEGMENT):
            steps.append((chunk.time, chunk.direction, "DATA", chunk.data[offset: offset + SEGMENT]))
    for end in closing[index:]:
        steps.append((end.time, end.direction, end.kind, b""))
    if tap.closed and not tap.truncated and not any(kind == "RST" for _, _, kind, _ in steps):
        # A side that had not sent FIN when the server let go of the socket sends it then (the server
        # first when neither had: the server closed; the client answers its FIN with its own).
        finished = {side for _, side, kind, _ in steps if kind == "FIN"}
        for side in ("S", "C"):
            if side not in finished:
                steps.append((tap.closed, side, "FIN", b""))
    for number, (moment, side, kind, data) in enumerate(steps):
        if reset:
            break
        if side in done:  # nothing follows a side's FIN from that side
            continue
        following = steps[number + 1] if number + 1 < len(steps) else None
        piggyback = following is not None and following[1] == other[side] and following[2] in ("DATA", "FIN") \
            and other[side] not in done
        if kind == "RST":
            emit(moment, side, "RA")
            reset = True
            continue
        if kind == "FIN":
            emit(moment, side, "FA")
            seq[side] += 1
            done.add(side)
        else:
            emit(moment, side, "PA", data)
            seq[side] += len(data)
        if not piggyback:
            emit(moment, other[side], "A")
    if tap.truncated and out:
        out[-1].comment = (f"smtplab: this connection carried {tap.dropped} more bytes that the lab did not keep "
                           f"(it keeps {LIMIT} bytes per connection); its capture ends here")
    return out


def _udp_packets(tap: WireTap) -> list[_Packet]:
    import dpkt  # type: ignore[import-untyped]

    out = []
    for number, chunk in enumerate(tap.chunks):
        source, target = (tap.client, tap.server) if chunk.direction == "C" else (tap.server, tap.client)
        datagram = dpkt.udp.UDP(sport=source[1], dport=target[1], ulen=8 + len(chunk.data), data=chunk.data)
        out.append(_Packet(chunk.time, _frame(source[0], target[0], _isn(tap, "ip") + number, datagram)))
    return out


# --- the key log ---

def _client_randoms(tap: WireTap) -> set[str]:
    """The client randoms (hex) of the TLS ClientHellos the client sent on this connection (RFC 8446 §4.1.2)."""
    stream = b"".join(chunk.data for chunk in tap.chunks if chunk.direction == "C" and chunk.encrypted)[:16384]
    found = set()
    offset = 0
    while offset + 5 <= len(stream):
        kind, length = stream[offset], struct.unpack("!H", stream[offset + 3: offset + 5])[0]
        body = stream[offset + 5: offset + 5 + length]
        # handshake record, ClientHello (1), then 3 bytes of length and 2 of version before the random
        if kind == 22 and len(body) >= 38 and body[0] == 1:
            found.add(body[6:38].hex())
        offset += 5 + length
    return found


def _write_keylog(path: Path, source: Path | None, randoms: set[str], capture_name: str) -> int:
    """Copy the lines of `source` whose client random is one of `randoms`; return how many sessions."""
    sessions: set[str] = set()
    with _create_private(path, "w") as out:
        out.write(f"# TLS secrets of the sessions in {capture_name}, from the smtplab lab's servers (SSLKEYLOGFILE)\n")
        if source is None or not randoms or not source.exists():
            return 0
        with open(source, encoding="ascii", errors="replace") as lines:
            for line in lines:
                parts = line.split()
                if len(parts) == 3 and parts[1].lower() in randoms:
                    out.write(line if line.endswith("\n") else line + "\n")
                    sessions.add(parts[1].lower())
    return len(sessions)
