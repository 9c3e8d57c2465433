"""The relay tracker: compose, send, and watch each recipient's fate; break hosts; move the clock."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as w

from ..errors import SmtpLabError
from ..i18n import N_, _, ngettext
from . import html
from .summary import StaticSummary

FAULT_MODES = ("ok", "down", "4xx", "5xx")
FAULT_LABELS = {"ok": N_("ok"), "down": N_("down")}  # 4xx and 5xx are reply classes: the same in every language
STEPS = ("1m", "5m", "15m", "1h", "4h", "1d", "5d")


class RelayTracker(StaticSummary, w.VBox):
    """Send a message and follow it through the queue; toggle faults on the receiving hosts."""

    def __init__(self, lab: Any, sender: str | None = None, to: str = "bob@example.net, nobody@example.net") -> None:
        self.lab = lab
        users = list(lab.users)
        self.sender = w.Dropdown(options=users, value=sender or users[0], description=_("from"))
        self.to = w.Text(value=to, description=_("to"), layout=w.Layout(width="36em"))
        self.subject = w.Text(value=_("Tracking a message"), description=_("subject"), layout=w.Layout(width="36em"))
        self.body = w.Textarea(value=_("Hello!\nWhere will this message go?"), description=_("body"),
                               layout=w.Layout(width="36em"))
        self.send_button = w.Button(description=_("Send"), button_style="primary", icon="paper-plane")
        self.status_html = w.HTML()
        self.queue_html = w.HTML()
        self.topology_html = w.HTML()
        self.faults = {
            h.name: w.ToggleButtons(options=[(_(FAULT_LABELS.get(mode, mode)), mode) for mode in FAULT_MODES],
                                    value="ok", description=h.name,
                                    style={"button_width": "5em", "description_width": "11em"})
            for h in lab.hosts.values() if "smtp" in h.ports
        }
        for name, toggle in self.faults.items():
            toggle.observe(lambda change, name=name: self.set_fault(name, change["new"]), names="value")
        self.step = w.Dropdown(options=STEPS, value="5m", description=_("advance"), layout=w.Layout(width="12em"))
        self.advance_button = w.Button(description=_("Advance clock"), icon="clock-o")
        self.pending = w.IntProgress(value=0, min=0, max=1, description=_("waiting"), bar_style="warning")
        self.clock_html = w.HTML()
        self.send_button.on_click(lambda _b: self.submit())
        self.advance_button.on_click(lambda _b: self.advance())
        self.last_queue_id = ""
        self.last_message_id = ""
        super().__init__([
            self.sender, self.to, self.subject, self.body, self.send_button, self.status_html,
            self.queue_html,
            w.HTML(_("<b>receiving hosts</b> (a fault applies at RCPT: 4xx = try later, 5xx = refused)")),
            *self.faults.values(),
            w.HBox([self.step, self.advance_button, self.pending]), self.clock_html,
            w.Accordion(children=[self.topology_html], titles=(_("where it went (topology)"),)),
        ])
        self.refresh()


    def summary(self) -> str:
        sent = (_("last message sent: queue id {queue_id}").format(queue_id=self.last_queue_id) if self.last_queue_id
                else _("nothing sent yet"))
        return _("Relay tracker: send from {sender} to {recipients}, switch each MX between ok, down, 4xx and 5xx, "
                 "and move the lab clock; {sent}.").format(sender=self.sender.value, recipients=self.to.value, sent=sent)

    def submit(self) -> None:
        """Submit the composed message as the chosen sender (STARTTLS + AUTH, like a mail client)."""
        recipients = [r.strip() for r in self.to.value.replace(";", ",").split(",") if r.strip()]
        if not recipients:
            self.status_html.value = html.note(_("give at least one recipient"), "error")
            return
        try:
            result = self.lab.send(self.sender.value, recipients, self.subject.value, self.body.value)
        except SmtpLabError as exc:
            self.status_html.value = html.note(str(exc), "error")
            return
        self.last_queue_id, self.last_message_id = result.queue_id, result.message_id
        refused = "".join("<div>" + escape(_("refused at submission: {recipient}: {reply}").format(
            recipient=r, reply=rep)) + "</div>" for r, rep in result.refused.items())
        self.status_html.value = html.note(_("submitted: {code} {enhanced} {text}").format(
            code=result.reply.code, enhanced=result.reply.enhanced, text=result.reply.text), "ok") + refused
        self.refresh()

    def set_fault(self, host: str, mode: str) -> None:
        """ok: healthy; down: refuses connections; 4xx: greylists every RCPT; 5xx: refuses every RCPT."""
        target = self.lab.host(host)
        target.clear_faults()
        if mode == "down":
            if target.is_up:
                target.down()
        else:
            if not target.is_up:
                target.up()
            if mode == "4xx":
                target.inject("RCPT", "451 4.7.1 Greylisted, try again later")
            elif mode == "5xx":
                target.inject("RCPT", "550 5.7.1 Refused by policy")
        self.refresh()

    def advance(self) -> None:
        """Move the lab clock forward; retries that became due run now."""
        self.lab.clock.advance(self.step.value)
        self.refresh()

    def refresh(self) -> None:
        items = [i for i in self.lab.queue if i.sender]  # bounces are shown as the sender's DSN, below
        rows = []
        for item in items[-6:]:
            for r in item.recipients:
                rows.append((escape(item.queue_id), escape(r.address), html.state_badge(r.state), str(r.attempts),
                             escape(r.via), f"<code>{escape(r.last_reply)}</code>"))
        headers = [_("message"), _("recipient"), _("state"), _("attempts"), _("via"), _("last reply")]
        self.queue_html.value = html.table(headers, rows, raw=True) if rows else html.note(_("the queue is empty"))
        waiting = [i for i in self.lab.queue if not i.done]
        self.pending.max = max(1, len(self.lab.queue))
        self.pending.value = len(waiting)
        self.pending.description = ngettext("{count} waiting", "{count} waiting", len(waiting)).format(
            count=len(waiting))
        clock = self.lab.clock
        now = f"{clock.datetime():%Y-%m-%d %H:%M}"
        if waiting:
            soonest = min(i.next_attempt for i in waiting)
            minutes = max(0, (soonest - clock.now()) / 60)
            text = _("lab time {time} UTC; next retry in {minutes:.0f} min of lab time").format(time=now, minutes=minutes)
        else:
            text = _("lab time {time} UTC").format(time=now)
        self.clock_html.value = html.note(text)
        topology = getattr(self.lab, "topology", None)
        if topology is not None:
            try:
                self.topology_html.value = html.diagram(topology(message_id=self.last_message_id or None))
            except TypeError:
                self.topology_html.value = html.diagram(topology())
