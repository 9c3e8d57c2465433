"""The one exception root of smtplab and its specific subclasses.

Every message tells the learner what happened and what to do next.
"""

from __future__ import annotations

from .i18n import _

__all__ = [
    "SmtpLabError",
    "ScenarioError",
    "LabNotRunning",
    "UnknownHost",
    "UnknownUser",
    "DnsLookupError",
    "DnsOfflineError",
    "SendError",
    "SessionError",
    "UnknownMessage",
    "UnknownConnection",
    "BadDuration",
    "HostUnreachable",
    "LabTimeout",
    "LibraryMismatch",
    "LabDirectoryError",
    "PortInUse",
    "UnknownLanguage",
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
    """A DNS lookup failed: the name does not exist, or no server answered.

    `rcode` is the answer's RCODE when a server gave one ("NXDOMAIN", "REFUSED", "SERVFAIL"), else "".
    """

    def __init__(self, message: str, rcode: str = "") -> None:
        super().__init__(message)
        self.rcode = rcode


class DnsOfflineError(DnsLookupError):
    """A real-world lookup could not reach the Internet's DNS: nothing can be said about the name."""


class SendError(SmtpLabError):
    """The submission server refused the message; `.reply` holds its answer."""

    def __init__(self, message: str, reply: object | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class SessionError(SmtpLabError):
    """A stepping session cannot do what was asked (e.g. it is closed)."""


class UnknownMessage(SmtpLabError, KeyError):
    """No message with that id is in the queue (or the trace)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownConnection(SmtpLabError, KeyError):
    """No connection with that id was kept."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadDuration(SmtpLabError, ValueError):
    """A duration the lab clock cannot read (give seconds, a timedelta, or text like "5m", "1h30m", "2d")."""


class HostUnreachable(SmtpLabError, ConnectionError):
    """A lab host did not accept the connection (it is down, or its service is not running)."""


class LabTimeout(SmtpLabError, TimeoutError):
    """The lab did not finish what was asked in time; the work was cancelled."""


class LibraryMismatch(SmtpLabError, RuntimeError):
    """An installed library is not the version smtplab was written against."""


class LabDirectoryError(SmtpLabError, OSError):
    """The lab directory cannot be written (read-only, full, not yours); the message says what to give instead."""


class PortInUse(SmtpLabError, OSError):
    """A port the lab was told to use (`ports=BASE`, `up --ports BASE`) is taken by another program."""


class UnknownLanguage(SmtpLabError, ValueError):
    """A language smtplab has no translation for; `.known` lists the ones it has ("en", "es")."""

    def __init__(self, given: str, known: list[str], source: str = "lang") -> None:
        if source == "SMTPLAB_LANG":
            text = _("SMTPLAB_LANG={given!r} names a language smtplab has no translation for. "
                     "It speaks: {known}. Set SMTPLAB_LANG to one of them, or unset it.")
        else:
            text = _("smtplab has no translation for the language {given!r}. It speaks: {known}. "
                     "Give one of them, e.g. lang={example!r}.")
        super().__init__(text.format(given=given, known=", ".join(known), example=known[-1] if known else "en"))
        self.given = given
        self.known = known
