"""One delivery attempt of a queue entry: route each domain to its MX hosts and hand the message over.

The `Relay`'s attempts, as a mixin of it (`mail/relay.py`). MX choice follows RFC 5321 §5.1: lowest
preference first, equal preferences in random order, next MX on connection failure or a 4xx; no MX means
the domain's own A record (implicit MX); a Null MX (RFC 7505) or NXDOMAIN bounces at once. Each MX's TLS
policy (MTA-STS, DANE) is asked first; the blocking SMTP client (`mail/mx_client.py`) runs on the relay's
SMTP pool; its replies become each recipient's state through `mail/outcomes.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ipaddress
import random
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import dns.asyncresolver

from ..errors import DnsLookupError
from ..i18n import N_, lazy
from ..net.dns_lookup import MXRecord, lookup_mx_async, resolve_a
from .mx_client import PROTOCOL_ERROR_NOTE, dsn_parameters, is_protocol_error, smtp_deliver
from .outcomes import Outcomes, status_of
from .queue import FINAL, Outcome, QueueEntry, RecipientStatus, TlsPolicy, TlsRequirement

__all__ = ["Delivery"]


class Delivery(Outcomes):
    """The relay's delivery attempts (a mixin of `Relay`, which sets these attributes)."""

    _resolver: Callable[[], dns.asyncresolver.Resolver]
    _host_address: Callable[[str], str]
    _smtp_port: Callable[[str, str], int | None]
    _tls: ssl.SSLContext
    _links: dict[str, str]
    _smtp_pool: concurrent.futures.Executor | None
    _tls_policy: TlsPolicy | None
    _route: Callable[[str, int], tuple[str, int]] | None
    _idle: dict[tuple[str, str, int], list[smtplib.SMTP]]
    _busy: int

    async def _deliver(self, entry: QueueEntry) -> None:
        entry.attempts += 1
        # A spool copy may be megabytes: read on a worker thread, the loop serves everyone else meanwhile.
        content = await asyncio.get_running_loop().run_in_executor(None, self.spool.read, entry.queue_id)
        pending = [r.address for r in entry.recipients if r.state not in FINAL]
        with self._lock:
            entry.recipients = [replace(r, attempts=r.attempts + 1) if r.address in pending else r
                                for r in entry.recipients]
        by_domain: dict[str, list[str]] = {}
        for address in pending:
            by_domain.setdefault(address.rpartition("@")[2].lower(), []).append(address)
        bounced: list[RecipientStatus] = []
        delivered: list[str] = []  # accepted by a next hop that offers DSN: the lab MX, the final one
        relayed: list[str] = []  # accepted by a next hop without DSN: nothing more will be heard
        for domain, addresses in by_domain.items():
            self._set(entry, addresses, state="mx-lookup")
            try:
                targets = await self._targets(entry, domain)
            except DnsLookupError as exc:
                text = str(exc)
                # The lab DNS is authoritative for the whole lab world: a name it does not know
                # (NXDOMAIN) or refuses (REFUSED: outside its zones, e.g. gmail.com) will not appear later.
                if exc.rcode in ("NXDOMAIN", "REFUSED"):
                    bounced += self._bounce(entry, addresses, f"550 5.1.2 {domain}: {text}", "5.1.2", "")
                else:
                    bounced += self._defer(entry, addresses, f"451 4.4.3 {text}", "")
                continue
            if isinstance(targets, str):  # a permanent routing failure, e.g. Null MX
                bounced += self._bounce(entry, addresses, targets, "5.1.10", "")
                continue
            remaining = list(addresses)
            last_error = ""
            for exchange, address in targets:
                if not remaining:
                    break
                self._set(entry, remaining, state="connecting", via=exchange)
                outcome = await self._try_mx(entry, exchange, address, remaining, content)
                if not outcome.connected:
                    last_error = outcome.error
                    continue
                still: list[str] = []
                for rcpt in remaining:
                    code, text = outcome.replies.get(rcpt, (451, "4.3.0 no reply for this recipient"))
                    reply = f"{code} {text}"
                    if 200 <= code < 300:
                        self._set(entry, [rcpt], state="delivered", last_reply=reply, via=exchange)
                        self._event(entry, lazy(N_("delivered to {rcpt} by {exchange}: {reply}"), rcpt=rcpt, exchange=exchange,
                                                 reply=reply), "delivered",
                                    recipients=(rcpt,), mx=exchange, reply=reply)
                        if outcome.dsn:
                            delivered.append(rcpt)
                        else:
                            relayed.append(rcpt)
                    elif is_protocol_error(code, text):
                        # Not a verdict on the recipient or the message: the conversation went wrong
                        # (RFC 5321 section 4.2.4/4.3.2 sequence and syntax replies). Nothing to bounce.
                        still.append(rcpt)
                        last_error = f"{reply} ({PROTOCOL_ERROR_NOTE})"
                        self._set(entry, [rcpt], last_reply=last_error, via=exchange)
                    elif 500 <= code < 600:
                        bounced += self._bounce(entry, [rcpt], reply, status_of(text, "5.0.0"), exchange)
                    else:
                        still.append(rcpt)
                        last_error = reply
                        self._set(entry, [rcpt], last_reply=reply, via=exchange)
                remaining = still
            if remaining:
                bounced += self._defer(entry, remaining, last_error or "451 4.4.1 no MX host answered", "")
        if bounced:
            self._want_dsn(entry, bounced, "failed")
        # RFC 3461 section 6.2: a success notification only where NOTIFY asked for it. The lab's MX hosts
        # offer DSN and deliver into the mailbox themselves: their 250 is the final delivery ("delivered",
        # RFC 3464 section 2.3.3), which the relay reports for them. A next hop without DSN ends the
        # chain of notifications: "relayed" (RFC 3461 section 4.1).
        for action, addresses in (("delivered", delivered), ("relayed", relayed)):
            asked = [r for r in entry.recipients if r.address in addresses and "SUCCESS" in r.notify.split(",")]
            if asked:
                self._want_dsn(entry, asked, action)

    async def _targets(self, entry: QueueEntry, domain: str) -> list[tuple[str, str]] | str:
        """Return (exchange, address) pairs in the order to try, or a reason to bounce now."""
        source = self._host_address(entry.host)
        resolver = self._resolver()
        records = await lookup_mx_async(domain, resolver, source=source)
        if not records:  # RFC 5321 §5.1: no MX, use the domain's address (implicit MX)
            addresses = await resolve_a(domain, resolver, source=source)
            records = [MXRecord(0, domain, tuple(addresses))] if addresses else []
        if any(r.is_null for r in records):
            self._event(entry, lazy(N_("MX lookup {domain}: Null MX (RFC 7505): the domain accepts no mail"), domain=domain),
                        "mx-lookup",
                        exchanges=((".", 0),))
            return f"556 5.1.10 {domain} publishes a Null MX (RFC 7505): it accepts no mail"
        if not records:
            self._event(entry, lazy(N_("MX lookup {domain}: no MX and no address record"), domain=domain), "mx-lookup")
            return f"550 5.1.2 {domain} has no MX and no address: mail cannot be routed"
        ordered: list[MXRecord] = []
        for pref in sorted({r.preference for r in records}):
            same = [r for r in records if r.preference == pref]
            random.shuffle(same)  # RFC 5321 §5.1: spread load over equal preferences
            ordered += same
        self._event(entry, lazy(N_("MX lookup {domain}: {exchanges}"), domain=domain,
                                exchanges=", ".join(f"{r.exchange} ({r.preference})" for r in ordered)),
                    "mx-lookup", exchanges=tuple((r.exchange, r.preference) for r in ordered))
        return [(r.exchange, a) for r in ordered for a in (r.addresses or ("",))]

    async def _try_mx(self, entry: QueueEntry, exchange: str, address: str, rcpts: list[str],
                      content: bytes) -> Outcome:
        port = self._smtp_port(exchange, address) if address and _is_loopback(address) else None
        if port is None:
            # Only lab hosts (all on loopback) are ever connected to: mail never leaves the machine.
            error = f"{exchange} has no address" if not address else f"nothing listens for SMTP on {address}"
            # RFC 3463: X.4.4 "unable to route" (no address for the MX); X.4.1 "no answer from host".
            reply = f"451 4.4.4 {error}" if not address else f"451 4.4.1 {error}"
            self._event(entry, lazy(N_("cannot connect to {exchange}: {error}"), exchange=exchange, error=error), "connect-failed",
                        mx=exchange,
                        address=address, reply=reply)
            return Outcome({}, False, reply)
        source = self._host_address(entry.host)
        require = await self._requirement(entry, exchange, source, rcpts)
        if require is not None and require.refused:
            self._event(entry, lazy(N_("not connecting to {exchange}: {reason}"), exchange=exchange, reason=require.refused),
                        "connect-failed", mx=exchange,
                        address=address, port=port, reply=require.refused)
            return Outcome({}, False, require.refused)
        key = (entry.host, address, port)
        # A connection kept open was not checked against this attempt's policy: a policy means a new one.
        client = self._idle[key].pop() if self._idle.get(key) and require is None else None
        said = lazy(N_("reusing the open connection to {exchange} [{address}]:{port} from {source}") if client is not None
                    else N_("connecting to {exchange} [{address}]:{port} from {source}"), exchange=exchange,
                    address=address, port=port, source=source)
        self._event(entry, said, "connecting", mx=exchange,
                    address=address, port=port, source=source, reused=client is not None)
        keep = self._busy > 1  # more messages in flight: keep the connection open for the next one
        loop = asyncio.get_running_loop()
        queue_id = entry.queue_id

        def link(endpoint: str) -> None:  # called on the SMTP thread just before MAIL
            self._links[endpoint] = queue_id

        # The blocking client runs on a thread in a copy of this attempt's context: it announces its
        # connection (and each MAIL) for this attempt, and the MX claims them (smtplab.trace.ring).
        path = self._route(address, port) if self._route is not None else (address, port)
        outcome, kept = await loop.run_in_executor(
            self._smtp_pool, contextvars.copy_context().run,
            partial(smtp_deliver, link=link, dsn=dsn_parameters(entry, rcpts), require=require), exchange,
            path[0], path[1], source, entry.host, self._tls, entry.sender, rcpts, content, client, keep,
        )
        self._links.pop(outcome.client, None)
        if kept is not None:
            self._idle.setdefault(key, []).append(kept)
        if not outcome.connected:
            self._event(entry, f"{exchange} [{address}]:{port}: {outcome.error}", "connect-failed", mx=exchange,
                        address=address, port=port, reply=outcome.error)
        return outcome

    async def _requirement(self, entry: QueueEntry, exchange: str, source: str,
                           rcpts: list[str]) -> TlsRequirement | None:
        """The TLS policy for this MX (MTA-STS, DANE), looked up for real, noted in the trace."""
        if self._tls_policy is None:
            return None
        domain = rcpts[0].rpartition("@")[2].lower()
        require = await self._tls_policy(
            domain, exchange, source, lambda text: self._event(entry, text, "tls-policy", mx=exchange))
        if require is not None:
            self._event(entry, require.summary, "tls-policy", mx=exchange)
        return require


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
