"""Has the learner answered? The two tests the exercise checks share.

A notebook cell hands the learner a placeholder (`answer = ...` or `answer = None`) to replace. Some
checks judge any replacement, even an empty string, because an empty string is an answer worth feedback
(an empty command line, an empty reply); others treat text with nothing in it as not answered yet.
"""

from __future__ import annotations

from typing import Any


def is_placeholder(value: Any) -> bool:
    """True if the learner left the placeholder (`...` or `None`) in place; any other value is an answer."""
    return value is None or value is ...


def is_blank(value: Any) -> bool:
    """True if the learner left the placeholder or wrote only whitespace (as `str` or `bytes`)."""
    return is_placeholder(value) or (isinstance(value, (str, bytes)) and not value.strip())
