"""What the course states about the world outside the lab holds: offline it says so, and invents nothing."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import dns.asyncresolver
import pytest

import smtplab


@pytest.fixture
def walled_resolver(lab: smtplab.Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's resolver is a DNS that knows only its own zones: a network with no outside DNS.

    The lab's real DNS server plays it (it refuses every name outside its zones, as such networks do),
    so the real-world path of lookup_mx meets a real server that cannot answer for the Internet.
    """
    plain = dns.asyncresolver.Resolver

    def walled(*args: object, **kwargs: object) -> dns.asyncresolver.Resolver:
        resolver = plain(configure=False)
        resolver.nameservers = [lab.dns.address]
        resolver.port = lab.dns.port
        return resolver

    monkeypatch.setattr(dns.asyncresolver, "Resolver", walled)


def test_real_world_lookup_without_internet_dns_says_so_and_invents_no_nxdomain(walled_resolver: None) -> None:
    with pytest.raises(smtplab.DnsOfflineError) as caught:
        smtplab.lookup_mx("gmail.com", timeout=2)
    assert "cannot reach the Internet's DNS" in str(caught.value)
    assert "does not exist" not in str(caught.value).split("(", 1)[0]


def test_lab_lookup_of_an_unknown_name_is_not_called_offline(lab: smtplab.Lab) -> None:
    with pytest.raises(smtplab.DnsLookupError) as caught:
        lab.lookup_mx("nothere.example.net")
    assert not isinstance(caught.value, smtplab.DnsOfflineError)


def test_an_mx_without_an_address_is_unroutable_x44_not_no_answer_x41() -> None:
    """RFC 3463: X.4.4 is "unable to route"; X.4.1 ("no answer from host") is for a host that does not answer."""
    from smtplab.exercises import nb07

    lab = nb07.start_mystery_lab()
    try:
        payment = next(item for item in lab.queue
                       if any(r.address.endswith("@bobsbikes.example") for r in item.recipients))
        status = payment.recipients[0]
        assert status.state == "deferred"
        assert status.last_reply.startswith("451 4.4.4 "), status.last_reply
        assert "has no address" in status.last_reply
    finally:
        lab.stop()


def _markdown(notebook: str, cell_id: str) -> str:
    """The text of one markdown cell of an English notebook, found by its id."""
    import nbformat

    path = Path(__file__).resolve().parent.parent / "notebooks" / notebook
    return next(c.source for c in nbformat.read(path, as_version=4).cells if c.get("id") == cell_id)


def test_lesson_04_names_the_special_use_folders_the_lab_lists(lab: smtplab.Lab) -> None:
    """04 explains LIST: every special-use attribute (RFC 6154) the server answers with is named in the text."""
    client = lab.imap("bob@example.net")
    try:
        status, lines = client.list()
    finally:
        client.logout()
    assert status == "OK"
    attributes = {flag for line in lines for flag in re.findall(r"\\(Sent|Drafts|Junk|Trash|Archive|All)\b",
                                                                line.decode())}
    assert attributes, lines
    text = _markdown("04-imap.ipynb", "nb04-16")
    assert "RFC 6154" in text
    assert not [a for a in attributes if f"`\\{a}`" not in text], (sorted(attributes), text)


def test_lesson_02_explains_the_blocklist_question_the_mx_really_asks(lab: smtplab.Lab) -> None:
    """02 prints mx1's DNS questions beside the relay's: the DNSBL name it explains is the one in the trace."""
    result = lab.send("alice@example.org", "bob@example.net", "Which MX?", "Hello Bob!")
    client = ipaddress.ip_address(lab.host("smtp.example.org").address)
    name = ".".join(reversed(str(client).split("."))) + ".bl.lab."  # RFC 5782 section 2.1
    asked = [e.text for e in lab.trace.for_message(result.message_id) if e.protocol == "dns"]
    assert any(text.startswith(f"{name} A?") for text in asked), asked
    text = _markdown("02-mx-lookup.ipynb", "02-18")
    assert f"`{name} A?`" in text and str(client) in text and "RFC 5782" in text
