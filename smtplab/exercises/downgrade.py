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
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..net.client import NamedSMTP
from ..views.journey import message_events
from . import Feedback, changed_answer_note, failed, first_answer, passed, unanswered
from ._answers import is_blank

__all__ = ["new_code_word", "check_code_word", "ENFORCE_CHOICES", "check_enforce_prediction", "mx_certificate",
           "check_tlsa_record"]

WIRE = "Exercise 1 · read the mail off the wire"
PREDICT = "Exercise 2 · predict MTA-STS enforce under attack"
TLSA = "Exercise 3 · the TLSA record of mx1"

_WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbour", "indigo", "juniper",
          "kestrel", "lagoon", "meadow", "nimbus", "orchid", "pebble", "quartz", "raven", "saffron", "tundra")

ENFORCE_CHOICES = {
    "a": "the relay notices nothing and sends the message in clear text, as before",
    "b": "the relay keeps the message in its queue and tries again later",
    "c": "the relay bounces the message to Alice at once",
    "d": "the relay delivers it over TLS anyway, because the policy tells it to",
}


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
        return unanswered("Type the code word you read in the clear text between DATA and the final dot.", WIRE)
    word = str(answer).strip()
    clear = _clear_text_at_mx(lab, queue_id)
    if not clear:
        return failed("the MX received nothing in clear text for that message: was the attacker on the path "
                      "when it was sent? Run the cell with lab.mitm(...) and send again.", WIRE)
    match = re.search(rb"code word: (\S+)", clear)  # the body line the notebook's message carries
    if match is None:
        return failed("that message's body did not cross in clear text; send it with the attacker on the path.",
                      WIRE)
    if word.encode() == match.group(1):
        return passed(f"read off the wire: anyone on the path could, because the EHLO reply reached the relay "
                      f"without STARTTLS ({len(clear)} bytes crossed in clear text).", WIRE)
    if word.encode() in clear:
        return failed(f"{word!r} did cross the wire, but it is not the code word: look for the body line "
                      "'code word: ...' after the DATA command.", WIRE)
    return failed(f"{word!r} is not in the bytes that reached the MX. Print lab.wire(conn) for the MX's "
                  "connection and read the lines after the DATA command.", WIRE)


def check_enforce_prediction(choice: Any) -> Feedback:
    """A prediction, made before the cell that shows it: what the relay does with enforce under attack.

    The first well-formed choice counts (`first_answer`): were each letter judged afresh, reading the verdict
    on a, b, c and d in turn would replace the prediction.
    """
    if is_blank(choice):
        return unanswered(f"Pick one of {', '.join(sorted(ENFORCE_CHOICES))} and run the cell again.", PREDICT)
    given = str(choice).strip().lower()
    if given not in ENFORCE_CHOICES:
        return failed(f"{choice!r} is not one of the choices {', '.join(sorted(ENFORCE_CHOICES))}.", PREDICT)
    key = first_answer(PREDICT, given)
    note = changed_answer_note(key, given)
    if key == "b":
        return passed(f"{note}RFC 8461 section 5: with enforce, a sender that cannot make a validated TLS connection to "
                      "a policy MX does not deliver; a 4xx keeps the message queued, to try again once the path "
                      "is clean. Check it against lab.queue after the next cell.", PREDICT)
    reasons = {
        "a": "that is what happened WITHOUT a policy. What does 'enforce' promise the receiving domain? "
             "Read RFC 8461 section 5 ('Policy Application').",
        "c": "a bounce is for problems that will not go away. Is an attacker on the path permanent? Look at "
             "the reply code the relay will record (4xx or 5xx?) after the next cell.",
        "d": "the relay only sees the EHLO reply the attacker lets through: can a policy make the MX's "
             "STARTTLS offer reappear? Look at what the attacker deletes.",
    }
    return failed(note + reasons[key], PREDICT)


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
        return unanswered("Build the string '3 1 1 ' followed by the hex SHA-256 digest you computed.", TLSA)
    parts = str(record).split()
    if len(parts) != 4 or parts[:3] != ["3", "1", "1"]:
        return failed(f"a TLSA record's data is four fields: usage selector matching-type digest; "
                      f"RFC 7672 section 3.1 recommends usage 3, selector 1, matching type 1. You gave "
                      f"{len(parts)} field(s) starting {' '.join(parts[:3])!r}.", TLSA)
    digest = parts[3].lower()
    der = mx_certificate(lab, host)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER,
                                                                          PublicFormat.SubjectPublicKeyInfo)
    if digest == hashlib.sha256(spki).hexdigest():
        return passed(f"that is the key {host} presents: a relay that validates this record in a signed zone "
                      "will refuse any other key, and any MX that does not offer STARTTLS.", TLSA)
    if digest == hashlib.sha256(der).hexdigest():
        return failed("that digest covers the whole certificate (selector 0, 'Cert'). Selector 1 hashes only "
                      "the SubjectPublicKeyInfo, the certificate's public key with its algorithm: find the "
                      "certificate's public key and serialise it as DER in that format (the cell imports the "
                      "two names you need).", TLSA)
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return failed(f"a SHA-256 digest is 64 hex digits; yours has {len(digest)} characters.", TLSA)
    return failed(f"that digest matches nothing {host} presents now. Did you hash the certificate of "
                  f"{host} (mx_certificate(lab)) with SHA-256 (matching type 1)?", TLSA)
