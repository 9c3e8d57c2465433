"""The MX explorer: which servers accept mail for a domain, in which order, and the raw DNS exchange."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as w

from ..errors import DnsLookupError
from ..i18n import _
from ..net.dns_lookup import MXRecord, lookup_mx
from . import html
from .summary import StaticSummary


class MxExplorer(StaticSummary, w.VBox):
    """Look up a domain's MX records in the lab DNS (or, optionally, the real one)."""

    def __init__(self, lab: Any, domain: str = "example.net") -> None:
        self.lab = lab
        self.domain = w.Text(value=domain, description=_("domain"))
        self.real = w.Checkbox(value=False, description=_("real-world DNS (needs Internet)"), indent=False)
        self.lookup_button = w.Button(description=_("Look up MX"), button_style="primary", icon="search")
        self.result_html = w.HTML()
        self.raw_html = w.HTML()
        self.records: list[MXRecord] = []
        self.lookup_button.on_click(lambda _b: self.lookup())
        super().__init__([
            w.HBox([self.domain, self.lookup_button, self.real]),
            self.result_html,
            w.Accordion(children=[self.raw_html], titles=(_("the raw DNS question and answer"),)),
        ])


    def summary(self) -> str:
        found = ", ".join(f"{r.preference} {r.exchange}" for r in self.records) or _("not looked up yet")
        return _("MX explorer: the MX records of {domain}: {found}.").format(domain=self.domain.value, found=found)

    def lookup(self) -> list[MXRecord]:
        """Look the domain up and show the records, the first one a relay would try highlighted."""
        domain = self.domain.value.strip().rstrip(".")
        self.raw_html.value = ""
        try:
            if self.real.value:
                self.records = lookup_mx(domain, timeout=3.0)
                self.raw_html.value = html.note(_("raw messages are shown for the lab DNS only"))
            else:
                self.records = self.lab.lookup_mx(domain)
                raw = self.lab.dig(domain, "MX")
                sent_to = escape(_("question sent to {server}:").format(server=raw.server))
                answer, terminal = escape(_("answer:")), escape(_("in a terminal:"))
                self.raw_html.value = (f"<div>{sent_to}</div><pre>{escape(raw.question)}</pre>"
                                       f"<div>{answer}</div><pre>{escape(raw.answer)}</pre>"
                                       f"<div>{terminal} <code>{escape(self.lab.dns.dig(domain))}</code></div>")
        except DnsLookupError as exc:
            self.records = []
            self.result_html.value = html.note(str(exc), "error")
            return []
        self.result_html.value = self._render(domain)
        return self.records

    def _render(self, domain: str) -> str:
        if not self.records:
            return html.note(_("{domain} has no MX record: a sender uses the domain's own address instead "
                               "(the implicit MX, RFC 5321 section 5.1)").format(domain=domain))
        if any(r.is_null for r in self.records):
            return html.note(_("{domain} publishes a Null MX (0 .): it accepts no mail at all (RFC 7505)").format(
                domain=domain), "error")
        rows = [(str(r.preference), r.exchange, ", ".join(r.addresses) or _("(no address)")) for r in self.records]
        best = self.records[0].preference
        tied = sum(r.preference == best for r in self.records)
        first = (_("a relay tries <b>{exchange}</b> first (lowest preference wins)").format(
                     exchange=escape(self.records[0].exchange)) if tied == 1 else
                 _("{count} servers share the lowest preference {preference}: a relay picks among them at random").format(
                     count=tied, preference=best))
        headers = [_("preference"), _("exchange"), _("addresses")]
        return html.table(headers, rows, highlight=0) + f"<div>{first}</div>"
