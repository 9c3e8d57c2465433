"""The mailbox viewer: log in over IMAP like a mail client, list, open, and see what IMAP said."""

from __future__ import annotations

import imaplib
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from html import escape
from typing import Any

import ipywidgets as w

from ..i18n import _, ngettext
from ..mail.hops import received_hops
from . import html
from .summary import StaticSummary

_FETCH = re.compile(rb"UID (\d+).*FLAGS \(([^)]*)\)", re.S)


class MailboxViewer(StaticSummary, w.VBox):
    """A small IMAP client: folders, message list with flags, one message in full, and its transcript."""

    def __init__(self, lab: Any, address: str | None = None) -> None:
        self.lab = lab
        users = list(lab.users)
        self.user = w.Dropdown(options=users, value=address or users[-1], description=_("user"))
        self.login_button = w.Button(description=_("Log in (IMAP)"), button_style="primary", icon="sign-in")
        self.refresh_button = w.Button(description=_("Check mail"), icon="refresh", disabled=True)
        self.folders = w.Dropdown(options=[], description=_("folder"))
        self.messages = w.Select(options=[], rows=8, layout=w.Layout(width="60em"))
        self.status_html = w.HTML()
        self.message_html = w.HTML()
        self.raw_html = w.HTML()
        self.imap_html = w.HTML()
        self.client: imaplib.IMAP4 | None = None
        self.local_port = 0
        self.login_button.on_click(lambda _b: self.login())
        self.refresh_button.on_click(lambda _b: self.check())
        self.folders.observe(lambda _c: self.check(), names="value")
        self._opening = False
        self.messages.observe(
            lambda change: change["new"] and not self._opening and self.show_message(change["new"]), names="value")
        super().__init__([
            w.HBox([self.user, self.login_button, self.refresh_button]), self.status_html,
            self.folders, self.messages, self.message_html,
            w.Accordion(children=[self.raw_html, self.imap_html],
                        titles=(_("raw source"), _("what this viewer said over IMAP"))),
        ])


    def summary(self) -> str:
        count = len(self.messages.options)
        if self.client is None:
            return _("Mailbox viewer: {user}'s mailbox, not logged in yet.").format(user=self.user.value)
        return ngettext("Mailbox viewer: {user}'s mailbox, logged in over IMAP, {count} message listed.",
                        "Mailbox viewer: {user}'s mailbox, logged in over IMAP, {count} messages listed.",
                        count).format(user=self.user.value, count=count)

    def login(self) -> None:
        """Connect to the user's IMAP host, STARTTLS, LOGIN, and list the folders."""
        self.logout()
        try:
            self.client = self.lab.imap(self.user.value)
        except (imaplib.IMAP4.error, OSError) as exc:
            self.status_html.value = html.note(_("login failed: {error}").format(error=exc), "error")
            return
        self.local_port = self.client.sock.getsockname()[1]
        typ, data = self.client.list()
        names = [_folder_name(line) for line in data if isinstance(line, bytes)]
        self.refresh_button.disabled = False
        self.status_html.value = html.note(_("logged in as {user}").format(user=self.user.value), "ok")
        self.folders.options = names
        self.folders.value = "INBOX" if "INBOX" in names else names[0]
        self.check()

    def check(self) -> None:
        """SELECT the folder again (new mail shows up) and list its messages, newest last."""
        if self.client is None or not self.folders.value:
            return
        typ, data = self.client.select(f'"{self.folders.value}"')
        count = int(data[0] or 0) if typ == "OK" else 0
        options: list[tuple[str, int]] = []
        no_flags = _("no flags")
        if count:
            _typ, fetched = self.client.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
            for item in fetched:
                if not isinstance(item, tuple):
                    continue
                meta = _FETCH.search(item[0])
                if meta is None:
                    continue
                headers = message_from_bytes(item[1], policy=policy.default)
                flags = meta.group(2).decode()
                mark = " " if "\\Seen" in flags else "●"
                label = f"{mark} {headers['From']} — {headers['Subject']} — {headers['Date']}  [{flags or no_flags}]"
                options.append((label, int(meta.group(1))))
        self.messages.options = options
        unseen = sum(label.startswith("●") for label, _uid in options)
        self.status_html.value = html.note(ngettext("{folder}: {count} message, {unseen} unseen (●)",
                                                    "{folder}: {count} messages, {unseen} unseen (●)", count).format(
            folder=self.folders.value, count=count, unseen=unseen))
        self._transcript()

    def show_message(self, uid: int) -> EmailMessage | None:
        """Fetch one message in full; like a real client, this marks it \\Seen."""
        if self.client is None:
            return None
        typ, data = self.client.uid("FETCH", str(uid), "(BODY[])")
        raw = next((part[1] for part in data if isinstance(part, tuple)), b"")
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        hops = received_hops(message)
        hop_rows = [(h.when.strftime("%H:%M:%S") if h.when else "?", f"{h.from_name} [{h.from_address}]", h.by,
                     h.protocol, h.id) for h in hops]
        headers = html.table([_("header"), _("value")], [(k, str(v)) for k, v in message.items() if k != "Received"])
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else _("(no text part)")
        self.message_html.value = (
            "<b>" + escape(_("the route, oldest hop first (Received headers read bottom-up)")) + "</b>"
            # from / by / with / id are the clauses of a Received header (RFC 5321 section 4.4): kept as written
            + html.table([_("time"), "from", "by", "with", "id"], hop_rows)
            + headers + f"<pre class='smtplab-body'>{escape(text)}</pre>"
        )
        self.raw_html.value = f"<pre>{escape(raw.decode('utf-8', 'replace'))}</pre>"
        self._relist(uid)
        return message

    def _relist(self, selected: int) -> None:
        """List again (the message just opened is \\Seen now) and keep it selected."""
        self._opening = True
        try:
            self.check()
            if any(value == selected for _, value in self.messages.options):
                self.messages.value = selected
        finally:
            self._opening = False

    def logout(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
        self.client = None

    def _transcript(self) -> None:
        if not self.local_port:
            return
        events = [e for e in self.lab.trace.filter(protocol="imap") if e.client.endswith(f":{self.local_port}")]
        self.imap_html.value = html.transcript(e.to_text() for e in events)


def _folder_name(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    name = text.rsplit(" ", 1)[-1]
    return name.strip('"')
