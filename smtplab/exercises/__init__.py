"""Self-checking exercises for the course notebooks.

Every check returns a `Feedback` instead of raising, so an unsolved exercise never stops a Run-All;
the feedback says exactly what was wrong and why ("your RCPT came before MAIL: the server said
503 5.5.1 ..."), never just "wrong". One module per notebook (`nb01`, `nb02`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

__all__ = ["Feedback", "passed", "failed", "unanswered", "combine"]


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
    return Feedback(False, f"not answered yet. {hint}", exercise, answered=False)


def combine(parts: Iterable[Feedback], exercise: str = "") -> Feedback:
    """One verdict from several: ok only if all are ok; the first problem is reported."""
    items = list(parts)
    problems = [f for f in items if not f.ok]
    if not problems:
        return passed(" ".join(f.message for f in items), exercise)
    first = problems[0]
    return Feedback(False, first.message, exercise or first.exercise, first.answered)
