"""Reading a capture back without tshark: its frames as Wireshark numbers them, and a tshark-like summary.

What `Capture.frames()` and `Capture.summary()` (`views/pcap.py`) return; only dpkt is needed, so a
learner without Wireshark still sees the packets the lab wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Frame", "frames", "summary", "TCP_FLAGS"]

TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}  # RFC 9293 §3.1: the control bits


@dataclass(frozen=True)
class Frame:
    """One frame of a capture file, numbered as Wireshark numbers it (from 1)."""

    number: int
    time: float
    source: str
    source_port: int
    destination: str
    destination_port: int
    transport: str  # "tcp" or "udp"
    flags: str  # TCP flags: "S", "SA", "A", "PA", "FA", "RA" (FIN, SYN, RST, PSH, ACK); "" for UDP
    seq: int
    ack: int
    payload: bytes

    @property
    def is_tls(self) -> bool:
        """True when the payload starts with a TLS record header (content type 20-23, version 3.x)."""
        return len(self.payload) >= 5 and 20 <= self.payload[0] <= 23 and self.payload[1] == 3

    def text(self, width: int = 70) -> str:
        """The payload's first line as text (or a note on what it is)."""
        if not self.payload:
            return ""
        if self.is_tls:
            return f"TLS records, {len(self.payload)} bytes (encrypted)"
        return self.payload.split(b"\r\n", 1)[0][:width].decode("latin-1")


def frames(path: str | Path) -> list[Frame]:
    """Every TCP and UDP frame of the capture at `path`, in file order (the order Wireshark numbers)."""
    import socket

    import dpkt  # type: ignore[import-untyped]

    out = []
    with open(path, "rb") as file:
        for number, (moment, data) in enumerate(dpkt.pcapng.Reader(file), start=1):
            ip = dpkt.ethernet.Ethernet(data).data
            layer = getattr(ip, "data", None)
            if not isinstance(layer, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                continue
            family = socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET
            tcp = isinstance(layer, dpkt.tcp.TCP)
            flags = "".join(name for name, bit in TCP_FLAGS.items() if tcp and layer.flags & bit)
            out.append(Frame(number, float(moment), socket.inet_ntop(family, ip.src), layer.sport,
                             socket.inet_ntop(family, ip.dst), layer.dport, "tcp" if tcp else "udp", flags,
                             layer.seq if tcp else 0, layer.ack if tcp else 0, bytes(layer.data)))
    return out


def summary(path: str | Path, decode_as: Iterable[str] = (), *, port: int | None = None,
            limit: int | None = None) -> str:
    """A tshark-like list of the frames in a capture, in pure Python: number, time, ends, protocol, info.

    `decode_as` (from `Capture.decode_as`) names the protocol of each lab port; TLS is recognised by its
    record header (the bytes stay encrypted: only tshark or Wireshark with the key log decrypts them).
    With `port`, only the frames from or to that port (tshark's `tcp.port == N || udp.port == N`).
    """
    ports = {}
    for entry in decode_as:
        selector, _comma, protocol = entry.partition(",")
        ports[int(selector.rpartition("==")[2])] = protocol.upper()
    lines = []
    all_frames = frames(path)
    start = all_frames[0].time if all_frames else 0.0
    if port is not None:
        all_frames = [f for f in all_frames if port in (f.source_port, f.destination_port)]
    for frame in all_frames[:limit]:
        protocol = ports.get(frame.destination_port) or ports.get(frame.source_port) or frame.transport.upper()
        if frame.transport == "tcp" and not frame.payload:
            protocol, info = "TCP", f"[{frame.flags}] Seq={frame.seq} Ack={frame.ack}"
        elif frame.is_tls:
            protocol, info = "TLS", "encrypted: TLS records"
        elif protocol == "DNS":
            info = f"DNS message, {len(frame.payload)} bytes"
        else:
            info = frame.text()
        lines.append(f"{frame.number:5} {frame.time - start:9.6f} {frame.source}:{frame.source_port} -> "
                     f"{frame.destination}:{frame.destination_port} {protocol:5} {info}")
    if limit is not None and len(all_frames) > limit:
        lines.append(f"... ({len(all_frames) - limit} more frames)")
    return "\n".join(lines)
