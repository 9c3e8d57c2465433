"""Exercises of notebook 12 (TLS downgrade and its cures): read a stripped message off the wire, predict what
MTA-STS `enforce` does under attack, and compute a DANE TLSA record from the MX's certificate.

Each check asks the real lab: the clear text that reached the MX (its wire tap), and the certificate the MX
really presents. Feedback to a wrong answer says what it saw and where to look, never the answer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..i18n import N_, _, ngettext
from ..net.client import NamedSMTP
from ..views.journey import message_events
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["new_code_word", "check_code_word", "ENFORCE_CHOICES", "check_enforce_prediction", "mx_certificate",
           "check_tlsa_record"]

WIRE = N_("Exercise 1 · read the mail off the wire")
PREDICT = N_("Exercise 2 · predict MTA-STS enforce under attack")
TLSA = N_("Exercise 3 · the TLSA record of mx1")
# The label of the body line that carries the code word, in the language the notebook sent it in.
CODE_WORD_LABEL = N_("code word")

_WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbour", "indigo", "juniper",
          "kestrel", "lagoon", "meadow", "nimbus", "orchid", "pebble", "quartz", "raven", "saffron", "tundra")



class _Choices(Mapping[str, str]):
    """The choices of a multiple-choice question, each read in the learner's language when shown."""

    def __init__(self, choices: dict[str, str]) -> None:
        self._choices = choices

    def __getitem__(self, key: str) -> str:
        return _(self._choices[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def __len__(self) -> int:
        return len(self._choices)


ENFORCE_CHOICES: Mapping[str, str] = _Choices({
    "a": N_("the relay notices nothing and sends the message in clear text, as before"),
    "b": N_("the relay keeps the message in its queue and tries again later"),
    "c": N_("the relay bounces the message to Alice at once"),
    "d": N_("the relay delivers it over TLS anyway, because the policy tells it to"),
})


def new_code_word() -> str:
    """A code word for the message the attacker will read (new each run, so only the wire can tell it)."""
    return f"{secrets.choice(_WORDS)}-{secrets.randbelow(9000) + 1000}"


def _clear_text_at_mx(lab: Any, queue_id: str) -> bytes:
    """The clear text that reached the MX hosts for the message `queue_id` (their wire taps)."""
    conns = [e.conn for e in message_events(lab.trace, queue_id)
             if e.protocol == "smtp" and e.kind == "connect" and e.host.startswith("mx")]
    return b"".join(c.data for conn in conns for c in lab.wire(conn).chunks if not c.encrypted)


def check_code_word(lab: Any, queue_id: str, answer: Any) -> Feedback:
    """The learner read the message's code word off the wire between the relay (via the attacker) and the MX."""
    if is_blank(answer):
        return unanswered(_("Type the code word you read in the clear text between DATA and the final dot."),
                          _(WIRE))
    word = str(answer).strip()
    clear = _clear_text_at_mx(lab, queue_id)
    if not clear:
        return failed(_("the MX received nothing in clear text for that message: was the attacker on the path "
                        "when it was sent? Run the cell with lab.mitm(...) and send again."), _(WIRE))
    # The body line the notebook's message carries, labelled in English or in the learner's language.
    labels = {CODE_WORD_LABEL, _(CODE_WORD_LABEL)}
    pattern = b"(?:" + b"|".join(re.escape(label.encode()) for label in labels) + rb"): (\S+)"
    match = re.search(pattern, clear)
    if match is None:
        return failed(_("that message's body did not cross in clear text; send it with the attacker on the path."),
                      _(WIRE))
    if word.encode() == match.group(1):
        return passed(_("read off the wire: anyone on the path could, because the EHLO reply reached the relay "
                        "without STARTTLS ({n} bytes crossed in clear text).").format(n=len(clear)), _(WIRE))
    if word.encode() in clear:
        return failed(_("{word!r} did cross the wire, but it is not the code word: look for the body line "
                        "'{label}: ...' after the DATA command.").format(word=word, label=_(CODE_WORD_LABEL)),
                      _(WIRE))
    return failed(_("{word!r} is not in the bytes that reached the MX. Print lab.wire(conn) for the MX's "
                    "connection and read the lines after the DATA command.").format(word=word), _(WIRE))


def check_enforce_prediction(choice: Any) -> Feedback:
    """A prediction, made before the cell that shows it: what the relay does with enforce under attack.

    The first well-formed choice counts (`first_answer`): were each letter judged afresh, reading the verdict
    on a, b, c and d in turn would replace the prediction.
    """
    if is_blank(choice):
        return unanswered(_("Pick one of {choices} and run the cell again.").format(
            choices=", ".join(sorted(ENFORCE_CHOICES))), _(PREDICT))
    given = str(choice).strip().lower()
    if given not in ENFORCE_CHOICES:
        return failed(_("{choice!r} is not one of the choices {choices}.").format(
            choice=choice, choices=", ".join(sorted(ENFORCE_CHOICES))), _(PREDICT))
    key = first_answer(PREDICT, given)
    note = changed_answer_note(key, given)
    if key == "b":
        return passed(note + _("RFC 8461 section 5: with enforce, a sender that cannot make a validated TLS "
                               "connection to a policy MX does not deliver; a 4xx keeps the message queued, to try "
                               "again once the path is clean. Check it against lab.queue after the next cell."),
                      _(PREDICT))
    reasons = {
        "a": N_("that is what happened WITHOUT a policy. What does 'enforce' promise the receiving domain? "
                "Read RFC 8461 section 5 ('Policy Application')."),
        "c": N_("a bounce is for problems that will not go away. Is an attacker on the path permanent? Look at "
                "the reply code the relay will record (4xx or 5xx?) after the next cell."),
        "d": N_("the relay only sees the EHLO reply the attacker lets through: can a policy make the MX's "
                "STARTTLS offer reappear? Look at what the attacker deletes."),
    }
    return failed(note + _(reasons[key]), _(PREDICT))


def mx_certificate(lab: Any, host: str = "mx1.example.net") -> bytes:
    """The certificate (DER) the MX presents after STARTTLS, fetched the way a relay sees it."""
    target = lab.host(host)
    context = ssl.create_default_context(cafile=lab.ca_file)
    with NamedSMTP(target.address, target.ports["smtp"], server_name=host, local_hostname="learner.lab",
                   timeout=10) as client:
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    assert der is not None
    return bytes(der)


def check_tlsa_record(lab: Any, record: Any, host: str = "mx1.example.net") -> Feedback:
    """The learner computed `3 1 1 <sha-256 of the SubjectPublicKeyInfo>` for the MX's certificate."""
    if is_blank(record):
        return unanswered(_("Build the string '3 1 1 ' followed by the hex SHA-256 digest you computed."), _(TLSA))
    parts = str(record).split()
    if len(parts) != 4 or parts[:3] != ["3", "1", "1"]:
        return failed(ngettext(
            "a TLSA record's data is four fields: usage selector matching-type digest; RFC 7672 section 3.1 "
            "recommends usage 3, selector 1, matching type 1. You gave {n} field starting {start!r}.",
            "a TLSA record's data is four fields: usage selector matching-type digest; RFC 7672 section 3.1 "
            "recommends usage 3, selector 1, matching type 1. You gave {n} fields starting {start!r}.",
            len(parts)).format(n=len(parts), start=" ".join(parts[:3])), _(TLSA))
    digest = parts[3].lower()
    der = mx_certificate(lab, host)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER,
                                                                          PublicFormat.SubjectPublicKeyInfo)
    if digest == hashlib.sha256(spki).hexdigest():
        return passed(_("that is the key {host} presents: a relay that validates this record in a signed zone "
                        "will refuse any other key, and any MX that does not offer STARTTLS.").format(host=host),
                      _(TLSA))
    if digest == hashlib.sha256(der).hexdigest():
        return failed(_("that digest covers the whole certificate (selector 0, 'Cert'). Selector 1 hashes only "
                        "the SubjectPublicKeyInfo, the certificate's public key with its algorithm: find the "
                        "certificate's public key and serialise it as DER in that format (the cell imports the "
                        "two names you need)."), _(TLSA))
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return failed(ngettext("a SHA-256 digest is 64 hex digits; yours has {n} character.",
                               "a SHA-256 digest is 64 hex digits; yours has {n} characters.",
                               len(digest)).format(n=len(digest)), _(TLSA))
    return failed(_("that digest matches nothing {host} presents now. Did you hash the certificate of {host} "
                    "(mx_certificate(lab)) with SHA-256 (matching type 1)?").format(host=host), _(TLSA))
