"""Self-checking exercises for the course notebooks.

Every check returns a `Feedback` instead of raising, so an unsolved exercise never stops a Run-All;
the feedback says exactly what was wrong and why ("your RCPT came before MAIL: the server said
503 5.5.1 ..."), never just "wrong". One module per topic (`handshake`, `msa`, `roles`, `tls`, `blocklist` ...) or
per notebook (`nb02`, `nb03` ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from ..i18n import _

__all__ = ["Feedback", "passed", "failed", "unanswered", "combine", "first_answer", "forget_answers"]

# The first answer each prediction or choice question was checked with, in this Python process.
_FIRST_ANSWERS: dict[str, Any] = {}


@dataclass(frozen=True)
class Feedback:
    """The verdict of one exercise check, readable in a notebook and in a terminal."""

    ok: bool
    message: str
    exercise: str = ""
    answered: bool = True

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        mark = "✔" if self.ok else ("…" if not self.answered else "✘")
        title = f"{self.exercise}: " if self.exercise else ""
        return f"{mark} {title}{self.message}"

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else ("#57606a" if not self.answered else "#cf222e")
        mark = "✔" if self.ok else ("…" if not self.answered else "✘")
        title = f"<b>{escape(self.exercise)}</b>: " if self.exercise else ""
        body = escape(self.message).replace("\n", "<br>")
        return (f"<div class='smtplab-feedback' style='border-left:4px solid {colour};padding:4px 8px'>"
                f"<span style='color:{colour}'>{mark}</span> {title}{body}</div>")

    def __repr__(self) -> str:
        return str(self)


def passed(message: str, exercise: str = "") -> Feedback:
    return Feedback(True, message, exercise)


def failed(message: str, exercise: str = "") -> Feedback:
    return Feedback(False, message, exercise)


def unanswered(hint: str, exercise: str = "") -> Feedback:
    """The learner has not tried yet: say what to do, without counting it as wrong."""
    return Feedback(False, _("not answered yet. {hint}").format(hint=hint), exercise, answered=False)


def combine(parts: Iterable[Feedback], exercise: str = "") -> Feedback:
    """One verdict from several: ok only if all are ok; the first problem is reported."""
    items = list(parts)
    problems = [f for f in items if not f.ok]
    if not problems:
        return passed(" ".join(f.message for f in items), exercise)
    first = problems[0]
    return Feedback(False, first.message, exercise or first.exercise, first.answered)


def first_answer(exercise: str, answer: Any) -> Any:
    """Commit `answer` as the answer to `exercise` if it is the first one checked; return the committed one.

    A prediction or a multiple-choice question counts once: were every answer judged afresh, a learner
    could try each option in turn and read the verdict instead of thinking (or running the experiment).
    The checks call this with an answer they have already normalised and found well-formed, so a typo
    does not use up the one try.
    """
    return _FIRST_ANSWERS.setdefault(exercise, answer)


def forget_answers(exercise: str | None = None) -> None:
    """Let `exercise` (or every exercise) be answered afresh: a teacher's reset, and the tests' own."""
    if exercise is None:
        _FIRST_ANSWERS.clear()
    else:
        _FIRST_ANSWERS.pop(exercise, None)


def changed_answer_note(committed: Any, given: Any) -> str:
    """What a check says when the learner changed an answer that was already committed."""
    if committed == given:
        return ""
    return _("(You changed your answer to {given}, but the first answer checked, {committed}, is the one "
             "that counts: a prediction is judged once. The verdict below is about it.) ").format(
                 given=repr(given), committed=repr(committed))
