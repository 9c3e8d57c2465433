"""The lab's SMTP handlers (aiosmtpd hook objects): the submission server and the inbound MX.

`SubmissionHandler` is the MSA (RFC 6409): STARTTLS, then AUTH, then only the user's own address as
sender; it completes missing Date/Message-ID, signs with DKIM and queues for the relay.
`InboundHandler` is an MX: it accepts mail for its provider's users only (unless a teacher made it an
open relay on purpose), asks the blocklist about the client, checks SPF/DKIM/DMARC, scores spam, and
delivers into the users' Maildirs (or Junk). Both refuse bare LF / CR in DATA (SMTP smuggling).
The envelope rules they share are in `mail/envelope_rules.py`; the headers and framing of the message they
pass on in `mail/message_headers.py`.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, LoginPassword, Session

from ..auth import policy
from ..auth.iprev import IprevResult, iprev_async
from ..i18n import N_, lazy
from ..net import replies
from ..net.smtp import CONTROL_CHARACTERS, MAX_RECIPIENTS, LabSMTP, LineTooLong, new_queue_id
from ..trace.events import Note, PolicyVerdict
from .envelope_rules import (
    accept_recipient,
    accept_sender,
    failure_reply,
    peer_ip,
    refusal_before_rules,
    split_address,
    unique_recipients,
)
from .message_headers import frame_for_delivery, header_value, link_transaction, prepare_submission, received_header
from .postmaster import Postmaster

__all__ = ["SubmissionHandler", "InboundHandler", "header_value", "failure_reply"]

_BIG = 256 * 1024  # a message this large is scanned on a worker thread, not on the loop


def _ehlo_responses(server: LabSMTP, responses: list[str]) -> list[str]:
    # RFC 3461 section 4: DSN lengthens MAIL by up to 110 characters (RET, ENVID), RCPT by 500 (NOTIFY, ORCPT).
    server.command_size_limits["MAIL"] = 510 + (26 if server.data_size_limit else 0) + 110
    server.command_size_limits["RCPT"] = 510 + 500
    # aiosmtpd advertises "AUTH" even with every mechanism excluded (an MX offers none).
    kept = [r for r in responses[:-1] if r.strip() != "250-AUTH"]
    out = kept + ["250-ENHANCEDSTATUSCODES", "250-PIPELINING", "250-DSN"]
    return out + [responses[-1]]


class _BaseHandler:
    def __init__(self, postmaster: Postmaster, host_name: str, domains: tuple[str, ...]) -> None:
        self.postmaster = postmaster
        self.host_name = host_name
        self.domains = domains

    async def handle_EHLO(self, server: LabSMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # It would end up in the Received header; a domain in EHLO is ASCII (A-labels, RFC 6531 section 3.7.1).
        if CONTROL_CHARACTERS.search(hostname) or not hostname.isascii():
            session.extended_smtp = False
            return [replies.BAD_HELLO.format(command="EHLO")]
        session.host_name = hostname
        fault = await server.fault_point("EHLO")
        if fault:
            return [fault]
        return _ehlo_responses(server, responses)

    async def handle_HELO(self, server: LabSMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        if CONTROL_CHARACTERS.search(hostname) or not hostname.isascii():
            return replies.BAD_HELLO.format(command="HELO")
        session.host_name = hostname
        fault = await server.fault_point("EHLO")
        return fault or f"250 {server.hostname}"

    async def handle_exception(self, error: Exception) -> str:
        # Answer with a proper reply instead of a traceback on stderr; LabSMTP writes the error to the trace.
        if type(error).__name__ == "TLSSetupException":
            return "454 4.7.0 TLS handshake failed"
        if isinstance(error, LineTooLong):  # over the line limit, in a line aiosmtpd reads itself
            return replies.LINE_TOO_LONG
        return failure_reply(error)

    async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        # RFC 5321 §4.1.1.4: the reply to the final dot, whatever it is, ends the transaction. aiosmtpd clears
        # the envelope only when this hook returns, so it never raises: a failure is a reply like any other.
        try:
            return await self.end_of_data(server, session, envelope)
        except Exception as error:
            reply = failure_reply(error)
            server.note_error(error, reply, lazy(N_("at the end of DATA; the transaction is reset")))
            return reply

    async def end_of_data(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        """Decide about the received message and return the reply to the final dot."""
        raise NotImplementedError

    async def handle_NOOP(self, server: LabSMTP, session: Session, envelope: Envelope, arg: str) -> str:
        return replies.OK

    async def handle_VRFY(self, server: LabSMTP, session: Session, envelope: Envelope, address: str) -> str:
        # RFC 5321 section 3.5.3 / 7.3: 252 answers without confirming or denying (no address harvesting);
        # aiosmtpd's text promised to accept the message, which an MX then refuses at RCPT for unknown users.
        return replies.CANNOT_VRFY

    async def _iprev(self, server: LabSMTP, session: Session, *, part_of_the_story: bool = True) -> IprevResult:
        """Who the client is as the lab DNS vouches for it (iprev, RFC 8601 section 3), once per connection:
        `.name` is its address's PTR name if that name's A record leads back to the address, "" otherwise.

        With `part_of_the_story`, the questions and the verdict belong to the transaction (an MX judging a
        peer MTA); a submission host's lookup of the learner's own mail client stays among the DNS events."""
        checked: IprevResult | None = session.__dict__.get("smtplab_iprev")
        if checked is None:
            source = self.postmaster.hosts[self.host_name].address  # asked from the server's own address
            peer: Any = session.peer  # (address, port)
            lookup = iprev_async(peer[0], self.postmaster.dns_resolver(), source=source, prefer=session.host_name or "")
            # Outside the story: in a context of its own, so its questions are announced for no transaction.
            checked = await (lookup if part_of_the_story else
                             asyncio.get_running_loop().create_task(lookup, context=contextvars.Context()))
            session.__dict__["smtplab_iprev"] = checked  # once per connection, like the blocklist answer
            if part_of_the_story:
                server.note(checked.describe(), Note())
        return checked

    async def _refusal_at_end_of_data(self, server: LabSMTP, envelope: Envelope) -> str | None:
        """An injected fault, or content no MTA should pass on: the reply instead of accepting, or None."""
        fault = await server.fault_point("end-of-data")
        if fault:
            return fault
        if len(envelope.original_content or b"") > _BIG:  # scanning megabytes: not on the loop
            return await asyncio.to_thread(self._bad_content, envelope)
        return self._bad_content(envelope)

    def _bad_content(self, envelope: Envelope) -> str | None:
        """Return the refusal for content no MTA should pass on (bare CR/LF, NUL), or None."""
        content = envelope.original_content or b""
        rest = content.replace(b"\r\n", b"")  # what is left of a line end is a bare CR or LF
        if b"\r" in rest or b"\n" in rest:
            return replies.BARE_LF
        if b"\0" in content:
            return replies.NUL_IN_DATA
        return None


class SubmissionHandler(_BaseHandler):
    """MSA: authenticated users send as themselves; everything is queued for the relay."""

    async def handle_AUTH(self, server: LabSMTP, session: Session, envelope: Envelope, args: list[str]) -> Any:
        # Guessing passwords is made slow: each AUTH after failed ones (on this connection or from this
        # address) waits longer (guard.LoginThrottle); then aiosmtpd's AUTH answers 235 or 535 5.7.8 (RFC 4954).
        await self.postmaster.login_throttle.before_attempt(server.conn_id, session.peer, server.note)
        return MISSING

    def authenticator(self, server: LabSMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace").strip().lower()
        password = auth_data.password.decode("utf-8", "replace")
        domain = login.rpartition("@")[2]
        success = domain in self.domains and self.postmaster.check_password(login, password)
        self.postmaster.login_throttle.record(server.conn_id, session.peer, success)
        if success:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        user = str(session.auth_data or "")
        refusal = await refusal_before_rules(server, envelope, "MAIL", address)
        if refusal:
            return refusal
        if address in ("<>", ""):
            return replies.NULL_SENDER_SUBMISSION
        if address.lower() != user:
            return replies.SENDER_NOT_OWNED.format(user=user)
        return accept_sender(server, envelope, address, mail_options)

    async def handle_RCPT(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        refusal = await refusal_before_rules(server, envelope, "RCPT", address)
        if refusal:
            return refusal
        local, domain = split_address(address)
        if not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
            return replies.BAD_DESTINATION
        if domain.startswith("["):
            # RFC 5321 section 4.1.3: mail to an address literal goes straight to that IP address,
            # and the lab never connects off the machine; only names in the lab DNS are routed.
            return replies.ADDRESS_LITERAL
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        domain = domain.lower()
        if domain in self.domains and not self.postmaster.user_exists(address):
            return replies.USER_UNKNOWN.format(address=address)
        return accept_recipient(server, envelope, address, rcpt_options)

    async def end_of_data(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        refusal = await self._refusal_at_end_of_data(server, envelope)
        if refusal:
            return refusal
        queue_id = new_queue_id()
        recipients = unique_recipients(envelope.rcpt_tos)
        header = received_header(server, session, queue_id, recipients, self.postmaster.now(),
                           (await self._iprev(server, session, part_of_the_story=False)).name, envelope.smtp_utf8)
        footer = b""
        if "append_footer" in self.postmaster.host_options(self.host_name):
            footer = f"\r\n\r\n-- \r\nfooter added by {self.host_name}\r\n".encode()
        await self.postmaster.keys_ready()  # right after the lab starts, its DKIM key may still be being made
        # Completing, DKIM-signing (RFC 6376) and framing the message hash and copy all of it: a worker
        # thread does that (signing 9 MB on the loop stalled every session for ~0.5 s).
        content, signed = await asyncio.to_thread(prepare_submission, self.postmaster, self.domains[0], self.host_name,
                                                  envelope.original_content or b"", self.postmaster.now(), header, footer)
        if signed:
            server.note(lazy(N_("signed with DKIM for {domain} (selector lab)"), domain=self.domains[0]), Note())
        if footer:
            server.note(lazy(N_("teaching toggle: footer appended after DKIM signing (the signature will not verify)")),
                        Note(warning=True))
        # Written to the spool before the 250 (RFC 5321 section 6.1), from a disk thread.
        await self.postmaster.enqueue_async(self.host_name, envelope.mail_from or "", recipients, content, queue_id,
                                     getattr(envelope, "smtplab_dsn", None))
        link_transaction(server, session, queue_id, content)
        return replies.OK_QUEUED.format(queue_id=queue_id)


class InboundHandler(_BaseHandler):
    """MX: accept mail for this provider's users only, deliver into their Maildirs."""

    async def handle_MAIL(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        refusal = await refusal_before_rules(server, envelope, "MAIL", address)
        if refusal:
            return refusal
        # Keep "<>" as is: aiosmtpd treats an empty mail_from as "no MAIL yet" (503 at RCPT).
        return accept_sender(server, envelope, address, mail_options)

    async def handle_RCPT(self, server: LabSMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        refusal = await refusal_before_rules(server, envelope, "RCPT", address)
        if refusal:
            return refusal
        local, domain = split_address(address)
        if not local or not domain:
            return replies.BAD_DESTINATION
        local_domain = domain.lower() in self.domains
        if not local_domain and not self._open_relay():
            return replies.RELAY_DENIED.format(domain=domain)
        if local_domain and not self.postmaster.user_exists(address):
            return replies.USER_UNKNOWN.format(address=address)
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        listing = await self._blocklisted(server, session)
        if listing is not None:
            return listing
        return accept_recipient(server, envelope, address, rcpt_options)

    async def end_of_data(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        refusal = await self._refusal_at_end_of_data(server, envelope)
        if refusal:
            return refusal
        queue_id = new_queue_id()
        recipients = unique_recipients(envelope.rcpt_tos)
        client = await self._iprev(server, session)
        received = received_header(server, session, queue_id, recipients, self.postmaster.now(), client.name, envelope.smtp_utf8)
        original = envelope.original_content or b""
        sender = "" if envelope.mail_from in ("<>", None) else envelope.mail_from
        local = [r for r in recipients if split_address(r)[1].lower() in self.domains]
        outside = [r for r in recipients if r not in local]
        folder, checks = "INBOX", b""
        if local:
            screening = await policy.screen(self.postmaster, self.host_name, self.domains[0], original,
                                            client_ip=peer_ip(session), mail_from=sender,
                                            helo=session.host_name or "unknown", iprev=client)
            refusal = screening.reply
            outcome = ("deferred" if refusal[:1] == "4" else "refused") if refusal else \
                "junk" if screening.folder == "Junk" else "accepted"
            server.note(lazy(N_("policy: {summary}"), summary=screening.summary()),
                        PolicyVerdict(outcome, screening.summary(), screening.reply or ""))
            if screening.reply:
                link_transaction(server, session, None, original)  # a refused message has a trace too
                return screening.reply
            folder, checks = screening.folder, screening.headers
        return_path = f"Return-Path: <{sender}>\r\n".encode()  # RFC 5321 section 4.4
        parts = (return_path, received, checks, original)
        # Framing a big message copies megabytes (twice): on a worker thread, not on the loop.
        content, stored = await asyncio.to_thread(frame_for_delivery, parts) if len(original) > _BIG else frame_for_delivery(parts)
        if local:  # the 250 goes out only once the message is safely on disk (RFC 5321 section 6.1)
            # The peer tells the lab whether this is its own relay retrying a copy made before a crash.
            held = await self.postmaster.store_local(local, stored, folder, client=session.peer)
            if held:
                server.note(lazy(N_("{recipients}: the copy is in the mailbox already (made before a crash, the 250 "
                                 "never reached the relay): accepted without a second copy (delivery ledger)"),
                                 recipients=", ".join(held)), Note())
        if outside:  # only an open relay gets here: it passes the message on to anyone, for anyone
            server.note(lazy(N_("open relay: passing the message on for {recipients}"), recipients=", ".join(outside)),
                        Note(warning=True))
            await self.postmaster.enqueue_async(self.host_name, sender, outside, content, queue_id,
                                         getattr(envelope, "smtplab_dsn", None))
        link_transaction(server, session, queue_id, content)
        return replies.OK_DELIVERED.format(queue_id=queue_id)

    def _open_relay(self) -> bool:
        return "open_relay" in self.postmaster.host_options(self.host_name)

    async def _blocklisted(self, server: LabSMTP, session: Session) -> str | None:
        """Ask the blocklists about the client once per connection (RFC 5782), as Postfix does at RCPT."""
        cached: str | None = getattr(session, "smtplab_listing", None)
        if cached is None:
            source = self.postmaster.hosts[self.host_name].address
            listing = await policy.check_client(self.postmaster, self.domains[0], peer_ip(session), source)
            cached = listing.reply() if listing is not None else ""
            session.smtplab_listing = cached  # type: ignore[attr-defined]  # the lab's note on aiosmtpd's session
            if listing is not None:
                server.note(lazy(N_("{address} is listed in {zone}: {reason}"), address=peer_ip(session), zone=listing.zone,
                                 reason=listing.reason),
                            PolicyVerdict("listed", f"{listing.zone}: {listing.reason}", cached))
        return cached or None
