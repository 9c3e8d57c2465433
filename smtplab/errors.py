"""The one exception root of smtplab and its specific subclasses.

Every message tells the learner what happened and what to do next.
"""

from __future__ import annotations

__all__ = [
    "SmtpLabError",
    "ScenarioError",
    "LabNotRunning",
    "UnknownHost",
    "UnknownUser",
    "DnsLookupError",
    "SendError",
    "SessionError",
]


class SmtpLabError(Exception):
    """Base class of every error smtplab raises on purpose."""


class ScenarioError(SmtpLabError, ValueError):
    """The scenario description is inconsistent or incomplete."""


class LabNotRunning(SmtpLabError, RuntimeError):
    """The lab was stopped (or never started); start one with smtplab.start()."""


class UnknownHost(SmtpLabError, KeyError):
    """No host of that name exists in the lab."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnknownUser(SmtpLabError, KeyError):
    """No user with that address exists in the lab."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DnsLookupError(SmtpLabError, LookupError):
    """A DNS lookup failed: the name does not exist, or no server answered."""


class SendError(SmtpLabError):
    """The submission server refused the message; `.reply` holds its answer."""

    def __init__(self, message: str, reply: object | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class SessionError(SmtpLabError):
    """A stepping session cannot do what was asked (e.g. it is closed)."""
