"""The lab's IMAP server: its own Maildir backend on pymap's IMAP parser and protocol layers.

pymap (https://github.com/icgood/pymap) parses IMAP and runs the command loop; the lab keeps that as a
dependency (pinned, 0.36.7). Its Maildir backend lost and mangled mail (COPY wrote empty files, "."
named the provider's directory, CREATE of an existing folder ended the session ...), and pymap is
dormant, so the backend is the lab's own: adapted from pymap's ``pymap/backend/maildir/`` and
``pymap/backend/session.py``, each module saying what it changed and why.

- :mod:`.backend` configuration, logins and users; :mod:`.session` one user's commands;
  :mod:`.mailboxes` the folders; :mod:`.mailbox` one folder (UIDs, flags, \\Recent, COPY, MOVE, IDLE);
  :mod:`.maildir` its files; :mod:`.message` and :mod:`.envelope` what FETCH returns; :mod:`.search`
  SEARCH's text keys; :mod:`.layout` names to directories; :mod:`.flags` keywords; :mod:`.uidlist`,
  :mod:`.subscriptions`, :mod:`.users`, :mod:`.io` the state files.
- :mod:`.commands` and :mod:`.protocol` subclass pymap's parser and connection (no patch): NAMESPACE,
  ENABLE, UNSELECT, SPECIAL-USE, limits on idle clients and failed logins.

pymap's license, which covers the adapted modules:

    The MIT License (MIT)

    Copyright (c) 2023 Ian Good

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
    associated documentation files (the "Software"), to deal in the Software without restriction,
    including without limitation the rights to use, copy, modify, merge, publish, distribute,
    sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all copies or
    substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
    NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
    NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
    DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
    OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

from .backend import Config, Identity, Login
from .layout import InvalidMailboxName, check_mailbox_name
from .mailbox import forget, has_idlers, mailbox_changed
from .mailboxes import SPECIAL_USE
from .protocol import LabImapServer, Limits

__all__ = ["Config", "Identity", "Login", "LabImapServer", "Limits", "SPECIAL_USE", "InvalidMailboxName",
           "check_mailbox_name", "forget", "has_idlers", "mailbox_changed"]
