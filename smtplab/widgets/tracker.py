"""The relay tracker: compose, send, and watch each recipient's fate; break hosts; move the clock."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as w

from ..errors import SmtpLabError
from . import html
from .summary import StaticSummary

FAULT_MODES = ("ok", "down", "4xx", "5xx")
STEPS = ("1m", "5m", "15m", "1h", "4h", "1d", "5d")


class RelayTracker(StaticSummary, w.VBox):
    """Send a message and follow it through the queue; toggle faults on the receiving hosts."""

    def __init__(self, lab: Any, sender: str | None = None, to: str = "bob@example.net, nobody@example.net") -> None:
        self.lab = lab
        users = list(lab.users)
        self.sender = w.Dropdown(options=users, value=sender or users[0], description="from")
        self.to = w.Text(value=to, description="to", layout=w.Layout(width="36em"))
        self.subject = w.Text(value="Tracking a message", description="subject", layout=w.Layout(width="36em"))
        self.body = w.Textarea(value="Hello!\nWhere will this message go?", description="body",
                               layout=w.Layout(width="36em"))
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.status_html = w.HTML()
        self.queue_html = w.HTML()
        self.topology_html = w.HTML()
        self.faults = {
            h.name: w.ToggleButtons(options=FAULT_MODES, value="ok", description=h.name,
                                    style={"button_width": "5em", "description_width": "11em"})
            for h in lab.hosts.values() if "smtp" in h.ports
        }
        for name, toggle in self.faults.items():
            toggle.observe(lambda change, name=name: self.set_fault(name, change["new"]), names="value")
        self.step = w.Dropdown(options=STEPS, value="5m", description="advance", layout=w.Layout(width="12em"))
        self.advance_button = w.Button(description="Advance clock", icon="clock-o")
        self.pending = w.IntProgress(value=0, min=0, max=1, description="waiting", bar_style="warning")
        self.clock_html = w.HTML()
        self.send_button.on_click(lambda _b: self.submit())
        self.advance_button.on_click(lambda _b: self.advance())
        self.last_queue_id = ""
        self.last_message_id = ""
        super().__init__([
            self.sender, self.to, self.subject, self.body, self.send_button, self.status_html,
            self.queue_html,
            w.HTML("<b>receiving hosts</b> (a fault applies at RCPT: 4xx = try later, 5xx = refused)"),
            *self.faults.values(),
            w.HBox([self.step, self.advance_button, self.pending]), self.clock_html,
            w.Accordion(children=[self.topology_html], titles=("where it went (topology)",)),
        ])
        self.refresh()


    def summary(self) -> str:
        sent = f"last message sent: queue id {self.last_queue_id}" if self.last_queue_id else "nothing sent yet"
        return (f"Relay tracker: send from {self.sender.value} to {self.to.value}, switch each MX between ok, "
                f"down, 4xx and 5xx, and move the lab clock; {sent}.")

    def submit(self) -> None:
        """Submit the composed message as the chosen sender (STARTTLS + AUTH, like a mail client)."""
        recipients = [r.strip() for r in self.to.value.replace(";", ",").split(",") if r.strip()]
        if not recipients:
            self.status_html.value = html.note("give at least one recipient", "error")
            return
        try:
            result = self.lab.send(self.sender.value, recipients, self.subject.value, self.body.value)
        except SmtpLabError as exc:
            self.status_html.value = html.note(str(exc), "error")
            return
        self.last_queue_id, self.last_message_id = result.queue_id, result.message_id
        refused = "".join(f"<div>refused at submission: {escape(r)}: {escape(str(rep))}</div>"
                          for r, rep in result.refused.items())
        self.status_html.value = html.note(f"submitted: {result.reply.code} {result.reply.enhanced} "
                                           f"{result.reply.text}", "ok") + refused
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
        self.queue_html.value = (html.table(["message", "recipient", "state", "attempts", "via", "last reply"],
                                            rows, raw=True) if rows else html.note("the queue is empty"))
        waiting = [i for i in self.lab.queue if not i.done]
        self.pending.max = max(1, len(self.lab.queue))
        self.pending.value = len(waiting)
        self.pending.description = f"{len(waiting)} waiting"
        clock = self.lab.clock
        text = f"lab time {clock.datetime():%Y-%m-%d %H:%M} UTC"
        if waiting:
            soonest = min(i.next_attempt for i in waiting)
            minutes = max(0, (soonest - clock.now()) / 60)
            text += f"; next retry in {minutes:.0f} min of lab time"
        self.clock_html.value = html.note(text)
        topology = getattr(self.lab, "topology", None)
        if topology is not None:
            try:
                self.topology_html.value = html.diagram(topology(message_id=self.last_message_id or None))
            except TypeError:
                self.topology_html.value = html.diagram(topology())
