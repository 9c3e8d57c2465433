"""Check of notebook 06's spam-score exercise: write a message that a content filter files as Junk, and
name the rules that moved it over the line.

The check reads what really happened in the lab: Bob's folders, the X-Spam-Score and X-Spam-Report
headers his MX wrote, and the relay queue. Only a message the learner sent after the exercise began
counts, so the notebook's own example does not pass it.
"""

from __future__ import annotations

import re
import weakref
from email.message import Message
from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _
from . import Feedback, failed, passed, unanswered
from ._answers import is_placeholder

__all__ = ["begin_junk_exercise", "check_over_the_line", "NOTEBOOK_SUBJECT"]

JUNK = N_("Exercise 2 · over the line")
ALICE = "alice@example.org"
BOB = "bob@example.net"
NOTEBOOK_SUBJECT = "YOU ARE A WINNER"  # the notebook's own example: it does not count

# Where the trace stood when each lab's exercise began: only messages sent after it are the learner's.
_START: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def begin_junk_exercise(lab: Any) -> None:
    """Mark the start of the exercise: messages sent before it (the notebook's) do not count."""
    _START[lab] = lab.mark()



def _copy(lab: Any, message_id: str) -> tuple[str, Message | None]:
    for folder in ("INBOX", "Junk"):
        for message in lab.messages(BOB, folder):
            if str(message.get("Message-ID", "")).strip() == message_id.strip():
                return folder, message
    return "", None


def _report(message: Message) -> tuple[float, str]:
    """(score, the rules that fired) as Bob's MX wrote them into the message."""
    try:
        value = float(str(message.get("X-Spam-Score", "0")))
    except ValueError:
        value = 0.0
    report = " ".join(str(message.get("X-Spam-Report", "")).split())
    rules = report.split("rules:", 1)[1].strip() if "rules:" in report else "none"
    return value, rules or "none"


_HIT = re.compile(r"([A-Z][A-Z0-9_]+)=(-?[0-9.]+)")


def _hits(message: Message) -> tuple[float, dict[str, float]]:
    """(junk-at threshold, {rule: points}) from the X-Spam-Report header Bob's MX wrote."""
    report = " ".join(str(message.get("X-Spam-Report", "")).split())
    match = re.search(r"junk-at=(-?[0-9.]+)", report)
    junk_at = float(match.group(1)) if match else 5.0
    rules = report.split("rules:", 1)[1] if "rules:" in report else ""
    return junk_at, {name: float(points) for name, points in _HIT.findall(rules)}


def _names(value: Any) -> list[str] | None:
    if isinstance(value, str):
        items = [part for part in re.split(r"[\s,]+", value) if part]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        items = [str(v).strip() for v in value if str(v).strip()]
    else:
        return None
    return [item.upper() for item in items]


def _judge_rules(value: float, message: Message, deciding: Any) -> str:
    """'' when `deciding` names a smallest set of fired rules without which the message would stay in INBOX."""
    junk_at, fired = _hits(message)
    names = _names(deciding)
    listing = ", ".join(f"{n}={p:g}" for n, p in fired.items()) or "none"
    if names is None:
        return (_("deciding_rules must be a rule name, or a list of names, as text (you gave {deciding!r}).").format(deciding=deciding))
    if not names:
        return _("deciding_rules is empty: name the rule, or rules, that moved your message over the line.")
    unknown = [n for n in names if n not in fired]
    if unknown:
        return (_("{unknown} did not fire for your message: X-Spam-Report lists the rules that did, with their "
                "points ({listing}).").format(unknown=unknown[0], listing=listing))
    without = value - sum(fired[n] for n in set(names))
    if without >= junk_at:
        return (_("without {value} your message would still score {without:g}, at or above junk-at "
                "{junk_at:g}: still Junk. Which points are the ones that carried it over {junk_at:g}?").format(value=', '.join(names), without=without, junk_at=junk_at))
    spare = [n for n in names if value - sum(fired[m] for m in set(names) if m != n) < junk_at]
    if spare:
        return (_("your message stays under junk-at {junk_at:g} even if {spare} still fires: name only the rules it "
                "needs, without any that are not needed to cross the line.").format(junk_at=junk_at, spare=spare[0]))
    return ""


def check_over_the_line(lab: Any, result: Any, deciding_rules: Any = None) -> Feedback:
    """Pass when the learner's own message from Alice to Bob landed in Bob's Junk folder by its content, and
    `deciding_rules` names a smallest set of the rules that fired without which it would have stayed in INBOX."""
    if is_placeholder(result):
        return unanswered(_("Send Alice's message to Bob with lab.send(...) and keep what it returns in my_result."),
                          _(JUNK))
    if not hasattr(result, "queue_id") or not hasattr(result, "message_id"):
        return failed(_("my_result should be what lab.send(...) returns, not {type} {result!r}.").format(type=type(result).__name__, result=result),
                      _(JUNK))
    start = _START.get(lab)
    if start is None:
        return failed(_("run the exercise's first cell (it calls spam_score.begin_junk_exercise(lab)) before you send: the "
                      "check counts only messages sent after it."), _(JUNK))
    events = lab.trace.for_message(result.queue_id)
    if events and min(e.seq for e in events) <= start:
        return failed(_("this message was sent before the exercise began: it is the notebook's own example. Write "
                      "and send one of yours in the exercise cell."), _(JUNK))
    if str(getattr(result, "sender", "")).lower() != ALICE or BOB not in [r.lower() for r in result.recipients]:
        return failed(_("send it from {ALICE} to {BOB}: Alice is authenticated, so SPF, DKIM and DMARC pass, and only "
                      "the content decides.").format(ALICE=ALICE, BOB=BOB), _(JUNK))
    try:
        lab.wait_for_delivery()
        status = next(r for r in lab.queue_item(result.queue_id).recipients if r.address.lower() == BOB)
        folder, message = _copy(lab, result.message_id)
    except (KeyError, StopIteration, SmtpLabError) as exc:
        return failed(_("the check could not find your message in this lab ({exc}). Send it again with the running "
                      "lab.").format(exc=exc), _(JUNK))
    if message is None:
        if status.state == "bounced":
            return failed(_("mx1 refused your message: '{last_reply}'. A score from the refusal threshold on "
                          "(reject-at in X-Spam-Report) is refused, not filed: the exercise wants it accepted and "
                          "filed as Junk.").format(last_reply=status.last_reply), _(JUNK))
        return failed(_("your message has not reached Bob's folders: the queue says {state} "
                      "('{last_reply}'). Are mx1 and mx2 up?").format(state=status.state, last_reply=status.last_reply), _(JUNK))
    value, rules = _report(message)
    if str(message.get("Subject", "")).strip() == NOTEBOOK_SUBJECT:
        return failed(_("that is the notebook's subject, '{NOTEBOOK_SUBJECT}': write a message of your own.").format(NOTEBOOK_SUBJECT=NOTEBOOK_SUBJECT), _(JUNK))
    if folder == "INBOX":
        return failed(_("your message is in Bob's INBOX with X-Spam-Score {value:g} (rules that fired: {rules}). Junk "
                      "starts at the junk-at score in its X-Spam-Report. Which rules of smtplab.spam.RULES could "
                      "your text trigger? smtplab.spam.score(raw_bytes) lets you try before you send.").format(value=value, rules=rules), _(JUNK))
    if is_placeholder(deciding_rules):
        return unanswered(_("Your message is in Junk (X-Spam-Score {value:g}). Now name in deciding_rules the rule, or "
                          "rules, without which it would have stayed in INBOX.").format(value=value), _(JUNK))
    problem = _judge_rules(value, message, deciding_rules)
    if problem:
        return failed(_("your message is in Junk, but {problem}").format(problem=problem), _(JUNK))
    auth = " ".join(str(message.get("Authentication-Results", "")).split())
    named = ", ".join(_names(deciding_rules) or [])
    return passed(_("Right: Bob's MX filed your message in Junk with X-Spam-Score {value:g}; the rules that fired: "
                  "{rules}. Without {named} it would have scored under the junk-at line. Its Authentication-Results "
                  "say {split}: the sender is "
                  "genuine, the content alone moved it over the line. A real filter weighs hundreds of such rules, "
                  "and learns from what users mark as spam.").format(value=value, rules=rules, named=named, split=auth.split(';', 1)[-1].strip()), _(JUNK))
