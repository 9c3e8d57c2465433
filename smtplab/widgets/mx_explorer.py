"""The MX explorer: which servers accept mail for a domain, in which order, and the raw DNS exchange."""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as w

from ..errors import DnsLookupError
from ..net.dns_lookup import MXRecord, lookup_mx
from . import html
from .summary import StaticSummary


class MxExplorer(StaticSummary, w.VBox):
    """Look up a domain's MX records in the lab DNS (or, optionally, the real one)."""

    def __init__(self, lab: Any, domain: str = "example.net") -> None:
        self.lab = lab
        self.domain = w.Text(value=domain, description="domain")
        self.real = w.Checkbox(value=False, description="real-world DNS (needs Internet)", indent=False)
        self.lookup_button = w.Button(description="Look up MX", button_style="primary", icon="search")
        self.result_html = w.HTML()
        self.raw_html = w.HTML()
        self.records: list[MXRecord] = []
        self.lookup_button.on_click(lambda _b: self.lookup())
        super().__init__([
            w.HBox([self.domain, self.lookup_button, self.real]),
            self.result_html,
            w.Accordion(children=[self.raw_html], titles=("the raw DNS question and answer",)),
        ])


    def summary(self) -> str:
        found = ", ".join(f"{r.preference} {r.exchange}" for r in self.records) or "not looked up yet"
        return f"MX explorer: the MX records of {self.domain.value}: {found}."

    def lookup(self) -> list[MXRecord]:
        """Look the domain up and show the records, the first one a relay would try highlighted."""
        domain = self.domain.value.strip().rstrip(".")
        self.raw_html.value = ""
        try:
            if self.real.value:
                self.records = lookup_mx(domain, timeout=3.0)
                self.raw_html.value = html.note("raw messages are shown for the lab DNS only")
            else:
                self.records = self.lab.lookup_mx(domain)
                raw = self.lab.dig(domain, "MX")
                self.raw_html.value = (f"<div>question sent to {escape(raw.server)}:</div><pre>{escape(raw.question)}</pre>"
                                       f"<div>answer:</div><pre>{escape(raw.answer)}</pre>"
                                       f"<div>in a terminal: <code>{escape(self.lab.dns.dig(domain))}</code></div>")
        except DnsLookupError as exc:
            self.records = []
            self.result_html.value = html.note(str(exc), "error")
            return []
        self.result_html.value = self._render(domain)
        return self.records

    def _render(self, domain: str) -> str:
        if not self.records:
            return html.note(f"{domain} has no MX record: a sender uses the domain's own address instead "
                             "(the implicit MX, RFC 5321 section 5.1)")
        if any(r.is_null for r in self.records):
            return html.note(f"{domain} publishes a Null MX (0 .): it accepts no mail at all (RFC 7505)", "error")
        rows = [(str(r.preference), r.exchange, ", ".join(r.addresses) or "(no address)") for r in self.records]
        best = self.records[0].preference
        tied = sum(r.preference == best for r in self.records)
        first = (f"a relay tries <b>{escape(self.records[0].exchange)}</b> first (lowest preference wins)"
                 if tied == 1 else f"{tied} servers share the lowest preference {best}: a relay picks among them at random")
        return html.table(["preference", "exchange", "addresses"], rows, highlight=0) + f"<div>{first}</div>"
