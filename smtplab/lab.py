"""Run a whole mail network on loopback: start, describe, stop.

The servers live on one asyncio loop in a daemon thread, never on the notebook kernel's own loop
(a blocking cell would freeze them). The public methods are synchronous and safe from any thread.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import weakref
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .auth.tlspolicy import Attacker, DowngradeKit
from .clock import VirtualClock
from .errors import LabNotRunning, ScenarioError, UnknownConnection, UnknownHost, UnknownMessage, UnknownUser
from .files import directory_error, make_private_dir, warn_if_exposed
from .hosts import DnsInfo, Host, User, sibling_address
from .i18n import _, resolve_language, set_language
from .mail.queue import QueueItem
from .net.client import SendResult, open_imap, open_pop3, send_from_lab
from .net.dns_lookup import DigResult, MXRecord, dig_async, lab_resolver, lookup_mx_async
from .net.faults import FaultTable
from .net.session import SmtpSession, open_session
from .net.wire import WireStore, WireTap
from .network import Network
from .overview import describe_lab, lab_html, lab_repr
from .scenario import Scenario
from .services import Services
from .trace.ring import Trace

__all__ = ["Lab", "Host", "User", "DnsInfo", "start", "current"]

T = TypeVar("T")
WIRE_KEEP = 200  # SMTP connections whose raw bytes are kept for lab.wire() and lab.pcap()
# The other services' connections kept for lab.pcap() (DNS: one per question over UDP).
WIRE_KEEP_OTHERS = {"imap": 200, "pop3": 200, "dns": 2000}
_current: Lab | None = None
_all_labs: weakref.WeakSet[Lab] = weakref.WeakSet()
_start_lock = threading.Lock()
# RFC 5321 section 4.5.3.2.7: a server should wait at least 5 minutes for the next command.
SMTP_IDLE_TIMEOUT = 300.0


class Lab:
    """A running miniature mail network. Use `smtplab.start()` to get one.

    This is the learner's side of the lab: hosts, users, `send`, `trace`, `queue`, diagrams. What the
    servers ask of the lab (passwords, mailboxes, the queue, faults) is `lab.services` (smtplab.services).
    """

    def __init__(self, scenario: Scenario | Mapping[str, Any] | None = None,
                 directory: str | Path | None = None, ports: int | None = None, lang: str | None = None) -> None:
        # The language is checked before anything is made; it becomes the process's language when the lab starts.
        self.language = resolve_language(lang)
        self._lang = lang
        scenario = Scenario.coerce(scenario)
        scenario.validate()  # a Scenario built by hand too: its names become folders, checked before any is made
        self.scenario = scenario
        self._temporary = directory is None
        # The lab directory holds passwords, keys and mail: 0700 (mkdtemp's mode too), every file 0600.
        self.directory = Path(tempfile.mkdtemp(prefix="smtplab-")) if directory is None else Path(directory)
        try:
            make_private_dir(self.directory)
        except OSError as exc:
            error = directory_error(exc, self.directory)
            if error is None:
                raise
            raise error from None
        warn_if_exposed(self.directory)
        self.clock = VirtualClock()
        self.trace = Trace(self.clock.now)
        self.hosts: dict[str, Host] = {}
        self.users: dict[str, User] = {}
        self.dns: DnsInfo
        self.running = False
        self.faults = FaultTable()
        self._wires = WireStore(WIRE_KEEP_OTHERS, default=WIRE_KEEP)
        # Ports: `ports=BASE` pins them (a taken one is an error); else the lab directory's ports.json
        # gives last start's (a taken one moves, with a warning); else free ones.
        self._port_base = ports
        # What the servers ask of the lab; it shares hosts and users with this facade.
        self.services = Services(scenario, self.clock, self.trace, self.faults, self.hosts, self.users)
        self._network: Network | None = None  # the servers (smtplab/network.py), made by `start`
        # Seconds an SMTP server waits for a client's next command before it says 421 and hangs up;
        # read when a connection opens, so changing it on a running lab affects new connections.
        self.smtp_idle_timeout = SMTP_IDLE_TIMEOUT

    # --- start / stop ---
    def start(self) -> Lab:
        if self._lang is not None:
            set_language(self._lang)  # kernel-wide: the views, widgets and exercises of this lab speak it too
        network = self._network = Network(self, self._port_base, self._keep_wire)
        try:
            network.prepare()
            self.ca, self.ca_file = network.ca, network.ca_file
            self._call(network.start())
            self.dns = network.dns
        except OSError as exc:
            self.stop()
            # A read-only, full or foreign --dir is one sentence that says what to do, not a traceback.
            error = directory_error(exc, self.directory)
            if error is None:
                raise
            raise error from None
        except BaseException:
            self.stop()
            raise
        self.running = True
        self.clock.subscribe(self.services.clock_advanced)
        _all_labs.add(self)
        return self

    def stop(self) -> None:
        """Stop every server and thread of the lab; remove its directory if it was temporary."""
        global _current
        self.clock.unsubscribe(self.services.clock_advanced)
        if self._network is not None:
            self._network.stop()
        self.services.close()
        self.running = False
        with _start_lock:
            if _current is self:
                _current = None
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        services = getattr(self, "services", None)
        if services is not None and services.loop is not None:
            try:
                self.stop()
            except Exception:
                pass

    # --- what a learner looks at ---
    def host(self, name: str) -> Host:
        """Return the host called `name` (e.g. 'mx1.example.net'); a short name like 'mx1' works too."""
        name = name.lower().rstrip(".")
        if name in self.hosts:
            return self.hosts[name]
        matches = [h for n, h in self.hosts.items() if n.split(".", 1)[0] == name]
        if len(matches) == 1:
            return matches[0]
        raise UnknownHost(_("no host {name!r} in this lab; hosts: {hosts}").format(
            name=name, hosts=', '.join(self.hosts)))

    def user(self, address: str) -> User:
        try:
            return self.users[address.lower()]
        except KeyError:
            raise UnknownUser(_("no user {address!r} in this lab; users: {users}").format(
                address=address, users=', '.join(self.users))) from None

    def submission_host(self, address: str) -> Host:
        """Return the host where `address`'s provider accepts submissions."""
        domain = address.rpartition("@")[2].lower()
        for host in self.hosts.values():
            if host.domain == domain and "submission" in host.services:
                return host
        raise UnknownHost(_("{domain} has no submission host in this lab").format(domain=domain))

    def imap_host(self, address: str) -> Host:
        domain = address.rpartition("@")[2].lower()
        for host in self.hosts.values():
            if host.domain == domain and "imap" in host.services:
                return host
        raise UnknownHost(_("{domain} has no IMAP host in this lab").format(domain=domain))

    @property
    def queue(self) -> list[QueueItem]:
        """Snapshot of the relay queue: every message, its recipients' states and replies."""
        return self.services.require_relay().items()

    def queue_item(self, queue_id: str) -> QueueItem:
        """Return the queue entry of one message (by the id in '250 ... queued as ID')."""
        item = self.services.require_relay().get(queue_id)
        if item is None:
            raise UnknownMessage(_("no message {queue_id!r} in the queue; the ids are in lab.queue ({ids}), and in "
                                   "the 'queued as ID' of the reply to DATA").format(
                queue_id=queue_id, ids=", ".join(i.queue_id for i in self.queue) or _("empty")))
        return item

    def wait_for_delivery(self, queue_id: str | None = None, timeout: float = 30.0) -> bool:
        """Block until no delivery attempt is running (for one message or all)."""
        return self.services.require_relay().wait_settled(queue_id, timeout)

    def lookup_mx(self, domain: str) -> list[MXRecord]:
        """Ask the lab DNS for `domain`'s MX records, lowest preference first (the queries are traced)."""
        self._require_running()
        return self._call(lookup_mx_async(domain, lab_resolver(self.dns.address, self.dns.port)))

    def dig(self, name: str, rdtype: str = "MX") -> DigResult:
        """Ask the lab DNS one question, like `dig`; the result shows the raw question and answer."""
        self._require_running()
        return self._call(dig_async(name, rdtype, self.dns.address, self.dns.port))

    def messages(self, address: str, folder: str = "INBOX") -> list[Any]:
        """Read a user's mailbox straight from disk (no IMAP): a list of email.message.EmailMessage."""
        self._require_running()  # a stopped temporary lab has no mailboxes left to read
        user = self.user(address)
        return self.services.stores[user.domain].messages(user.address, folder)

    def mark(self) -> int:
        """Return a trace mark: `lab.trace.since(mark)` is everything after this moment."""
        return self.trace.mark()

    def ladder(self, message_id: Any = None, *, conn: str | list[str] | None = None, since: int | None = None,
               events: list[Any] | None = None, title: str | None = None, full: bool = False) -> Any:
        """Draw a ladder diagram: one message end to end (queue id, Message-ID or SendResult), one or
        more connections (`conn="smtp-1"`), everything since `lab.mark()`, or given `events`.

        Compact by default (TLS handshakes and EHLO lists folded, fits a notebook); `full=True` draws every line."""
        from .views.ladder import ladder_of  # the views layer, loaded when a diagram is asked for

        return ladder_of(self, message_id, conn=conn, since=since, events=events, title=title, full=full)

    def topology(self, message_id: Any = None, *, title: str | None = None) -> Any:
        """Draw the lab's providers, hosts, DNS and MX records; with `message_id`, that message's path."""
        from .views.topology import topology

        return topology(self, message_id, title=title)

    def send(self, sender: str, recipients: str | list[str], subject: str = "Hello", body: str = "Hello!\n", *,
             password: str | None = None, headers: Mapping[str, str] | None = None, wait: bool = True,
             notify: str | list[str] | None = None, ret: str | None = None, envid: str | None = None) -> SendResult:
        """Submit a message as `sender` like a real mail client (STARTTLS + AUTH on the submission port).

        With `wait`, return once the relay has tried to deliver it (delivered, deferred or bounced).
        Delivery status notifications (RFC 3461): `notify` "SUCCESS", "DELAY", "FAILURE" (comma-separated
        or a list) or "NEVER"; `ret` "FULL" or "HDRS" (a failure returns the whole message or its headers);
        `envid` an id of yours that every notification quotes (Original-Envelope-Id).
        Raises SendError with the server's reply when the submission server refuses.
        """
        self._require_running()
        return send_from_lab(self, sender, recipients, subject, body, password=password, headers=headers, wait=wait,
                             notify=notify, ret=ret, envid=envid)

    # --- the TLS downgrade lesson (smtplab/net/mitm.py, smtplab/auth/: mtasts.py, dane.py, tlspolicy.py) ---
    def mitm(self, target: str = "example.net") -> Attacker:
        """Put a STARTTLS-stripping attacker on the path from the relay to an MX host (`"mx1.example.net"`),
        or to every MX host of a domain (`"example.net"`, the default: no backup MX escapes it).

        DNS is untouched; the relay's connections to those hosts go through the attacker (a loopback address of
        its own, a transparent proxy: the MX still sees the relay's address), which deletes STARTTLS from the
        EHLO reply. `.stop()` takes it off the path.
        """
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == target), None)
        names = [n for _, n in provider.mx if n in self.hosts] if provider is not None else [self.host(target).name]
        hosts = [self.hosts[n] for n in names if "smtp" in self.hosts[n].ports]
        if not hosts:
            raise UnknownHost(_("{target} runs no SMTP service to attack; try an MX such as mx1.example.net").format(
                target=target))
        return self._require_downgrade().start_attacker([(h.name, h.address, h.ports["smtp"]) for h in hosts],
                                                        sibling_address(hosts[0].address, 66))

    def mta_sts(self, domain: str = "example.net", mode: str = "enforce", *, mx: list[str] | None = None,
                max_age: int = 86400) -> Any:
        """Publish an MTA-STS policy (RFC 8461) for `domain`: the `_mta-sts` TXT record and an HTTPS host
        `mta-sts.<domain>` serving it; the relay then fetches it and enforces it. Returns the policy server."""
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == domain), None)
        if provider is None:
            raise ScenarioError(_("no provider serves {domain}; try one of {domains}").format(
                domain=domain, domains=", ".join(p.domain for p in self.scenario.providers)))
        names = tuple(mx) if mx is not None else tuple(name for _, name in provider.mx if name != ".")
        first = next((self.hosts[n].address for n in names if n in self.hosts), self.dns.address)
        return self._require_downgrade().publish_mta_sts(domain, mode, names, sibling_address(first, 80), max_age)

    def dane(self, domain: str = "example.net") -> list[str]:
        """Sign `domain`'s zone with DNSSEC and publish a TLSA record for each of its MX hosts (RFC 7672);
        the relay gets the zone's key as its trust anchor and checks TLSA from then on. Returns the records."""
        self._require_running()
        provider = next((p for p in self.scenario.providers if p.domain == domain), None)
        if provider is None:
            raise ScenarioError(_("no provider serves {domain}").format(domain=domain))
        exchanges = [name for _, name in provider.mx if name in self.hosts and "smtp" in self.hosts[name].ports]
        for name in exchanges:
            self.ca.server_context(name, self.hosts[name].address)  # its certificate exists from its start
        return self._require_downgrade().publish_dane(domain, exchanges)

    def _require_downgrade(self) -> DowngradeKit:
        if self._network is None:
            raise LabNotRunning(_("this lab is stopped; start a new one with smtplab.start()"))
        return self._network.require_downgrade()

    def session(self, host: str, service: str | None = None, *, timeout: float = 5.0,
                source: str | None = None) -> SmtpSession:
        """Open a raw SMTP conversation with `host` (submission port if it has one, else smtp)."""
        self._require_running()
        return open_session(self, host, service, timeout, source=self.host(source).address if source else None)

    def imap(self, address: str, *, starttls: bool = True) -> Any:
        """Return an imaplib.IMAP4 connection logged in as `address` on its provider's IMAP host."""
        self._require_running()
        return open_imap(self, address, starttls=starttls)

    def pop3(self, address: str) -> Any:
        """Return a poplib.POP3 connection logged in as `address` on its provider's POP3 port (after STLS).

        The maildrop stays locked for other POP3 sessions until `.quit()` (which also removes what was
        deleted with `.dele(n)`, RFC 1939 section 6) or until the connection closes (then nothing is removed).
        """
        self._require_running()
        return open_pop3(self, address)

    def describe(self) -> dict[str, Any]:
        """Return hosts, ports, users and files as plain data (what `python -m smtplab up --json` prints)."""
        return describe_lab(self)

    def __repr__(self) -> str:
        return lab_repr(self)

    def _repr_html_(self) -> str:
        return lab_html(self)

    def wire(self, conn: str) -> WireTap:
        """What an eavesdropper saw of SMTP connection `conn`: clear text before STARTTLS, TLS records after."""
        tap = self._wires.get(conn)
        if tap is None:
            raise UnknownConnection(_("no SMTP connection {conn!r} (kept: the last {wire_keep}); ids are in "
                                      "lab.trace.connections('smtp')").format(conn=conn, wire_keep=WIRE_KEEP))
        return tap

    def _keep_wire(self, tap: WireTap) -> None:
        tap.clock = self.clock.now  # the capture's times are the trace's: lab time
        self._wires.add(tap)

    def pcap(self, path: str | Path, message: Any = None) -> Any:
        """Write the lab's traffic (or one message's: queue id, Message-ID or SendResult) as a pcapng file
        that Wireshark and tshark read, and the TLS key log beside it; return both paths (`Capture`).
        See `smtplab.views.pcap` for what is in them."""
        from .views.pcap import write_capture

        self._require_running()  # a stopped temporary lab has no key log any more
        return write_capture(self, path, message, self._wires.taps(), self.ca.keylog())

    # --- internals ---
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return self.services.call(coro, timeout)

    def _require_running(self) -> None:
        if self.services.loop is None:
            raise LabNotRunning(_("this lab is stopped; start a new one with smtplab.start()"))


def start(scenario: Scenario | Mapping[str, Any] | None = None, directory: str | Path | None = None,
          ports: int | None = None, lang: str | None = None) -> Lab:
    """Start a lab (the default scenario unless one is given) and return it, running.

    A lab started earlier with `start()` in this process is stopped first, so re-running a
    notebook cell never leaves servers behind. Give `directory` to keep mailboxes, the queue and the
    ports (a lab started again there listens where it did). `ports=BASE` pins every port: the DNS on
    BASE, the n-th host's services on BASE + 10*n + 0 smtp, 1 submission, 2 submissions, 3 imap,
    4 imaps, 5 pop3, 6 pop3s (raises PortInUse when one is taken).

    `lang` ("en", "es") is the language of everything the learner reads (explanations, feedback, widgets,
    errors; never the protocol lines): else the language chosen earlier in this kernel, else SMTPLAB_LANG, else
    the locale, else English (smtplab.i18n). An unknown one raises UnknownLanguage before anything starts.
    """
    global _current
    resolve_language(lang)
    with _start_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.stop()
    lab = Lab(scenario, directory, ports, lang=lang).start()
    with _start_lock:
        _current = lab
    return lab


def current() -> Lab | None:
    """Return the lab started last by `start()` (None when stopped)."""
    return _current


@atexit.register
def _stop_all() -> None:
    for lab in list(_all_labs):
        try:
            lab.stop()
        except Exception:
            pass
