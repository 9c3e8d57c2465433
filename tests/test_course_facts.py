"""What the course states about the world outside the lab holds: offline it says so, and invents nothing."""

from __future__ import annotations

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
