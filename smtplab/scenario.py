"""What a lab is made of: providers, their hosts and services, MX records and users.

A scenario is plain data, so a teacher can describe another topology as a dict (or JSON) and hand it
to `smtplab.start(scenario=...)`. `Scenario.default()` is the lab drawn in docs/architecture.md
("The default lab").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ScenarioError
from .i18n import _

__all__ = ["HostSpec", "ProviderSpec", "Scenario", "SERVICES"]

# Services a host can run. "smtp" is the inbound MX (port 25 on the internet), "submission" the
# authenticated MSA for the provider's own users (port 587), "imap" the mailbox access server (143).
SERVICES = ("smtp", "submission", "imap")
# Each service also listens under TLS from the first byte (RFC 8314) and an IMAP host serves POP3 too;
# the extra listeners have IANA service names: submissions (465), imaps (993), pop3 (110), pop3s (995).
LISTENERS = {"smtp": ("smtp",), "submission": ("submission", "submissions"),
             "imap": ("imap", "imaps", "pop3", "pop3s")}
WELL_KNOWN_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993, "pop3": 110,
                    "pop3s": 995, "dns": 53}


# Deliberate misconfigurations a teacher can switch on for one host, to show what the defaults prevent.
# open_relay: the MX passes on mail for any domain; plaintext_auth: submission takes passwords without
# TLS; append_footer: the submission host adds a footer to every message AFTER signing it (as some
# disclaimer gateways do), which breaks the DKIM signature on the way.
HOST_OPTIONS = ("open_relay", "plaintext_auth", "append_footer")

# What a provider publishes and checks, unless the scenario says otherwise.
DEFAULT_SECURITY: dict[str, Any] = {
    "spf": "auto",  # "auto": "v=spf1 ip4:<each sending host> -all"; a record string; or None
    "dkim": True,  # sign outgoing mail at the submission host and publish the key
    "dmarc": "v=DMARC1; p=none",  # a record string, or None
    "verify": True,  # the MX checks SPF, DKIM and DMARC and adds Authentication-Results
    "dnsbl": ["bl.lab"],  # blocklist zones the MX consults (RFC 5782)
    "spam": "score",  # "score": add X-Spam-Score/Report only; "filter": also Junk or refuse; None: off
}


@dataclass(frozen=True)
class HostSpec:
    """A machine of a provider and the services it runs."""

    name: str
    services: tuple[str, ...]
    options: tuple[str, ...] = ()  # any of HOST_OPTIONS


@dataclass(frozen=True)
class ProviderSpec:
    """A mail provider: one domain, its hosts, MX records and users."""

    domain: str
    hosts: tuple[HostSpec, ...]
    mx: tuple[tuple[int, str], ...]  # (preference, exchange); may be empty (implicit MX) or (0, ".")
    users: tuple[tuple[str, str | None], ...]  # (address, fixed password or None to generate)
    records: tuple[tuple[str, str, str], ...] = ()  # extra (name, type, rdata) zone records
    a_records: tuple[tuple[str, str], ...] = ()  # extra (name, host name) A records, e.g. the apex
    security: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_SECURITY))

    def host_names(self) -> list[str]:
        return [h.name for h in self.hosts]


@dataclass(frozen=True)
class Scenario:
    """A whole lab topology."""

    providers: tuple[ProviderSpec, ...]
    dns_name: str = "dns.lab"
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    blocklist: Mapping[str, str] = field(default_factory=dict)  # host name or address -> reason, in bl.lab

    @classmethod
    def default(cls) -> Scenario:
        """Return the lab drawn in docs/architecture.md: example.org (alice), example.net (bob, two MX)."""
        return cls.from_dict(
            {
                "description": "alice@example.org writes to bob@example.net",
                "providers": [
                    {
                        "domain": "example.org",
                        "hosts": {
                            "smtp.example.org": ["submission", "smtp"],
                            "imap.example.org": ["imap"],
                        },
                        "mx": {"smtp.example.org": 10},
                        "users": ["alice"],
                    },
                    {
                        "domain": "example.net",
                        "hosts": {
                            "smtp.example.net": ["submission"],
                            "mx1.example.net": ["smtp"],
                            "mx2.example.net": ["smtp"],
                            "imap.example.net": ["imap"],
                        },
                        "mx": {"mx1.example.net": 10, "mx2.example.net": 20},
                        "users": ["bob"],
                    },
                ],
            }
        )

    @classmethod
    def security(cls, policy: str = "reject") -> Scenario:
        """The default lab plus mallory@evil.example, who forges alice's address from her own host.

        example.org publishes SPF, signs with DKIM and asks for DMARC `policy` (none, quarantine or
        reject); evil.example publishes nothing and its host is on the lab's blocklist (bl.lab) only
        when a notebook puts it there.
        """
        data = cls.default().to_dict()
        data["description"] = "alice, bob, and mallory who pretends to be alice"
        data["providers"][0]["security"] = {**DEFAULT_SECURITY, "dmarc": f"v=DMARC1; p={policy}", "spam": "filter"}
        data["providers"][1]["security"] = {**DEFAULT_SECURITY, "spam": "filter"}
        data["providers"].append({
            "domain": "evil.example",
            "hosts": {"mail.evil.example": ["submission", "smtp", "imap"]},
            "mx": {"mail.evil.example": 10},
            "users": ["mallory"],
            "security": {**DEFAULT_SECURITY, "spf": None, "dkim": False, "dmarc": None},
        })
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, scenario: Scenario | Mapping[str, Any] | None) -> Scenario:
        """`scenario` as a Scenario: None is the default one, a dict is read by `from_dict` (not yet validated)."""
        if scenario is None:
            return cls.default()
        if isinstance(scenario, Mapping):
            return cls.from_dict(scenario)
        if not isinstance(scenario, Scenario):
            raise ScenarioError(_("scenario must be a Scenario, a dict like Scenario.default().to_dict(), or None"))
        return scenario

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build a scenario from plain data (see `Scenario.default` for the shape) and check it."""
        if not isinstance(data, Mapping) or "providers" not in data:
            raise ScenarioError(_("a scenario needs a 'providers' list, e.g. Scenario.default().to_dict()"))
        providers = tuple(_provider(p) for p in data["providers"])
        scenario = cls(
            providers=providers,
            dns_name=str(data.get("dns_name", "dns.lab")).lower().rstrip("."),
            description=str(data.get("description", "")),
            options=dict(data.get("options", {})),
            blocklist={str(k).lower(): str(v) for k, v in dict(data.get("blocklist", {})).items()},
        )
        scenario.validate()
        return scenario

    def to_dict(self) -> dict[str, Any]:
        """Return the plain-data form, the inverse of `from_dict`."""
        return {
            "description": self.description,
            "dns_name": self.dns_name,
            "options": dict(self.options),
            "blocklist": dict(self.blocklist),
            "providers": [
                {
                    "domain": p.domain,
                    "hosts": {h.name: {"services": list(h.services), "options": list(h.options)} if h.options
                              else list(h.services) for h in p.hosts},
                    "mx": [[pref, name] for pref, name in p.mx],
                    "users": {addr: pw for addr, pw in p.users},
                    "records": [list(r) for r in p.records],
                    "a_records": [list(r) for r in p.a_records],
                    "security": dict(p.security),
                }
                for p in self.providers
            ],
        }

    def validate(self) -> None:
        """Raise ScenarioError, naming the fix, if the topology cannot work."""
        if not self.providers:
            raise ScenarioError(_("a scenario needs at least one provider"))
        # Names become folders and files (mail/<domain>/<user>, tls/<host>.pem): checked before any is made.
        _check_domain_name("dns_name", self.dns_name)
        if not isinstance(self.options.get("allow_other_users", False), bool):
            raise ScenarioError(_("options.allow_other_users must be true or false (got {allow_other_users!r})").format(
                allow_other_users=self.options['allow_other_users']))
        for index, p in enumerate(self.providers):
            _check_domain_name(f"providers[{index}].domain", p.domain)
            for host in p.hosts:
                _check_domain_name(f"providers[{index}].hosts", host.name)
            for address, _password in p.users:
                _check_local_part(f"providers[{index}].users", address)
        domains = [p.domain for p in self.providers]
        if len(set(domains)) != len(domains):
            raise ScenarioError(_("each provider needs its own domain; got {domains}").format(domains=domains))
        names: list[str] = [self.dns_name]
        for p in self.providers:
            names += p.host_names()
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ScenarioError(_("host names must be unique; repeated: {duplicates}").format(
                duplicates=sorted(duplicates)))
        all_hosts = {h.name: h for p in self.providers for h in p.hosts}
        for p in self.providers:
            for host in p.hosts:
                bad = set(host.services) - set(SERVICES)
                if bad:
                    raise ScenarioError(_("{name}: unknown service(s) {bad}; use {services}").format(
                        name=host.name, bad=sorted(bad), services=SERVICES))
                odd = set(host.options) - set(HOST_OPTIONS)
                if odd:
                    raise ScenarioError(_("{name}: unknown option(s) {odd}; use {host_options}").format(
                        name=host.name, odd=sorted(odd), host_options=HOST_OPTIONS))
            unknown = set(p.security) - set(DEFAULT_SECURITY)
            if unknown:
                raise ScenarioError(_("{domain}: unknown security setting(s) {unknown}; use {default_security}").format(
                    domain=p.domain, unknown=sorted(unknown), default_security=sorted(DEFAULT_SECURITY)))
            for pref, exchange in p.mx:
                if exchange == ".":
                    continue
                if exchange in all_hosts and "smtp" not in all_hosts[exchange].services:
                    raise ScenarioError(
                        _("MX {pref} {exchange} of {domain}: that host runs no 'smtp' service, so mail for the domain "
                          "could never be delivered there").format(pref=pref, exchange=exchange, domain=p.domain)
                    )
            for address, _password in p.users:
                if not address.endswith("@" + p.domain):
                    raise ScenarioError(_("user {address} must belong to the provider's domain {domain}").format(
                        address=address, domain=p.domain))
            if p.users and not any("imap" in h.services for h in p.hosts):
                raise ScenarioError(_("{domain} has users but no host running 'imap' to read their mail").format(
                    domain=p.domain))
            if p.users and not any("smtp" in h.services for h in p.hosts):
                raise ScenarioError(_("{domain} has users but no host running 'smtp' to receive their mail").format(
                    domain=p.domain))

    @property
    def allow_other_users(self) -> bool:
        """True when the lab serves every Unix user of the machine (a teacher's shared demo), not only its own
        (`options: {"allow_other_users": true}`; see smtplab/net/guard.py)."""
        return self.options.get("allow_other_users") is True

    def provider_of(self, domain: str) -> ProviderSpec | None:
        domain = domain.lower().rstrip(".")
        return next((p for p in self.providers if p.domain == domain), None)


def _provider(data: Mapping[str, Any]) -> ProviderSpec:
    try:
        domain = str(data["domain"]).lower().rstrip(".")
    except (KeyError, TypeError):
        raise ScenarioError(_("every provider needs a 'domain', e.g. {'domain': 'example.com', ...}")) from None
    raw_hosts = data.get("hosts", {})
    if isinstance(raw_hosts, Mapping):
        host_items = list(raw_hosts.items())
    else:
        host_items = [(h["name"], h.get("services", [])) for h in raw_hosts]
    hosts = []
    for name, services in host_items:
        name = str(name).lower().rstrip(".")
        if "." not in name:
            name = f"{name}.{domain}"
        options: list[str] = []
        if isinstance(services, Mapping):  # {"services": [...], "options": [...]}
            options = [str(o) for o in services.get("options", [])]
            services = services.get("services", [])
        if isinstance(services, str):
            services = [services]
        hosts.append(HostSpec(name=name, services=tuple(str(s) for s in services), options=tuple(options)))
    raw_mx = data.get("mx", {})
    mx_items: Sequence[Any] = list(raw_mx.items()) if isinstance(raw_mx, Mapping) else list(raw_mx)
    mx: list[tuple[int, str]] = []
    for item in mx_items:
        if isinstance(raw_mx, Mapping):
            name, pref = item
        else:
            pref, name = item
        name = str(name).lower()
        if name != "." :
            name = name.rstrip(".")
            if "." not in name:
                name = f"{name}.{domain}"
        try:
            mx.append((int(pref), name))
        except (TypeError, ValueError):
            raise ScenarioError(_("MX preference for {name} must be a number (0-65535), got {pref!r}").format(
                name=name, pref=pref)) from None
    raw_users = data.get("users", [])
    user_items = list(raw_users.items()) if isinstance(raw_users, Mapping) else [(u, None) for u in raw_users]
    users = []
    for user, password in user_items:
        address = str(user).lower() if "@" in str(user) else f"{str(user).lower()}@{domain}"
        users.append((address, None if password is None else str(password)))
    records = tuple(tuple(str(x) for x in r) for r in data.get("records", []))
    a_records = tuple(tuple(str(x) for x in r) for r in data.get("a_records", []))
    for r in records:
        if len(r) != 3:
            raise ScenarioError(_("a record is [name, type, data], got {record}").format(record=list(r)))
    security = dict(DEFAULT_SECURITY)
    security.update(dict(data.get("security", {})))
    return ProviderSpec(
        domain=domain, hosts=tuple(hosts), mx=tuple(mx), users=tuple(users),
        records=records, a_records=a_records, security=security,  # type: ignore[arg-type]
    )


# RFC 5321 section 4.5.3.1: a local part is at most 64 octets, a domain 255 (a DNS name 253 as text).
_LOCAL_MAX = 64
_NAME_MAX = 253
_LOCAL_PUNCTUATION = "._+-="
# Files the IMAP server keeps beside the users' Maildirs in the provider's folder (pymap's users, passwords
# and state files): a user with such a name would be those files.
RESERVED_LOCAL_PREFIXES = ("pymap-", "tmp-pymap-", "dovecot")


def _check_domain_name(field_name: str, name: str) -> None:
    """A DNS name of letters, digits and hyphens (RFC 1123 section 2.1), never a path."""
    labels = name.split(".")
    good = 0 < len(name) <= _NAME_MAX and all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isalnum() or c == "-" or c == "_" for c in label) for label in labels)
    if not good:
        raise ScenarioError(_("{field_name}: {name!r} is not a domain name: use labels of letters, digits and hyphens "
                              "joined by dots, e.g. 'example.net' or 'mx1.example.net'").format(
            field_name=field_name, name=name))


def _check_local_part(field_name: str, address: str) -> None:
    """A mailbox name that is also a safe folder name: letters, digits and . _ + - = inside (RFC 5321
    dot-atom: no leading, trailing or double dot), never a path, never one of the IMAP server's files."""
    local = address.rpartition("@")[0] if "@" in address else address
    good = (0 < len(local) <= _LOCAL_MAX and local[0].isalnum() and local[-1] != "." and ".." not in local
            and all(c.isalnum() or c in _LOCAL_PUNCTUATION for c in local))
    if not good:
        raise ScenarioError(_("{field_name}: {local!r} is not a mailbox name: use letters, digits and . _ + - = "
                              "(starting with a letter or digit, up to {local_max}), e.g. 'bob' or 'ana.garcia'").format(
            field_name=field_name, local=local, local_max=_LOCAL_MAX))
    if local.startswith(RESERVED_LOCAL_PREFIXES) or local.endswith(".lock"):
        raise ScenarioError(_("{field_name}: {local!r} is the name of a file the IMAP server keeps beside the "
                              "mailboxes; choose another user name").format(field_name=field_name, local=local))
