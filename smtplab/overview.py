"""The lab at a glance: its hosts, ports and users as data (`lab.describe()`), as text and as an HTML table.

What the learner's `Lab` shows of itself (`repr(lab)`, the table a notebook displays), kept here so the
facade holds the learner's methods only. Reads the lab's public attributes.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from .i18n import _
from .scenario import WELL_KNOWN_PORTS

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["describe_lab", "lab_repr", "lab_html"]


def describe_lab(lab: Lab) -> dict[str, Any]:
    """Hosts, ports, users and files as plain data (what `python -m smtplab up --json` prints)."""
    return {
        "directory": str(lab.directory),
        "ca_file": lab.ca_file,
        "dns": {"name": lab.dns.name, "address": lab.dns.address, "port": lab.dns.port},
        "hosts": {
            h.name: {"address": h.address, "ports": dict(h.ports), "up": h.is_up} for h in lab.hosts.values()
        },
        "users": {u.address: {"password": u.password, "login": u.login} for u in lab.users.values()},
    }


def lab_repr(lab: Lab) -> str:
    """One line: running or stopped, how many hosts and users, where the DNS listens."""
    state = _("running") if lab.running else _("stopped")
    if not hasattr(lab, "dns"):
        return f"<Lab {state}>"
    return "<Lab " + _("{state}: {hosts} hosts, {users} users, dns {address}:{port}").format(
        state=state, hosts=len(lab.hosts), users=len(lab.users), address=lab.dns.address,
        port=lab.dns.port) + ">"


def lab_html(lab: Lab) -> str:
    """The table of hosts (addresses, ports, up or down) and users a notebook shows for a lab."""
    def on_the_internet(service: str) -> str:
        return escape(_("{port} on the Internet").format(port=WELL_KNOWN_PORTS.get(service, "?")))

    up, down = escape(_("up")), escape(_("down"))
    rows = "".join(
        f"<tr><td>{escape(h.name)}</td><td>{h.address}</td><td>"
        + ", ".join(f'<span title="{on_the_internet(s)}">{s} {p}</span>' for s, p in h.ports.items())
        + f"</td><td>{up if h.is_up else f'<b>{down}</b>'}</td></tr>"
        for h in lab.hosts.values()
    )
    users = "".join(f"<tr><td>{escape(u.address)}</td><td><code>{escape(u.password)}</code></td></tr>"
                    for u in lab.users.values())
    host_headers = "".join(f"<th>{escape(h)}</th>" for h in (_("host"), _("address"), _("ports"), _("state")))
    user_headers = "".join(f"<th>{escape(h)}</th>" for h in (_("user"), _("password")))
    state = escape(_("running") if lab.running else _("stopped"))
    note = escape(_("submissions, imaps, pop3s: TLS from the first byte (RFC 8314); submission, imap, pop3: "
                    "STARTTLS/STLS first. Hover a port for its number on the Internet."))
    return (
        f"<b>smtplab</b> ({state}) &mdash; DNS {lab.dns.address}:{lab.dns.port}"
        f"<table><tr>{host_headers}</tr>{rows}</table><small>{note}</small>"
        f"<table><tr>{user_headers}</tr>{users}</table>"
    )
