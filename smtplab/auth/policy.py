"""What a receiving MX decides about a message, and what a submission host adds to it.

The MX asks the blocklist about the client (at RCPT, like Postfix's reject_rbl_client), then checks
SPF, DKIM and DMARC, scores the content, and either refuses the message, files it in Junk, or delivers
it, with Authentication-Results and the spam report written on top for the reader to see. The
submission host signs what its users send (DKIM). Every decision is also written to the lab trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.errors
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import dkim
import dns.exception
import spf

from ..i18n import N_, lazy
from ..net import replies
from . import dnsbl, mailauth, spam
from .iprev import IprevResult

__all__ = ["PolicyServices", "Screening", "UnparsableMessage", "check_client", "screen", "sign"]


class PolicyServices(Protocol):
    """What the checks ask of the lab (smtplab.services.Services implements it)."""

    @property
    def hosts(self) -> Mapping[str, Any]: ...  # host name -> host (`.address`)

    def security_of(self, domain: str) -> Mapping[str, Any]: ...  # the provider's scenario security settings
    def dns_resolver(self) -> Any: ...  # an async resolver that asks the lab DNS
    def lab_dns(self) -> mailauth.LabDns: ...  # the synchronous one, for pyspf, dkimpy and authheaders
    def dkim_key(self, domain: str) -> Any: ...  # smtplab.zones.DkimKey, or None when `domain` does not sign


class UnparsableMessage(ValueError):
    """The message's structure defeats a parser the lab needs (e.g. a header line without a colon, which
    DKIM signing cannot canonicalize): a permanent refusal, 554 5.6.0, since the same bytes fail again."""


@dataclass(frozen=True)
class Screening:
    """The MX's decision about one message."""

    reply: str | None  # a refusal to send instead of 250, or None to accept
    folder: str  # "INBOX" or "Junk"
    headers: bytes  # trace fields to prepend (Authentication-Results, X-Spam-*)
    verdict: mailauth.AuthVerdict | None
    report: spam.SpamReport | None
    dns_client: str = ""  # "address:port" the checks' DNS questions came from (to find them in the trace)
    problem: str = ""  # why the checks could not decide (for the trace; never sent to the client)

    def summary(self) -> str:
        """What was decided and why, in the learner's language when shown (a LazyText; its str is English)."""
        if self.problem:
            return lazy(N_("not checked: {problem}"), problem=self.problem)
        outcome = lazy(N_("refused")) if self.reply else (
            lazy(N_("filed in Junk")) if self.folder == "Junk" else lazy(N_("accepted")))
        checks = ""
        if self.verdict is not None:
            v = self.verdict
            checks = f"spf={v.spf} dkim={v.dkim} dmarc={v.dmarc}" + (f" (p={v.dmarc_policy})" if v.dmarc_policy else "")
        if self.report is None:
            return lazy(N_("{outcome}: {checks}"), outcome=outcome, checks=checks) if checks else outcome
        score = f"{self.report.score:g}"
        if checks:
            return lazy(N_("{outcome}: {checks}, spam score {score}"), outcome=outcome, checks=checks, score=score)
        return lazy(N_("{outcome}: spam score {score}"), outcome=outcome, score=score)


async def check_client(services: PolicyServices, domain: str, client_ip: str, source: str | None = None) -> dnsbl.Listing | None:
    """Ask the blocklists this provider uses about the connecting address (from `source`, the MX's)."""
    zones = services.security_of(domain).get("dnsbl") or []
    if not zones:
        return None
    return await dnsbl.check(client_ip, zones, services.dns_resolver(), source=source)


async def screen(services: PolicyServices, host: str, domain: str, content: bytes, *, client_ip: str, mail_from: str,
                 helo: str, iprev: IprevResult | None = None) -> Screening:
    """Decide about one received message for a provider's users (blocking checks run off the loop)."""
    security = services.security_of(domain)

    def check() -> tuple[mailauth.AuthVerdict | None, spam.SpamReport | None, str]:
        verdict, client = None, ""
        if security.get("verify"):
            lab_dns = services.lab_dns()
            with lab_dns.asking_from(services.hosts[host].address) as client:
                verdict = mailauth.evaluate(content, client_ip=client_ip, mail_from=mail_from, helo=helo,
                                            authserv_id=host, lab_dns=lab_dns)
        return verdict, (spam.score(content, verdict) if security.get("spam") else None), client

    verdict: mailauth.AuthVerdict | None = None
    report: spam.SpamReport | None = None
    dns_client = ""
    if security.get("verify") or security.get("spam"):
        # DNS questions and header parsing: off the loop, which serves every other session meanwhile.
        # In a copy of this task's context: the questions belong to the transaction (smtplab.trace.ring).
        try:
            verdict, report, dns_client = await asyncio.get_running_loop().run_in_executor(
                None, contextvars.copy_context().run, check)
        except _DNS_TEMPORARY as error:
            # RFC 6376 §6.1.2 / RFC 7489 §6.6.3: a key or policy that cannot be fetched now is a temporary
            # failure; the sending MTA keeps the message and retries (RFC 5321 §4.2.5).
            return Screening(replies.CHECKS_DNS_FAILED, "INBOX", b"", None, None,
                             problem=f"the lab DNS did not answer ({_describe(error)}): deferred")
        except _UNPARSABLE as error:
            return Screening(replies.UNPARSABLE, "INBOX", b"", None, None,
                             problem=f"the message could not be parsed ({_describe(error)}): refused")
    headers = b""
    if verdict is not None:
        # RFC 8601 section 2.7.3: iprev reported beside SPF, DKIM and DMARC (the name Received shows, checked).
        extra = f";\r\n\t{iprev.resinfo}" if iprev is not None else ""
        headers += f"Authentication-Results: {verdict.header}{extra}\r\n".encode()
    if report is not None:
        headers += f"X-Spam-Score: {report.score:g}\r\nX-Spam-Report: {report.header()}\r\n".encode()
    reply: str | None = None
    folder = "INBOX"
    if verdict is not None and verdict.disposition == "reject":
        reply = (f"550 5.7.1 Rejected by the DMARC policy of {verdict.from_domain} (p=reject): "
                 f"spf={verdict.spf}, dkim={verdict.dkim}, neither aligned with From")
    elif report is not None and security.get("spam") == "filter" and report.verdict == "reject":
        rules = ", ".join(h.name for h in report.hits)
        reply = f"554 5.7.1 Message refused as spam (score {report.score:g}: {rules})"
    elif (verdict is not None and verdict.disposition == "quarantine") or (
            report is not None and security.get("spam") == "filter" and report.verdict == "junk"):
        folder = "Junk"
    return Screening(reply, folder, headers, verdict, report, dns_client)


# What a failed lookup raises through the checks: LabDns turns a timeout into spf.TempError; a closed
# DNS port may surface as a refused UDP datagram (ICMP port unreachable).
_DNS_TEMPORARY = (spf.TempError, dns.exception.Timeout, ConnectionError)
# What the parsers raise on content they cannot follow: the email package recurses once per MIME level
# (2,000 nested multiparts exhaust the interpreter's stack), and malformed structures or charsets.
_UNPARSABLE = (RecursionError, email.errors.MessageError, UnicodeError)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def sign(services: PolicyServices, domain: str, content: bytes) -> bytes:
    """DKIM-sign `content` for `domain` if the provider signs (its key is published in the lab DNS)."""
    key = services.dkim_key(domain)
    if key is None:
        return content
    try:
        return mailauth.dkim_sign(content, domain=domain, selector=key.selector, private_key=key.private_pem)
    except dkim.MessageFormatError as error:  # RFC 5322 §2.2: every header field is a name, a colon, a body
        raise UnparsableMessage(f"DKIM cannot sign it: {error}") from error
