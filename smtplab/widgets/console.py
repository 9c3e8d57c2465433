"""The handshake console: talk SMTP to a lab host one line at a time, and see what each reply means."""

from __future__ import annotations

import base64
from typing import Any

import ipywidgets as w

from ..errors import SmtpLabError
from ..i18n import _, ngettext
from ..net.replies import Reply
from ..net.session import SmtpSession
from . import html
from .summary import StaticSummary

COMMANDS = ("EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "message", ".", "RSET", "NOOP", "QUIT")
SENT_AT_ONCE = ("message", ".")  # these have nothing to edit: they are sent when clicked


class HandshakeConsole(StaticSummary, w.VBox):
    """Buttons for the next sensible commands, a free line for anything, and the server's answers."""

    def __init__(self, lab: Any, host: str = "smtp.example.org", service: str | None = None) -> None:
        self.lab = lab
        options = [
            (_("{host}  ({service}, port {port})").format(host=h.name, service=svc, port=port), (h.name, svc))
            for h in lab.hosts.values() for svc, port in h.ports.items() if svc in ("submission", "smtp")
        ]
        chosen = lab.host(host)
        service = service or ("submission" if "submission" in chosen.ports else "smtp")
        self.target = w.Dropdown(options=options, value=(chosen.name, service), description=_("server"),
                                 layout=w.Layout(width="34em"))
        # Commands keep their protocol names; only "message" (the sample message) is a word to translate.
        self.buttons = {name: w.Button(description=_("message") if name == "message" else name,
                                       layout=w.Layout(width="auto")) for name in COMMANDS}
        self.line = w.Text(placeholder=_("type any line - wrong ones too - or click a command above"),
                           layout=w.Layout(width="40em"))
        self.send_button = w.Button(description=_("Send"), button_style="primary", icon="paper-plane")
        self.reset_button = w.Button(description=_("Reset"), icon="refresh")
        self.reply_html = w.HTML()
        self.transcript_html = w.HTML()
        self.ladder_html = w.HTML()
        self.status_html = w.HTML()
        for name, button in self.buttons.items():
            button.on_click(lambda _b, name=name: self.choose(name))
        self.send_button.on_click(lambda _b: self.send_line(self.line.value))
        self.reset_button.on_click(lambda _b: self.reset())
        self.target.observe(lambda _c: self.reset(), names="value")
        self.session: SmtpSession | None = None
        super().__init__([
            w.HBox([self.target, self.reset_button]),
            w.HBox(list(self.buttons.values()), layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.line, self.send_button]),
            self.status_html, self.reply_html,
            w.Tab(children=[self.transcript_html, self.ladder_html], titles=(_("transcript"), _("ladder diagram"))),
        ])
        self.reset()

    def summary(self) -> str:
        name, service = self.target.value
        lines = len(self.session.transcript) if self.session is not None else 0
        return ngettext("Handshake console: an SMTP conversation with {name} ({service}), {lines} transcript line "
                        "so far, with buttons for the next sensible command.",
                        "Handshake console: an SMTP conversation with {name} ({service}), {lines} transcript lines "
                        "so far, with buttons for the next sensible command.", lines).format(
            name=name, service=service, lines=lines)

    # --- actions (each is one call on the core session) ---
    def reset(self) -> None:
        """Hang up and open a fresh connection to the chosen server."""
        if self.session is not None:
            self.session.close()
        self.session = None
        self.line.value = ""
        self.reply_html.value = ""
        name, service = self.target.value
        try:
            self.session = self.lab.session(name, service)
        except (OSError, SmtpLabError) as exc:
            self.status_html.value = html.note(_("cannot connect to {name}: {error} (is the host down?)").format(
                name=name, error=exc), "error")
            self._refresh()
            return
        self.status_html.value = html.note(_("connected to {name} ({service}); the server spoke first:").format(
            name=name, service=service))
        self.reply_html.value = html.reply_card(self.session.greeting)
        self._refresh()

    def choose(self, name: str) -> None:
        """Put the command `name`, with sensible arguments, on the line (sent at once for message and '.')."""
        if name in SENT_AT_ONCE:
            if name == "message":
                for line in self.sample_message().split("\n"):
                    self.send_line(line)
            else:
                self.send_line(".")
            return
        self.line.value = self.template(name)

    def send_line(self, line: str) -> Reply | None:
        """Send one line to the server and show the reply."""
        if self.session is None or self.session.closed:
            self.status_html.value = html.note(_("the connection is closed: press Reset to connect again"), "error")
            return None
        try:
            reply = self.session.send(line)
        except SmtpLabError as exc:
            self.status_html.value = html.note(str(exc), "error")
            self._refresh()
            return None
        self.line.value = ""
        if reply is None:
            self.status_html.value = html.note(_("in DATA: lines get no reply until the lone '.'"))
        else:
            self.status_html.value = html.note(_("you sent: {line}").format(line=line))
            self.reply_html.value = html.reply_card(reply)
        self._refresh()
        return reply

    # --- what the buttons put on the line ---
    def template(self, name: str) -> str:
        host = self.lab.host(self.target.value[0])
        submission = self.target.value[1] == "submission"
        own = [u for u in self.lab.users.values() if u.domain == host.domain]
        other = [u for u in self.lab.users.values() if u.domain != host.domain]
        sender = (own or other or [None])[0] if submission else (other or own or [None])[0]
        recipient = (other or own or [None])[0] if submission else (own or other or [None])[0]
        if name == "AUTH" and own:
            token = base64.b64encode(f"\0{own[0].login}\0{own[0].password}".encode()).decode()
            return f"AUTH PLAIN {token}"
        return {
            "EHLO": "EHLO client.local",
            "MAIL": f"MAIL FROM:<{sender.address if sender else 'someone@example.org'}>",
            "RCPT": f"RCPT TO:<{recipient.address if recipient else 'someone@example.net'}>",
        }.get(name, name)

    def sample_message(self) -> str:
        mail = self.template("MAIL").split("<", 1)[1].rstrip(">")
        rcpt = self.template("RCPT").split("<", 1)[1].rstrip(">")
        # Header names are protocol (RFC 5322); the subject and the text are the learner's words.
        subject, text = _("typed by hand"), _("Hello! I typed this message line by line.")
        return f"From: <{mail}>\nTo: <{rcpt}>\nSubject: {subject}\n\n{text}"

    # --- view ---
    def _refresh(self) -> None:
        session = self.session
        suggested = session.suggestions() if session is not None else []
        for name, button in self.buttons.items():
            button.button_style = "info" if name in suggested else ""
            button.tooltip = _("suggested next") if name in suggested else ""
        self.transcript_html.value = html.transcript(session.transcript if session is not None else [])
        self.ladder_html.value = self._ladder()

    def _ladder(self) -> str:
        session = self.session
        if session is None or not session.local_port:
            return ""
        events = [e for e in self.lab.trace.events() if e.protocol == "smtp" and (
            e.conn == session.conn if session.conn else e.client.endswith(f":{session.local_port}"))]
        ladder = getattr(self.lab, "ladder", None)
        if ladder is None or not events:
            return ""
        return html.diagram(ladder(events=events))
