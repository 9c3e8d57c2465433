"""`Lab` is the learner's facade; what the servers call lives on `lab.services` (smtplab.services)."""

from __future__ import annotations

import smtplab
from smtplab.auth.policy import PolicyServices
from smtplab.mail.postmaster import Postmaster
from smtplab.services import Services

# What a notebook, the docs or the widgets call on a lab: it all stays on the facade.
LEARNER_NAMES = {"send", "trace", "ladder", "topology", "messages", "queue", "queue_item", "clock", "host", "hosts",
                 "users", "user", "dns", "session", "imap", "pop3", "pcap", "wire", "lookup_mx", "dig", "mark",
                 "wait_for_delivery", "mitm", "mta_sts", "dane", "describe", "stop", "start", "scenario",
                 "directory", "ca_file", "submission_host", "imap_host", "services"}


def _members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


SERVICE_NAMES = _members(Postmaster) | _members(PolicyServices) | {"guard", "login_throttle", "smtp_port",
                                                                    "mailbox_changed", "client_context"}


def test_a_learner_tab_completes_no_service_method(lab: smtplab.Lab) -> None:
    visible = {name for name in dir(lab) if not name.startswith("_")}
    # trace and hosts are the learner's too; everything else the servers call is not on the facade.
    assert not (visible & SERVICE_NAMES) - {"trace", "hosts"}, sorted(visible & SERVICE_NAMES)
    assert LEARNER_NAMES <= visible, sorted(LEARNER_NAMES - visible)


def test_the_servers_get_the_services_object(lab: smtplab.Lab) -> None:
    assert isinstance(lab.services, Services)
    assert SERVICE_NAMES <= set(dir(lab.services)), sorted(SERVICE_NAMES - set(dir(lab.services)))
    alice = next(iter(lab.users.values()))
    assert lab.services.check_password(alice.address, alice.password)
    assert not lab.services.check_password(alice.address, alice.password + "x")
    assert lab.services.hosts is lab.hosts and lab.services.trace is lab.trace
