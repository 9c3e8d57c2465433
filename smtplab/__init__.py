"""smtplab: a real miniature mail network on loopback, for learning how e-mail works.

    import smtplab
    lab = smtplab.start()
    lab.send("alice@example.org", "bob@example.net", "Hi", "Hello Bob!")
    print(lab.trace)
    lab.stop()
"""

from __future__ import annotations

from .client import SendResult, SmtpSession
from .clock import VirtualClock
from .errors import (
    DnsLookupError,
    LabNotRunning,
    ScenarioError,
    SendError,
    SessionError,
    SmtpLabError,
    UnknownHost,
    UnknownUser,
)
from .lab import DnsInfo, Host, Lab, User, current, start
from .hops import Hop, received_hops
from .journey import message_events
from .labdns import DigResult, MXRecord, lookup_mx
from .ladder_diagram import ladder
from .relay import QueueItem, RecipientStatus
from .render import Diagram, RenderError
from .replies import Reply, explain
from .scenario import Scenario
from .topology_diagram import topology
from .trace import Trace, TraceEvent

__version__ = "0.1.0"

__all__ = [
    "start",
    "current",
    "lookup_mx",
    "received_hops",
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
    "VirtualClock",
    "SmtpLabError",
    "ScenarioError",
    "LabNotRunning",
    "UnknownHost",
    "UnknownUser",
    "DnsLookupError",
    "SendError",
    "SessionError",
    "RenderError",
]
