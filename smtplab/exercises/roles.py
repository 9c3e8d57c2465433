"""Check of notebook 00's roles exercise: which part of the lab played MUA, MSA, MTA and MDA for Alice's message.

The truth comes from the lab's trace of that very message, never from a list: the MSA is the host whose
submission port accepted it, the MTAs are the hosts that queued and relayed it or received it over SMTP
from another server, the MDA is the host that stored it in Bob's Maildir (the relay queue's `via`), and
the MUA is the program at the other end of the submission connection, the notebook itself (RFC 5598
section 2 names these roles; a real provider often runs each in a program of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SmtpLabError
from ..i18n import N_, _, ngettext
from . import Feedback, failed, passed, unanswered
from ._answers import is_blank

__all__ = ["check_roles", "ROLES"]

ROLES_EXERCISE = N_("Exercise 2 · who played which role?")
ROLES = ("MUA", "MSA", "MTA", "MDA")
NOTEBOOK = "notebook"
_NOTEBOOK_WORDS = ("notebook", "client", "alice", "mua", "jupyter", "cuaderno", "cliente")



def _names(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value.strip().lower().rstrip(".")]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return [v.strip().lower().rstrip(".") for v in value if v.strip()]
    return None


def _truth(lab: Any, result: Any) -> dict[str, set[str]]:
    """Each role and the lab parts that played it for `result`, read from the trace and the relay queue."""
    events = lab.trace.for_message(result.message_id)
    smtp = [e for e in events if e.protocol == "smtp"]
    msa = {e.host for e in smtp if e.port_name == "submission"}
    relays = {e.host for e in events if e.protocol == "queue"}
    receivers = {e.host for e in smtp if e.port_name == "smtp"}
    item = lab.queue_item(result.queue_id)
    mda = {r.via for r in item.recipients if r.state == "delivered" and r.via}
    mua = {NOTEBOOK} if any(e.peer == "client" for e in smtp if e.port_name == "submission") else set()
    return {"MUA": mua, "MSA": msa, "MTA": relays | receivers, "MDA": mda}


def _host_name(name: str, lab: Any) -> str:
    """A host name as lab.hosts spells it; a short name ("mx1") stands for the one host it starts."""
    if name in lab.hosts:
        return name
    matches = [host for host in lab.hosts if host.startswith(name + ".")]
    return matches[0] if len(matches) == 1 else name


def _is_notebook(name: str, lab: Any) -> bool:
    return name not in lab.hosts and any(word in name for word in _NOTEBOOK_WORDS)


def _evidence(role: str, name: str, lab: Any, truth: dict[str, set[str]]) -> str:
    """Why `name` did not play `role` for this message: what the trace shows it did, and where to look."""
    played = [r for r, parts in truth.items() if name in parts]
    did = (_("for this message, {name} was {value}").format(name=name, value=', '.join(played)) if played else
           _("{name} does not appear in the trace of this message at all").format(name=name) if name in lab.hosts else
           _("{name!r} is neither the notebook nor a host of lab.hosts").format(name=name))
    return _("{role}: {did}. {look}").format(role=role, did=did, look=_(_LOOK[role]))


_LOOK = {
    "MUA": N_("The MUA is the program the person uses: who opened the submission connection?"),
    "MSA": N_("Which host's submission port (port_name 'submission' in the trace) took the message from its user?"),
    "MTA": N_("Every host that passed the message on from a queue, or received it over SMTP from another server, "
           "is an MTA: the queue events and the 'smtp' connections of lab.trace.for_message(...) show them."),
    "MDA": N_("Which host wrote the message into Bob's Maildir? The relay queue's 'via' and the topmost Received "
           "header say it."),
}


def check_roles(lab: Any, result: Any, roles: Any) -> Feedback:
    """`roles` maps each of MUA, MSA, MTA, MDA to the lab part(s) that played it for `result` (a host name from
    lab.hosts, or "notebook" for the mail program); checked against the trace of that message."""
    if is_blank(roles) or (isinstance(roles, Mapping) and all(is_blank(v) for v in roles.values())):
        return unanswered(_("Fill in roles: for each of MUA, MSA, MTA, MDA the host name(s) from lab.hosts, or "
                          "\"notebook\" for the mail program."), _(ROLES_EXERCISE))
    if not isinstance(roles, Mapping):
        return failed(_("roles must be a dict from role to host name(s), not a {type}.").format(type=type(roles).__name__), _(ROLES_EXERCISE))
    given = {str(k).strip().upper(): v for k, v in roles.items()}
    missing = [r for r in ROLES if is_blank(given.get(r))]
    if missing:
        return unanswered(_("Give every role a value: {value} is still empty.").format(value=', '.join(missing)), _(ROLES_EXERCISE))
    if result is None or not hasattr(result, "queue_id"):
        return failed(_("Run the cell where Alice sends her message first: this check reads its trace."), _(ROLES_EXERCISE))
    try:
        truth = _truth(lab, result)
    except (KeyError, SmtpLabError):
        return failed(_("the message {queue_id} is not in this lab's queue. Did you restart the lab after "
                      "sending it? Run the notebook again from the top.").format(queue_id=result.queue_id), _(ROLES_EXERCISE))
    problems = []
    for role in ROLES:
        names = _names(given[role])
        if names is None:
            problems.append(_("{role}: give a host name as text, or a list of them (you gave {given!r})").format(role=role, given=given[role]))
            continue
        mine = {NOTEBOOK if _is_notebook(n, lab) else _host_name(n, lab) for n in names}
        wrong = sorted(mine - truth[role])
        if wrong:
            problems.append(_evidence(role, wrong[0], lab, truth))
        elif truth[role] - mine:
            more = len(truth[role] - mine)
            problems.append(ngettext("{role}: {count} more part of the lab played this role for Alice's message. ",
                                     "{role}: {count} more parts of the lab played this role for Alice's message. ",
                                     more).format(role=role, count=more) + _(_LOOK[role]))
    if problems:
        return failed(_("Not yet. ") + " ".join(problems), _(ROLES_EXERCISE))
    return passed(_("Right. For Alice's message the notebook was the MUA (it opened the submission connection); "
                  "{value} was the MSA (its submission port checked Alice's password and "
                  "took the message); {value2} were MTAs (one queued and relayed it, "
                  "the other received it over SMTP); {value3} was also the MDA (it stored "
                  "the message in Bob's Maildir). One host can play several roles; IMAP is none of the four: it "
                  "is how Bob's MUA reads the mailbox (RFC 5598 calls the mailbox the message store).").format(value=', '.join(sorted(truth['MSA'])), value2=', '.join(sorted(truth['MTA'])), value3=', '.join(sorted(truth['MDA']))),
                  _(ROLES_EXERCISE))
