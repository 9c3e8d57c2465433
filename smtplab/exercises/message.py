"""Checks for the lesson "the message itself" (RFC 5322, MIME): build a multipart message, write an
encoded-word by hand, find what the MSA added.

Each check reads real evidence: Bob's delivered copy (bytes as stored), the DATA the submission server
read from the learner's client and the DATA it passed on to the MX (from the trace). Feedback quotes what
was found and where to look, never a finished message or the list of fields.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import default
from typing import Any

from ..i18n import N_, _, ngettext
from ..trace.events import SmtpData
from . import Feedback, failed, passed, unanswered
from ._answers import is_blank

__all__ = ["check_structure", "check_encoded_word", "check_msa_added", "WORD_SUBJECT", "BOB", "MSA"]

STRUCTURE = N_("Exercise 1 · text, HTML and an attachment")
WORD = N_("Exercise 2 · an encoded-word by hand")
ADDED = N_("Exercise 3 · what the MSA added")

BOB = "bob@example.net"
MSA = "smtp.example.org"
WORD_SUBJECT = "Café für José"
# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?\s()<>@,;:\"/\[\].=]+)\?([QqBb])\?([^?\s]*)\?=")
_LOOSE_WORD = re.compile(r"=\?[^?\s]+\?[QqBb]\?[^?]*\?=")  # the same with spaces allowed, to say what is wrong


def _parts(message: Message) -> list[Message]:
    """The direct sub-parts of a multipart (none for a leaf)."""
    payload = message.get_payload() if message.is_multipart() else []
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _tree(part: Message, depth: int = 0) -> list[str]:
    """The MIME tree as indented lines: 'multipart/mixed', '  text/plain (quoted-printable)', ..."""
    label = part.get_content_type()
    if not part.is_multipart():
        label += f" ({part.get('Content-Transfer-Encoding', '7bit').lower()})"
        if part.get_filename():
            label += ", " + _("file {name!r}").format(name=part.get_filename())
    lines = ["  " * depth + label]
    for child in _parts(part):
        lines += _tree(child, depth + 1)
    return lines


def _subject_of(message: Message) -> str:
    raw = message.get("Subject", "")
    try:
        return str(make_header(decode_header(str(raw))))
    except (HeaderParseError, UnicodeDecodeError, LookupError):
        return str(raw)


def _delivered(lab: Any, subject: str) -> Message | None:
    lab.wait_for_delivery()
    for message in reversed(lab.messages(BOB)):
        if _subject_of(message) == subject:
            return message
    return None


# --- exercise 1 ------------------------------------------------------------------------------------


def check_structure(msg: Any, lab: Any) -> Feedback:
    """Find the learner's message in Bob's mailbox by its Subject and check its MIME tree and encodings."""
    if is_blank(msg):
        return unanswered(_("Build msg with EmailMessage, send it to Bob through smtp.example.org, then pass msg "
                            "here."), _(STRUCTURE))
    if not isinstance(msg, Message):
        return failed(_("pass the EmailMessage you built and sent, not a {kind}.").format(kind=type(msg).__name__),
                      _(STRUCTURE))
    subject = _subject_of(msg)
    if not subject:
        return failed(_("your message has no Subject: give it one, so the check can find it in Bob's mailbox."),
                      _(STRUCTURE))
    stored = _delivered(lab, subject)
    if stored is None:
        return failed(_("Bob has no message with the subject {subject!r}. Did the send cell run without an error? "
                        "lab.trace.connections('smtp') lists the connections; the last ones are yours.").format(
                            subject=subject), _(STRUCTURE))
    raw = stored.as_bytes() if hasattr(stored, "as_bytes") else bytes(stored)
    message = message_from_bytes(raw, policy=default)
    tree = "\n".join(_tree(message))
    seen = " " + _("Bob's copy has this structure:") + "\n" + tree
    if message.get_content_type() != "multipart/mixed":
        return failed(_("the top of your message is {type}. A message that carries a file beside its text is a mix "
                        "of independent parts (RFC 2046 §5.1.3).").format(type=message.get_content_type()) + seen,
                      _(STRUCTURE))
    parts = _parts(message)
    alternatives = [p for p in parts if p.get_content_type() == "multipart/alternative"]
    attachments = [p for p in message.walk() if not p.is_multipart() and p.get_content_disposition() == "attachment"]
    if not alternatives:
        return failed(_("there is no multipart/alternative inside: the plain text and the HTML are two versions of "
                        "the same text and belong together in one alternative part (RFC 2046 §5.1.4).") + seen,
                      _(STRUCTURE))
    versions = [p.get_content_type() for p in _parts(alternatives[0])]
    if versions != ["text/plain", "text/html"]:
        return failed(_("the alternative part holds {types}. RFC 2046 §5.1.4 orders the versions from the plainest "
                        "to the richest; a reader shows the last one it can display.").format(
                            types=", ".join(versions)) + seen, _(STRUCTURE))
    if not attachments or not all(a.get_filename() for a in attachments):
        return failed(_("there is no part marked as an attachment with a file name (Content-Disposition: "
                        "attachment; filename=..., RFC 2183).") + seen, _(STRUCTURE))
    if any(a in alternatives[0].walk() for a in attachments):
        return failed(_("your attachment sits inside the alternative part: a reader would take it for one more "
                        "version of the text, and show only one of them.") + seen, _(STRUCTURE))
    texts = _parts(alternatives[0])
    encodings = {p.get_content_type(): p.get("Content-Transfer-Encoding", "7bit").lower() for p in texts}
    wrong = {t: e for t, e in encodings.items() if e != "quoted-printable"}
    if wrong:
        kind, cte = next(iter(wrong.items()))
        return failed(_("your {kind} part crossed the wire as Content-Transfer-Encoding: {cte}. The exercise asks "
                        "for quoted-printable: readable where the text is ASCII, =XX for every other byte "
                        "(RFC 2045 §6.7). Which argument of set_content and add_alternative picks it?").format(
                            kind=kind, cte=cte) + seen, _(STRUCTURE))
    return passed(ngettext("Bob's copy is a multipart/mixed with the two versions of your text in a "
                           "multipart/alternative and {count} attachment:",
                           "Bob's copy is a multipart/mixed with the two versions of your text in a "
                           "multipart/alternative and {count} attachments:", len(attachments)).format(
                               count=len(attachments)) + "\n" + tree, _(STRUCTURE))


# --- exercise 2 ------------------------------------------------------------------------------------


def check_encoded_word(answer: Any) -> Feedback:
    """An RFC 2047 header value, ASCII only, that a mail reader decodes to WORD_SUBJECT."""
    if is_blank(answer):
        return unanswered(_("Write the Subject header's value for {subject!r} as it must cross the wire, e.g. "
                            "subject_on_the_wire = '=?...?=' .").format(subject=WORD_SUBJECT), _(WORD))
    if not isinstance(answer, str):
        return failed(_("write the header value as a string, not a {kind}.").format(kind=type(answer).__name__),
                      _(WORD))
    if not answer.isascii():
        odd = next(c for c in answer if not c.isascii())
        return failed(_("{character!r} is not ASCII: a header line without SMTPUTF8 carries only US-ASCII "
                        "(RFC 5322 §2.2), which is why encoded-words exist.").format(character=odd), _(WORD))
    spaced = next((m.group(0) for m in _LOOSE_WORD.finditer(answer) if re.search(r"\s", m.group(0))), None)
    if spaced is not None:
        return failed(_("{word!r} holds a space: an encoded-word has none (RFC 2047 §2); in Q encoding a space is "
                        "written '_' or =20 (RFC 2047 §4.2).").format(word=spaced), _(WORD))
    if not _ENCODED_WORD.search(answer):
        return failed(_("no encoded-word in your answer: the form is =?charset?encoding?encoded-text?= "
                        "(RFC 2047 §2), with Q or B as the encoding."), _(WORD))
    too_long = next((m.group(0) for m in _ENCODED_WORD.finditer(answer) if len(m.group(0)) > 75), None)
    if too_long is not None:
        return failed(_("the encoded-word {start}... is {length} characters long; RFC 2047 §2 allows 75. Split the "
                        "text into several encoded-words separated by a space.").format(
                            start=too_long[:30], length=len(too_long)), _(WORD))
    try:
        decoded = str(make_header(decode_header(answer)))
    except (HeaderParseError, UnicodeDecodeError, LookupError, ValueError) as exc:
        return failed(_("a mail reader cannot decode your answer ({kind}: {error}). Check the charset name and the "
                        "encoded bytes.").format(kind=type(exc).__name__, error=exc), _(WORD))
    if decoded == WORD_SUBJECT:
        return passed(_("a mail reader shows {decoded!r}. On the wire the header stays 7-bit ASCII; the charset "
                        "inside the word tells the reader how to turn the bytes back into characters. Compare with "
                        "what Python writes: email.header.Header(WORD_SUBJECT, 'utf-8').encode().").format(
                            decoded=decoded), _(WORD))
    return failed(_("a mail reader decodes your answer to {decoded!r}. Compare it with the subject letter by letter: "
                    "which characters differ? email.header.decode_header(answer) shows each word's bytes and "
                    "charset.").format(decoded=decoded), _(WORD))


# --- exercise 3 ------------------------------------------------------------------------------------


def _data_headers(lab: Any, subject: str) -> tuple[list[str], list[str]]:
    """Header names of the learner's message as the MSA read it and as the MSA passed it to the MX."""
    received: list[str] = []
    passed_on: list[str] = []
    for event in lab.trace.events():
        if event.kind != "data" or not isinstance(event.payload, SmtpData):
            continue
        headers = HeaderParser(policy=default).parsestr(event.text.replace("\n", "\r\n"))
        if _subject_of(headers) != subject:
            continue
        names = [name.lower() for name in headers.keys()]
        if event.host == MSA and event.port_name == "submission":
            received = names
        elif event.peer == MSA:
            passed_on = names
    return received, passed_on


def check_msa_added(answer: Any, msg: Any, lab: Any) -> Feedback:
    """The header fields smtp.example.org added to the learner's message of exercise 1 (names, any case)."""
    if is_blank(answer) or (isinstance(answer, (list, tuple, set)) and not answer):
        return unanswered(_("List the names of the header fields smtp.example.org added to your message, e.g. "
                            "added = ['X-Example', ...]."), _(ADDED))
    if isinstance(answer, str) or not all(isinstance(x, str) for x in answer):
        return failed(_("answer with a list of header field names (strings), e.g. ['X-Example', 'X-Other']."),
                      _(ADDED))
    if not isinstance(msg, Message):
        return failed(_("this exercise reads your message of exercise 1: run that one first (msg)."), _(ADDED))
    subject = _subject_of(msg)
    lab.wait_for_delivery()  # the relay's DATA to the MX is part of the evidence
    received, passed_on = _data_headers(lab, subject)
    if not received or not passed_on:
        return failed(_("the trace has no submission and relay of a message with the subject {subject!r} (the lab "
                        "keeps the most recent events): send msg again in exercise 1, then run this check.").format(
                            subject=subject), _(ADDED))
    added = set(passed_on) - set(received)
    named = [x.strip().rstrip(":").lower() for x in answer]
    already = [x for x in answer if x.strip().rstrip(":").lower() in received]
    if already:
        return failed(_("{field!r} was already in the DATA your client sent to smtp.example.org: look at the first "
                        "DATA of your message in the trace.").format(field=already[0]), _(ADDED))
    later = [x for x in answer if x.strip().rstrip(":").lower() not in passed_on]
    if later:
        return failed(_("{field!r} is not in the DATA smtp.example.org passed on to mx1.example.net: if Bob's copy "
                        "has it, a later server added it.").format(field=later[0]), _(ADDED))
    missing = added - set(named)
    if missing:
        return failed(_("you found {found} of the {count} fields that appear in the relayed DATA and not in the "
                        "submitted one: compare the two header blocks line by line.").format(
                            found=len(set(named)), count=len(added)), _(ADDED))
    why = {"date": N_("Date (RFC 6409 §8.2: the MSA may add a missing Date)"),
           "message-id": N_("Message-ID (RFC 6409 §8.3 lets it add a missing one; RFC 5322 §3.6.4 asks for one)"),
           "received": N_("Received (its trace field, RFC 5321 §4.4)"),
           "dkim-signature": N_("DKIM-Signature (its signature for the domain, RFC 6376)")}
    return passed(_("smtp.example.org added {fields}.").format(
        fields="; ".join(_(why[x]) if x in why else x for x in sorted(added))), _(ADDED))
