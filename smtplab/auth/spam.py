"""A transparent spam score: every rule, its points and why it fired are shown to the learner.

Real filters (SpamAssassin, rspamd) add up hundreds of weighted tests; these few show the idea:
content patterns, missing or odd headers, and what sender authentication found.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from ..i18n import N_, _

__all__ = ["Rule", "Hit", "SpamReport", "RULES", "score", "JUNK_AT", "REJECT_AT"]

JUNK_AT = 5.0  # at or above: delivered to the Junk folder
REJECT_AT = 10.0  # at or above: refused with 554 5.7.1


@dataclass(frozen=True)
class Rule:
    name: str
    points: float
    text: str  # the English description (a msgid); `description` shows it in the learner's language
    test: Callable[[EmailMessage, str, Any], bool]

    @property
    def description(self) -> str:
        return _(self.text)


@dataclass(frozen=True)
class Hit:
    name: str
    points: float
    text: str

    @property
    def description(self) -> str:
        return _(self.text)


@dataclass(frozen=True)
class SpamReport:
    score: float
    hits: tuple[Hit, ...]

    @property
    def verdict(self) -> str:
        if self.score >= REJECT_AT:
            return "reject"
        return "junk" if self.score >= JUNK_AT else "ham"

    def header(self) -> str:
        """The X-Spam-Report value: each rule that fired with its points."""
        rules = ", ".join(f"{h.name}={h.points:g}" for h in self.hits) or "none"
        return f"score={self.score:g} junk-at={JUNK_AT:g} reject-at={REJECT_AT:g} rules: {rules}"

    def explain(self) -> str:
        """Each rule that fired with its points and why (in the learner's language), then the total and verdict."""
        lines = [f"{h.points:+5.1f}  {h.name}: {h.description}" for h in self.hits] or [_("(no rule fired)")]
        lines.append(_("total {score:g} -> {verdict} (junk at {junk:g}, reject at {reject:g})").format(
            score=self.score, verdict=self.verdict, junk=JUNK_AT, reject=REJECT_AT))
        return "\n".join(lines)


# English and Spanish bait (the course has a Spanish edition: a learner's scam in Spanish scores too).
_BAIT = re.compile(r"\b(lottery|winner|won|prize|viagra|bitcoin|urgent|wire transfer|password|verify your account"
                   r"|loter[ií]a|ganador|ganadora|has ganado|premio|urgente|transferencia|contraseña|verifica tu cuenta)\b",
                   re.I)


def _text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    try:
        return body.get_content() if body is not None else ""
    except (LookupError, ValueError):
        return ""


def _auth(verdict: Any, name: str) -> str:
    return getattr(verdict, name, "none") if verdict is not None else "none"


RULES: tuple[Rule, ...] = (
    Rule("BAIT_WORDS", 2.5, N_("the text uses words typical of scams (lottery, winner, urgent, verify your account...)"),
         lambda m, text, v: bool(_BAIT.search(text + " " + str(m.get("Subject", ""))))),
    Rule("SUBJECT_ALL_CAPS", 1.5, N_("the subject is written in capitals"),
         lambda m, text, v: (s := str(m.get("Subject", ""))).upper() == s and sum(c.isalpha() for c in s) >= 6),
    Rule("MANY_EXCLAMATIONS", 1.0, N_("three or more exclamation marks in a row"),
         lambda m, text, v: "!!!" in text or "!!!" in str(m.get("Subject", ""))),
    Rule("MISSING_DATE", 1.0, N_("no Date header (every mail client adds one)"), lambda m, text, v: m.get("Date") is None),
    Rule("MISSING_MESSAGE_ID", 1.0, N_("no Message-ID header"), lambda m, text, v: m.get("Message-ID") is None),
    Rule("FROM_NAME_HAS_OTHER_ADDRESS", 2.0, N_("the From display name shows a different address than the real one"),
         lambda m, text, v: _name_spoof(str(m.get("From", "")))),
    Rule("SPF_FAIL", 3.0, N_("SPF says the sending address may not send for this domain"),
         lambda m, text, v: _auth(v, "spf") == "fail"),
    Rule("SPF_SOFTFAIL", 1.0, N_("SPF says the sending address is probably not allowed"),
         lambda m, text, v: _auth(v, "spf") == "softfail"),
    Rule("DKIM_FAIL", 2.0, N_("a DKIM signature is present but does not verify (altered or forged)"),
         lambda m, text, v: _auth(v, "dkim") == "fail"),
    Rule("DMARC_FAIL", 3.0, N_("neither SPF nor DKIM passed for the From domain"),
         lambda m, text, v: _auth(v, "dmarc") == "fail"),
)


def _name_spoof(value: str) -> bool:
    match = re.match(r'\s*"?([^"<]*)"?\s*<([^>]+)>', value)
    if not match:
        return False
    shown = re.search(r"[\w.+-]+@[\w.-]+", match.group(1))
    return shown is not None and shown.group(0).lower() != match.group(2).strip().lower()


class _ScoredMessage(EmailMessage):
    """The message as the rules see it: each header parsed once, however many rules read it."""

    def get(self, name: str, failobj: Any = None) -> Any:
        cache = self.__dict__.setdefault("_smtplab_headers", {})
        key = name.lower()
        if key not in cache:
            cache[key] = super().get(name)
        value = cache[key]
        return failobj if value is None else value


def score(content: bytes, verdict: Any = None, rules: tuple[Rule, ...] = RULES) -> SpamReport:
    """Score one message; `verdict` is the AuthVerdict from sender authentication, if any."""
    message = message_from_bytes(content, _class=_ScoredMessage, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text = _text(message)
    hits = tuple(Hit(r.name, r.points, r.text) for r in rules if _safe(r, message, text, verdict))
    return SpamReport(round(sum(h.points for h in hits), 2), hits)


def _safe(rule: Rule, message: EmailMessage, text: str, verdict: Any) -> bool:
    try:
        return bool(rule.test(message, text, verdict))
    except Exception:  # a malformed header must not crash the filter; the rule simply does not fire
        return False
