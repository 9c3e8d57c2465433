"""The lab's authoritative DNS server: dnspython zones served over asyncio UDP and TCP.

dnspython has no server class; this module listens, traces every question and answer, and caches
replies; what to answer from the zones (RFC 1034 §4.3.2, RFC 2308) is smtplab.net.dns_zones.
It also serves whole zones to anyone who asks over TCP (AXFR, RFC 5936): on the internet operators
restrict that to their secondaries, and `dig AXFR` shows the learner why.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone

from ..i18n import N_, lazy
from ..trace.events import DnsAnswer, DnsError, DnsQuery
from ..trace.ring import Trace
from .dns_zones import answer_of, answer_summary, build_zones, respond, transfer_messages
from .guard import BACKLOG, ConnectionGuard, FloodControl
from .wire import WireTap

__all__ = ["DnsServer", "build_zones", "question_key"]

CACHE_ENTRIES = 2048  # replies kept for repeated questions
CACHE_BYTES = 4 * 1024 * 1024  # and their total size
HELD_QUERIES = 1024  # UDP questions held while the zones are not yet published (the first start)
MAX_UDP_QUERY = 4096  # octets; a question with EDNS and padding to RFC 8467's 128-octet blocks is under 1 KB


class _UdpServer:
    """The UDP side of the lab DNS: at each wake-up, read every datagram waiting (up to a batch), answer each.

    asyncio's datagram transport reads one datagram per pass of the loop; under a flood of large queries
    the socket's buffer then stays full and the kernel drops the legitimate questions arriving meanwhile.
    Draining the buffer at once, from a larger buffer, keeps room for them. Sending never blocks: a reply
    the socket cannot take now is dropped, as UDP may, and the client asks again.
    """

    BATCH = 256  # datagrams per wake-up, so TCP clients and the other servers on the loop get their turn
    RECEIVE_BUFFER = 4 * 1024 * 1024  # asked of the kernel; it grants up to net.core.rmem_max

    def __init__(self, server: DnsServer, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.sock, self.loop = server, sock, loop
        loop.add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        for _attempt in range(self.BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error reported on the socket: the next datagram is fine
                continue
            if len(data) > MAX_UDP_QUERY:  # read and refused at once: a flood of these must cost little
                self._send(self.server.refuse_oversized(data, addr), addr)
                continue
            tap = self.server.tap_datagram(data, addr)  # (not the oversized: a flood must cost little)
            if self.server.zones is None:  # the zones are not published yet: answered as soon as they are
                if len(self.server._held) < HELD_QUERIES:
                    self.server._held.append((self, data, addr, tap))
                continue
            self.reply(data, addr, tap)

    def reply(self, data: bytes, addr: tuple[str, int], tap: WireTap | None = None) -> None:
        reply = self.server.answer(data, addr, "udp", tap)
        if self._send(reply, addr) and tap is not None and reply is not None:
            tap.record("S", reply)

    def _send(self, reply: bytes | None, addr: tuple[str, int]) -> bool:
        if reply is not None:
            try:
                self.sock.sendto(reply, addr)
                return True
            except OSError:  # the send buffer is full or the client is gone: UDP may drop, the client retries
                pass
        return False

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UdpServer.RECEIVE_BUFFER)
    except OSError:
        pass
    sock.setblocking(False)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def question_key(wire: bytes) -> tuple[int, bytes, int, int, tuple[int, int, int] | None] | None:
    """What a reply depends on, read from a query without parsing all of it: the header flags, the
    question (name exactly as sent, type, class) and the EDNS version, DO bit and payload size (RFC 6891
    section 6.1.3). Not the id, not EDNS options such as padding (RFC 7830), which the reply does not echo.
    None when the query is anything but one plain question (then it is parsed and answered uncached)."""
    if len(wire) < 17:
        return None
    flags, questions, answers, authority, additional = struct.unpack_from("!HHHHH", wire, 2)
    if questions != 1 or answers or authority or additional > 1:
        return None
    pos = 12
    while True:  # the name, label by label; a compression pointer here is unusual: left to the parser
        if pos >= len(wire) or pos - 12 > 255:
            return None
        length = wire[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            return None
        pos += 1 + length
    if pos + 4 > len(wire):
        return None
    qname = wire[12:pos]
    qtype, qclass = struct.unpack_from("!HH", wire, pos)
    pos += 4
    if not additional:
        return (flags, qname, qtype, qclass, None) if pos == len(wire) else None
    if wire[pos:pos + 3] != b"\0\0\x29" or pos + 11 > len(wire):  # the OPT pseudo-record, owner "."
        return None
    payload, _rcode, version, edns_flags, length = struct.unpack_from("!HBBHH", wire, pos + 3)
    if pos + 11 + length != len(wire):
        return None
    return (flags, qname, qtype, qclass, (version, edns_flags & 0x8000, max(512, payload)))


class DnsServer:
    """Authoritative DNS for the lab's zones, on one loopback address and port (UDP and TCP)."""

    def __init__(
        self,
        zones: dict[dns.name.Name, dns.zone.Zone] | None,
        address: str,
        trace: Trace,
        host_name: str,
        peer_name: Callable[[str], str] = lambda addr: "client",
        guard: ConnectionGuard | None = None,
    ) -> None:
        self._guard = guard  # TCP only: a UDP datagram has no connection whose owner could be checked
        self._held: list[tuple[_UdpServer, bytes, tuple[str, int], WireTap | None]] = []  # before the zones
        self._published: asyncio.Event | None = None
        self._zones: dict[dns.name.Name, dns.zone.Zone] | None = None
        self.zones = zones
        self.address = address
        self.port = 0
        self.host_name = host_name
        self._trace = trace
        self._peer_name = peer_name
        self._udp: _UdpServer | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tcp_clients: set[asyncio.StreamWriter] = set()
        self.tcp_timeout = 10.0  # seconds a TCP client may take to send its next query
        # Replies by transport and question (`question_key`): the zones only change when published, so
        # the same question gets the same answer. Bounded (least recently used out first), so endless
        # different questions cannot grow it; every query is still traced.
        self._replies: OrderedDict[tuple[str, Any], tuple[str, tuple[str, str], str, DnsAnswer, bytes]] = OrderedDict()
        self._reply_bytes = 0
        self._oversized = FloodControl()
        self.wiretap: Callable[[WireTap], None] | None = None  # the lab's keeper of raw bytes (lab.pcap)

    @property
    def zones(self) -> dict[dns.name.Name, dns.zone.Zone] | None:
        return self._zones

    @zones.setter
    def zones(self, zones: dict[dns.name.Name, dns.zone.Zone] | None) -> None:
        """Publish `zones` (None: not yet; the server may start listening first and hold the questions
        that arrive until the zones are published, e.g. while the lab's DKIM keys are being made).
        Set from the server's loop once it runs."""
        self._zones = zones
        self._replies = OrderedDict()
        self._reply_bytes = 0
        if zones is None:
            return
        if self._published is not None:
            self._published.set()
        held, self._held = self._held, []
        for protocol, data, addr, tap in held:
            protocol.reply(data, addr, tap)

    async def start(self, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._published = asyncio.Event()
        if self._zones is not None:
            self._published.set()
        # UDP and TCP must share one port number; retry if TCP finds the UDP port taken.
        for _attempt in range(20):
            udp_socket = _udp_socket(self.address, port)
            udp = _UdpServer(self, udp_socket, loop)
            bound = udp_socket.getsockname()[1]
            try:
                serve = self._serve_tcp if self._guard is None else \
                    self._guard.callback(self._serve_tcp, self.host_name, "dns")
                self._tcp = await asyncio.start_server(serve, self.address, bound, backlog=BACKLOG)
            except OSError:
                udp.close()
                if port:
                    raise
                continue
            self._udp, self.port = udp, bound
            return
        raise OSError("could not find a free port for the lab DNS (UDP and TCP)")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_clients):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 1035 §4.2.2 / RFC 7766: each message is preceded by a two-byte length.
        self._tcp_clients.add(writer)
        peer = writer.get_extra_info("peername")
        tap = None
        if self.wiretap is not None:  # before the first await: no byte has been read yet
            tap = WireTap("", self.host_name, service="dns")
            self.wiretap(tap)
            tap.attach(writer.transport)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), timeout=self.tcp_timeout)
                    (length,) = struct.unpack("!H", header)
                    wire = await asyncio.wait_for(reader.readexactly(length), timeout=self.tcp_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                assert self._published is not None
                await self._published.wait()  # a question before the zones are published waits for them
                transfer = self.transfer(wire, peer)
                for reply in transfer if transfer is not None else [self.answer(wire, peer, "tcp", tap)]:
                    if reply is None:
                        return
                    writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        finally:
            self._tcp_clients.discard(writer)
            writer.close()

    # --- zone transfers (AXFR, RFC 5936), over TCP only ---
    def transfer(self, wire: bytes, peer: tuple[str, int]) -> list[bytes] | None:
        """The messages of a zone transfer if `wire` asks for one (None: an ordinary query, for `answer`).

        RFC 5936 §2.2: every record of the zone, the SOA first and again last, in as many messages as it
        takes, each with the query's id; the question only in the first. A name that is not the apex of
        one of the lab's zones gets NOTAUTH (§2.2.1), and so does a zone the server does not have.
        """
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # garbage: `answer` says FORMERR and traces it
        if query.flags & dns.flags.QR or query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            return None
        question = query.question[0]
        if question.rdtype != dns.rdatatype.AXFR:
            return None
        conn = self._trace.new_conn_id("dns")
        fields = dict(conn=conn, client=f"{peer[0]}:{peer[1]}", server=f"{self.address}:{self.port}",
                      peer=self._peer_name(peer[0]), port_name="dns")
        self._trace.record("dns", "query", self.host_name,
                           lazy(N_("{question} over {transport}"), question=f"{question.name} AXFR?", transport="tcp"),
                           direction="C",
                           **fields)
        zone = (self.zones or {}).get(question.name)
        if zone is None or question.rdclass != dns.rdataclass.IN:
            refusal = dns.message.make_response(query)
            refusal.flags &= ~dns.flags.RA
            refusal.set_rcode(dns.rcode.NOTAUTH)
            self._trace.record("dns", "answer", self.host_name,
                               lazy(N_("NOTAUTH: {name} is not the apex of a zone served here"), name=question.name),
                               direction="S",
                               **fields)
            return [refusal.to_wire()]
        messages, records = transfer_messages(query, zone)
        self._trace.record("dns", "answer", self.host_name,
                           lazy(N_("NOERROR: zone transfer of {zone}: {records} records (SOA first and last) in "
                                   "{count} messages") if len(messages) > 1 else
                                N_("NOERROR: zone transfer of {zone}: {records} records (SOA first and last) in "
                                   "{count} message"), zone=zone.origin, records=records, count=len(messages)),
                           direction="S", **fields)
        return messages

    def refuse_oversized(self, wire: bytes, peer: tuple[str, int]) -> bytes | None:
        """FORMERR for a UDP query far larger than any question (RFC 1035 section 4.2.1 sizes a plain UDP
        message at 512 octets; EDNS raises what a client may *receive*, RFC 6891 section 6.2.3), read from
        its header alone. Traced once per client and interval, with how many more came: a flood of such
        queries must neither cost the server nor fill the trace."""
        allowed, held = self._oversized.allow(peer[0])
        if allowed:
            said = lazy(N_("oversized query over udp ({size} octets, more than {limit}): answered FORMERR without "
                           "reading it ({held} more from {address} since the last note)"), size=len(wire),
                        limit=MAX_UDP_QUERY, held=held, address=peer[0]) if held else \
                lazy(N_("oversized query over udp ({size} octets, more than {limit}): answered FORMERR without "
                        "reading it"), size=len(wire), limit=MAX_UDP_QUERY)
            self._trace.record("dns", "error", self.host_name, said,
                               payload=DnsError(f"oversized: {len(wire)} octets"), client=f"{peer[0]}:{peer[1]}",
                               server=f"{self.address}:{self.port}", peer=self._peer_name(peer[0]), port_name="dns")
        if len(wire) < 12 or wire[2] & 0x80:  # no header, or a response: nothing to answer
            return None
        flags = 0x8000 | (wire[2] & 0x79) << 8 | dns.rcode.FORMERR  # QR, the query's opcode and RD echoed
        return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)

    # --- the answering logic ---
    def tap_datagram(self, data: bytes, addr: tuple[str, int]) -> WireTap | None:
        """Start the wire record of one question over UDP (its answer is added when sent)."""
        if self.wiretap is None:
            return None
        tap = WireTap("", self.host_name, transport="udp", service="dns", client=(addr[0], addr[1]),
                      server=(self.address, self.port))
        self.wiretap(tap)
        tap.opened = tap.clock()
        tap.record("C", data)
        return tap

    def answer(self, wire: bytes, peer: tuple[str, int], transport: str, tap: WireTap | None = None) -> bytes | None:
        """Return the wire reply to one query (None to stay silent on garbage); `tap` learns its trace id."""
        conn = self._trace.new_conn_id("dns")
        client = f"{peer[0]}:{peer[1]}"
        qid = int.from_bytes(wire[:2], "big") if len(wire) >= 2 else 0
        # A lab component that asked announced the question by its id and endpoint: the question belongs
        # to that work (a relay attempt, an MX's checks of a message), exactly, whatever else is asked.
        asker = self._trace.claim(("dns", client, qid))
        corr = self._trace.new_correlation("dns", asker)
        if tap is not None:
            tap.name(conn)
        fields = dict(
            conn=conn, client=client, server=f"{self.address}:{self.port}",
            peer=self._peer_name(peer[0]), port_name="dns", corr=corr,
        )
        key = (transport, question_key(wire))
        cached = self._replies.get(key) if key[1] is not None else None
        if cached is not None:
            self._replies.move_to_end(key)
            qtext, question, summary, answer, reply = cached
            self._trace.record("dns", "query", self.host_name,
                               lazy(N_("{question} over {transport}"), question=qtext, transport=transport),
                               direction="C", payload=DnsQuery(question[0], question[1], qid, transport, asker),
                               **fields)
            self._trace.record("dns", "answer", self.host_name, summary, direction="S", payload=answer, **fields)
            return wire[:2] + reply[2:]
        try:
            query = dns.message.from_wire(wire)
        except Exception as exc:  # malformed packet: FORMERR if we can at least echo the id
            self._trace.record("dns", "error", self.host_name,
                               lazy(N_("malformed query over {transport}: {error}"), transport=transport, error=exc),
                               payload=DnsError(f"malformed: {exc}"), **fields)
            if len(wire) < 12:
                return None
            flags = dns.flags.QR | (dns.rcode.FORMERR & 0xF)
            return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)
        if query.flags & dns.flags.QR:  # a response, not a query: answering it could start a loop
            self._trace.record("dns", "error", self.host_name,
                               lazy(N_("ignored a response sent as a query over {transport}"), transport=transport),
                               payload=DnsError("a response sent as a query"), **fields)
            return None
        q = query.question[0] if query.question else None
        question = (q.name.to_text(), dns.rdatatype.to_text(q.rdtype)) if q is not None else ("", "")
        qtext = f"{question[0]} {question[1]}?" if q is not None else lazy(N_("(no question)"))
        self._trace.record("dns", "query", self.host_name,
                           lazy(N_("{question} over {transport}"), question=qtext, transport=transport), direction="C",
                           payload=DnsQuery(question[0], question[1], qid, transport, asker), **fields)
        response = respond(self.zones or {}, query)
        summary = answer_summary(response)
        answer = answer_of(response)
        self._trace.record("dns", "answer", self.host_name, summary, direction="S", payload=answer, **fields)
        max_size = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 512)
        try:
            reply = response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | dns.flags.AA
            reply = truncated.to_wire()
        if key[1] is not None:
            self._remember(key, (qtext, question, summary, answer, reply))
        return reply

    def _remember(self, key: tuple[str, Any], entry: tuple[str, tuple[str, str], str, DnsAnswer, bytes]) -> None:
        self._replies[key] = entry
        self._reply_bytes += len(entry[-1])
        while len(self._replies) > CACHE_ENTRIES or self._reply_bytes > CACHE_BYTES:
            _key, old = self._replies.popitem(last=False)
            self._reply_bytes -= len(old[-1])

    @property
    def cache_entries(self) -> int:
        """How many replies are kept for repeated questions (at most CACHE_ENTRIES)."""
        return len(self._replies)

