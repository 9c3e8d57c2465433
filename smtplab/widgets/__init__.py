"""ipywidgets views over a running lab: thin, every action is one public API call on the core.

    from smtplab.widgets import HandshakeConsole, MxExplorer, RelayTracker, MailboxViewer
    HandshakeConsole(lab)
"""

from __future__ import annotations

from .console import HandshakeConsole
from .mailbox import MailboxViewer
from .mx_explorer import MxExplorer
from .tracker import RelayTracker

__all__ = ["HandshakeConsole", "MxExplorer", "RelayTracker", "MailboxViewer"]
