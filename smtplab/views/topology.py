"""A map of the lab: providers, their hosts and services, the lab DNS and the MX records it publishes.

Each provider is a box (cluster) holding its hosts (address, services, lab port and the port the
service has on the internet), its Maildir store and its MX records with their preferences; the users'
mail clients sit outside. A host that is down is greyed out and marked. Give a message and its path
is drawn on top, numbered in order: submission, MX lookup, every relay attempt (failed ones in red,
dashed), delivery into the Maildir, IMAP reads.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from typing import Any

import graphviz

from ..i18n import _
from ..scenario import WELL_KNOWN_PORTS
from .journey import Leg, legs, message_events, message_key, participant_labels
from .ladder import FILLS, FONT, TONES
from .render import Diagram

__all__ = ["topology", "topology_dot"]

PATH = "#0969da"
FAILED = TONES["fail"]
FAINT = "#8c959f"
FIT_SIZE = "9.35,1000"  # inches: the widest picture a notebook cell shows at full size (~900 px)
TEXT_WIDTH = 110  # characters of a line of the text alternative: a notebook cell's width


def _id(kind: str, name: str) -> str:
    return f"{kind} {name}"  # no colon: in DOT edges "a:b" means node a, port b


def _escape(text: str, record: bool = False) -> str:
    text = text.replace("\\", "\\\\")
    return re.sub(r"([{}|<>])", r"\\\1", text) if record else text


def _record(title: str, lines: list[str]) -> str:
    """A box label: the title, a rule, the details. Plain DOT: the WebAssembly Graphviz has no HTML labels."""
    details = "".join(_escape(line, True) + "\\n" for line in lines)
    return graphviz.nohtml("{" + _escape(title, True) + (f"|{details}" if details else "") + "}")


def _plain(lines: list[str], end: str = "\\n") -> str:
    return graphviz.nohtml("".join(_escape(line) + end for line in lines))


def _host_lines(host: Any) -> list[str]:
    lines = [host.address]
    for service in host.services:
        lines.append(_("{service} port {port} ({usual})").format(
            service=service, port=host.ports.get(service, "?"), usual=WELL_KNOWN_PORTS.get(service, "?")))
    if not host.is_up:
        lines.append(_("DOWN: connections refused"))
    for fault in getattr(host, "faults", ()):
        lines += textwrap.wrap(_("fault: {fault}").format(fault=fault.describe()), width=32, subsequent_indent="  ")
    return lines


def _mx_lines(provider: Any) -> list[str]:
    if not provider.mx:
        return [_("no MX record:"), _("mail goes to the A record of {domain}").format(domain=provider.domain)]
    if any(name == "." for _pref, name in provider.mx):
        return [_("MX 0 . (Null MX, RFC 7505):"), _("this domain accepts no mail")]
    return [f"MX {pref} {name}" for pref, name in sorted(provider.mx)]


def _users_label(users: list[str]) -> str:
    if len(users) == 1:
        return _record(_("{user}'s client").format(user=users[0].split("@")[0]), users)
    return _record(_("mail clients"), users)


def _legend(g: Any, with_path: bool, below: str) -> None:
    """Small grey notes under the last row (`below`: a node of it), saying how to read the picture.

    An invisible edge puts them one rank lower: beside the bottom row they made the picture wider.
    """
    notes = [_("port N (25): the lab's port (the service's port on the internet)"), _("red dashed box: host down")]
    if with_path:
        notes += [_("blue: the message's path, in order;"), _("red dashed: a failed attempt")]
    g.node("legend", _plain(notes, "\\l"), shape="plaintext", style="", fontsize="10", fontcolor=FAINT)
    g.edge(below, "legend", style="invis")


def topology_dot(lab: Any, path: list[Leg] | None = None, title: str = "") -> str:
    """Return the DOT source of the lab's topology, with `path` (legs of one message) drawn on top.

    Top to bottom: the first provider's users and hosts, then the next providers'. Only edges that
    keep that flow acyclic constrain the layout (Graphviz 2.4x fails on some cycles through clusters);
    the others are drawn with constraint=false. A leg of the path that follows a drawn edge (submits,
    delivers, reads) highlights that edge instead of adding one beside it.
    """
    g = graphviz.Digraph("topology")
    # size: a lab of three providers or more, drawn, is still wider than a notebook cell (~900 px = 9.35 in
    # at 72 pt/in); Graphviz then scales it down (about 0.8 for notebook 07's lab), never up.
    g.attr(rankdir="TB", nodesep="0.3", ranksep="0.5", pad="0.2", bgcolor="white", fontname=FONT, fontsize="14",
           size=FIT_SIZE,
           labelloc="t", labeljust="l", label=_plain([title], "\\l") if title else "")
    g.attr("node", fontname=FONT, fontsize="11", shape="Mrecord", style="filled", fillcolor=FILLS["server"])
    g.attr("edge", fontname=FONT, fontsize="9", color=FAINT, fontcolor=FAINT, arrowsize="0.7")
    scenario = lab.scenario
    dns_id = _id("host", lab.dns.name)
    zones = ", ".join(p.domain for p in scenario.providers)
    g.node(dns_id, _record(lab.dns.name, [lab.dns.address, _("{service} port {port} ({usual})").format(
        service="dns", port=lab.dns.port, usual=53),
        *textwrap.wrap(_("zones: {zones}").format(zones=zones), width=32, subsequent_indent="  ")]),
           fillcolor=FILLS["dns"])
    nodes = {lab.dns.name: dns_id}
    edges: dict[tuple[str, str, str], dict[str, str]] = {}  # (kind, node, node) -> attributes; drawn last
    first_users = [address for address, _password in scenario.providers[0].users]
    if first_users:  # declared first, so that dot puts the sender at the left
        g.node(_id("mua", scenario.providers[0].domain), _users_label(first_users), fillcolor=FILLS["client"])

    for index, provider in enumerate(scenario.providers):
        domain = provider.domain
        users = [address for address, _password in provider.users]
        store, mx_node, mua = _id("maildir", domain), _id("mx", domain), _id("mua", domain)
        with g.subgraph(name=f"cluster_{index}") as box:
            box.attr(label=domain, style="rounded,filled", fillcolor="#f6f8fa",
                     color="#d0d7de", fontsize="13", margin="10")
            box.node(mx_node, _plain([_("{domain} MX records:").format(domain=domain), *_mx_lines(provider)]), shape="note", style="filled",
                     fillcolor=FILLS["dns"], fontsize="10")
            for spec in provider.hosts:
                host = lab.hosts[spec.name]
                nodes[host.name] = _id("host", host.name)
                box.node(_id("host", host.name), _record(host.name, _host_lines(host)), fontcolor="black" if host.is_up else FAILED,
                         style="filled" if host.is_up else "filled,dashed",
                         fillcolor=FILLS["server"] if host.is_up else FILLS["down"],
                         color="black" if host.is_up else FAILED, penwidth="1" if host.is_up else "2")
            if users:
                box.node(store, _plain([_("Maildir"), *[u.split("@")[0] for u in users]]), shape="cylinder",
                         style="filled", fillcolor="white", fontsize="10")
        if index:  # the DNS publishes the MX records (the first provider's: see "zones", colour)
            edges[("zone", dns_id, mx_node)] = dict(style="dotted", arrowhead="none")
        for pref, name in provider.mx:
            if name in lab.hosts:
                edges[("mx", mx_node, _id("host", name))] = dict(label=f"MX {pref}", style="dotted", arrowhead="none")
        # The first provider's users send (at the top), the others' read (at the bottom): edges point
        # down the page, and dir=back draws the arrow the other way where the flow goes up.
        up = {"dir": "back"} if index == 0 else {}
        down = {} if index == 0 else {"dir": "back"}
        for spec in provider.hosts:
            host_id = _id("host", spec.name)
            if users and "smtp" in spec.services:
                edges[("delivers", host_id, store)] = dict(label=_("delivers"))
            if users and "imap" in spec.services:
                pair = (host_id, store) if index == 0 else (store, host_id)  # IMAP host beside the users
                edges[("reads", *pair)] = dict(label=_("reads"), **up)
        if users:
            nodes[f"mua:{domain}"] = mua
            g.node(mua, _users_label(users), fillcolor=FILLS["client"])
            for spec in provider.hosts:
                host_id = _id("host", spec.name)
                pair = (mua, host_id) if index == 0 else (host_id, mua)
                if "submission" in spec.services:
                    edges[("submits", *pair)] = dict(label=_("submits (SMTP)"), style="dashed", **down)
                if "imap" in spec.services:
                    edges[("imap", *pair)] = dict(label=_("reads (IMAP)"), style="dashed", **up)
    first = scenario.providers[0]
    for spec in first.hosts:  # the relay; with a message's path drawn, its legs show that instead
        if "submission" in spec.services and path is None:
            edges[("lookup", _id("host", spec.name), dns_id)] = dict(style="dotted", label=_("MX lookup"),
                                                                     arrowhead="none")
            for other in scenario.providers[1:]:
                edges[("relay", _id("host", spec.name), _id("mx", other.domain))] = dict(
                    style="dashed", label=_("relays to"), constraint="false")
    order = {f"mua:{first.domain}": 0, lab.dns.name: 3}
    for index, provider in enumerate(scenario.providers):
        order.update({spec.name: 2 + 2 * index for spec in provider.hosts})
        if index:
            order[f"mua:{provider.domain}"] = 100

    merged: dict[tuple[str, str, str, bool, str], list[int]] = {}
    for number, leg in enumerate(path or (), start=1):  # a retry that went the same way: one edge, two numbers
        merged.setdefault((leg.source, leg.target, leg.protocol, leg.ok, leg.detail if not leg.ok else ""),
                          []).append(number)
    for (source, target, protocol, ok, detail), numbers in merged.items():
        forward = order.get(target, -1) > order.get(source, 1000)
        _draw_leg(g, lab, numbers, Leg(source, target, protocol, ok, detail, 0), nodes, edges, forward)
    for (_kind, tail, head), attributes in edges.items():
        g.edge(tail, head, **attributes)
    for upper, lower in itertools.pairwise(scenario.providers):
        # Stack the providers' boxes straight down, the lab DNS beside them: hung under the DNS, each box
        # moved right of the one before, and the picture was wider than a notebook (~900 px).
        # From the lowest node of the box above: its Maildir for the first provider (its users send, at the
        # top), the users' client for the next ones (they read, below their box).
        if upper.users:
            bottom = _id("maildir" if upper is scenario.providers[0] else "mua", upper.domain)
        else:
            bottom = _id("host", upper.hosts[-1].name) if upper.hosts else ""
        if bottom:
            g.edge(bottom, _id("mx", lower.domain), style="invis", weight="10")
    last = scenario.providers[-1]
    bottom = _id("mua", last.domain) if last.users else _id("host", last.hosts[-1].name) if last.hosts else dns_id
    _legend(g, path is not None, bottom)
    return g.source


def _numbers(numbers: list[int]) -> str:
    """"1, 3, 4, 5, 6" as "1, 3–6": a label as short as the steps it names."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _draw_leg(g: Any, lab: Any, numbers: list[int], leg: Leg, nodes: dict[str, str],
              edges: dict[tuple[str, str, str], dict[str, str]], forward: bool) -> None:
    for key in (leg.source, leg.target):
        if key not in nodes:  # the learner's own client, e.g. a raw session with an MX
            nodes[key] = _id("other", key)
            g.node(nodes[key], _plain([key]), fillcolor=FILLS["client"])
    source, target = nodes[leg.source], nodes[leg.target]
    number = _numbers(numbers)
    colour = PATH if leg.ok else FAILED
    style = dict(color=colour, fontcolor=colour, penwidth="2.5", fontsize="10", style="solid" if leg.ok else "dashed")
    kind = {"imap": "imap", "dns": "lookup"}.get(leg.protocol, "submits" if leg.source.startswith("mua:") else "relay")
    what = {"imap": "IMAP", "lookup": _("DNS query"), "submits": _("submission"), "relay": _("relay")}[kind]
    failure = "\n".join(textwrap.wrap(leg.detail, 28, break_on_hyphens=False)[:2])  # beside its edge: narrow
    label = f"{number}. {what}" + ("" if leg.ok else f" ×\n{failure}")
    drawn = edges.get((kind, source, target)) or edges.get((kind, target, source))
    if drawn is not None:  # follow the edge already there
        drawn.update(style, label=graphviz.escape(label))
    else:
        # Relay legs and DNS questions jump between the boxes: they must not pull them sideways (see
        # topology_dot), and their labels sit by the arrowhead (headlabel), not given room of their own
        # (as xlabels they piled up where the edges leave the relay).
        constrain = forward and kind in ("submits", "imap")
        edges[(f"leg {number}", source, target)] = dict(style, constraint=str(constrain).lower(),
                                                        **{"label" if constrain else "headlabel": graphviz.escape(label)})
    if leg.ok and kind == "relay" and leg.target in lab.hosts and "smtp" in lab.hosts[leg.target].services:
        stored = edges.get(("delivers", target, _id("maildir", lab.hosts[leg.target].domain)))
        if stored is not None:
            stored.update(style, label=_("{number}. stored").format(number=number))


def _describe(lab: Any, path: list[Leg] | None, title: str, names: dict[str, str]) -> str:
    lines = [title, _("DNS: {name} at {address} port {port} (53 on the internet)").format(
        name=lab.dns.name, address=lab.dns.address, port=lab.dns.port)]
    for provider in lab.scenario.providers:
        lines.append(_("Provider {domain}").format(domain=provider.domain))
        for spec in provider.hosts:
            host = lab.hosts[spec.name]
            services = ", ".join(_("{service} port {port} ({usual})").format(
                service=s, port=host.ports.get(s, "?"), usual=WELL_KNOWN_PORTS.get(s, "?")) for s in host.services)
            state = "" if host.is_up else " — " + _("DOWN: connections refused")
            lines.append(f"  {host.name} {host.address}: {services}{state}")
        lines.append("  " + _("MX records: {records}").format(records="; ".join(_mx_lines(provider))))
        if provider.users:
            lines.append("  " + _("users: {addresses}").format(addresses=", ".join(a for a, _password in provider.users)))
    if path is not None:
        lines.append(_("Path of the message:") if path else _("Path of the message: nothing in the trace yet"))

        def name(key: str) -> str:
            return names.get(key) or (_("mail client ({domain})").format(domain=key[4:]) if key.startswith("mua:")
                                      else key)

        for number, hop in enumerate(path, start=1):
            result = "" if hop.ok else _("FAILED: ")
            line = f"  {number}. {name(hop.source)} -> {name(hop.target)} ({hop.protocol.upper()}): {result}{hop.detail}"
            lines.append(line if len(line) <= TEXT_WIDTH else line[: TEXT_WIDTH - 1] + "…")  # a DKIM key: 460 characters
    return "\n".join(lines)


def topology(lab: Any, message: Any = None, *, title: str | None = None) -> Diagram:
    """Draw the lab's topology; with `message` (queue id, Message-ID or SendResult), its path on top."""
    path: list[Leg] | None = None
    names: dict[str, str] = {}
    if message is not None:
        events = message_events(lab.trace, message)
        path = legs(events, lab)
        names = participant_labels(events, lab)
    if title is None:
        title = (_("Path of message {id}").format(id=message_key(message)) if message is not None
                 else _("Lab topology"))
    return Diagram("topology", title, topology_dot(lab, path, title), _describe(lab, path, title, names))
