"""smtplab: a real miniature mail network on loopback, for learning how e-mail works.

    import smtplab
    lab = smtplab.start()
    lab.send("alice@example.org", "bob@example.net", "Hi", "Hello Bob!")
    print(lab.trace)
    lab.stop()
"""

from __future__ import annotations

from .auth import spam as spam  # `smtplab.spam.score(raw)`: the anti-spam lesson scores drafts with it
from .auth.iprev import IprevResult, iprev
from .clock import ClockError, VirtualClock
from .errors import (
    DnsLookupError,
    DnsOfflineError,
    LabDirectoryError,
    LabNotRunning,
    PortInUse,
    ScenarioError,
    SendError,
    SessionError,
    SmtpLabError,
    UnknownHost,
    UnknownLanguage,
    UnknownUser,
)
from .i18n import current_language, set_language
from .lab import DnsInfo, Host, Lab, User, current, start
from .mail.hops import Hop, received_hops
from .mail.queue import QueueItem, RecipientStatus
from .net.client import SendResult
from .net.dns_lookup import DigResult, MXRecord, lookup_mx
from .net.replies import Reply, explain
from .net.session import SmtpSession
from .scenario import Scenario
from .trace.ring import Trace, TraceEvent
from .views.journey import message_events

__version__ = "0.1.0"

# The drawing layer (Graphviz) loads on first use: a lab that only carries mail never pays for it.
_LAZY = {"ladder": "views.ladder", "topology": "views.topology", "Diagram": "views.render",
         "RenderError": "views.render", "Capture": "views.pcap"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smtplab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "start",
    "current",
    "set_language",
    "current_language",
    "lookup_mx",
    "received_hops",
    "iprev",
    "IprevResult",
    "ladder",
    "topology",
    "message_events",
    "Hop",
    "DigResult",
    "explain",
    "Lab",
    "Host",
    "User",
    "DnsInfo",
    "Scenario",
    "MXRecord",
    "Reply",
    "SendResult",
    "SmtpSession",
    "QueueItem",
    "RecipientStatus",
    "Trace",
    "TraceEvent",
    "Diagram",
    "Capture",
    "VirtualClock",
    "SmtpLabError",
    "ScenarioError",
    "LabNotRunning",
    "UnknownHost",
    "UnknownUser",
    "UnknownLanguage",
    "DnsLookupError",
    "DnsOfflineError",
    "SendError",
    "SessionError",
    "ClockError",
    "LabDirectoryError",
    "PortInUse",
    "RenderError",
]
