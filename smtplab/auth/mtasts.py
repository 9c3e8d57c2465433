"""MTA-STS (RFC 8461): a domain tells senders "my MX hosts do TLS with a valid certificate: insist on it".

Two halves, both real in the lab:
- the receiving domain publishes a TXT record `_mta-sts.<domain>` (`v=STSv1; id=...`) and serves the policy
  over HTTPS at `https://mta-sts.<domain>/.well-known/mta-sts.txt` (`PolicyServer`: stdlib http.server in a
  thread, with a certificate from the lab CA);
- the sending relay looks the TXT record up, fetches the policy over HTTPS (certificate checked against the
  lab CA for the name `mta-sts.<domain>`), caches it for `max_age`, and checks each MX against it
  (`StsRequirement`): in `enforce` mode an MX whose name does not match the policy, that offers no
  STARTTLS, or whose certificate does not validate for its name gets no mail: the relay defers (4.7.5).
  In `testing` mode it delivers anyway and reports the failure (TLS-RPT, RFC 8460: a daily JSON report
  to the address in the domain's `_smtp._tls` TXT record; the lab writes the failure as a note in the trace).

The lab's one liberty: HTTPS is on the lab's own port for that host (the lab's registry), not 443, because all
lab hosts share one machine; on the internet the policy host always listens on 443.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ..errors import SmtpLabError
from ..i18n import N_, _, lazy

__all__ = ["StsPolicy", "PolicyError", "PolicyServer", "parse_policy", "parse_txt", "mx_matches",
           "fetch_policy", "StsRequirement", "certificate_problem", "WELL_KNOWN"]

WELL_KNOWN = "/.well-known/mta-sts.txt"
MAX_AGE_LIMIT = 31557600  # RFC 8461 section 3.2: at most one year
MODES = ("enforce", "testing", "none")


class PolicyError(SmtpLabError):
    """An MTA-STS record or policy that does not follow RFC 8461 (the sender then treats it as absent)."""


@dataclass(frozen=True)
class StsPolicy:
    """One MTA-STS policy (RFC 8461 section 3.2)."""

    mode: str
    mx: tuple[str, ...]
    max_age: int
    version: str = "STSv1"

    def to_text(self) -> str:
        lines = [f"version: {self.version}", f"mode: {self.mode}"]
        lines += [f"mx: {pattern}" for pattern in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return "\r\n".join(lines) + "\r\n"


def parse_txt(strings: list[str]) -> str:
    """Return the policy id of an `_mta-sts` TXT record (RFC 8461 section 3.1), or raise PolicyError."""
    text = "".join(strings)
    fields = dict(part.strip().split("=", 1) for part in text.split(";") if "=" in part)
    if not text.startswith("v=STSv1") or fields.get("v") != "STSv1":
        raise PolicyError(_("not an MTA-STS record (it must start with v=STSv1): {text!r}").format(text=text))
    policy_id = fields.get("id", "")
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", policy_id):
        raise PolicyError(_("the id of an MTA-STS record is 1-32 letters and digits: {policy_id!r}").format(
            policy_id=policy_id))
    return policy_id


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy body (RFC 8461 section 3.2: `key: value` lines, CRLF or LF; unknown keys ignored)."""
    values: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(_("a policy line is 'key: value', not {line!r}").format(line=line))
        values.setdefault(key.strip(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise PolicyError(_("an MTA-STS policy starts with 'version: STSv1'"))
    mode = (values.get("mode") or [""])[0]
    if mode not in MODES:
        raise PolicyError(_("mode must be one of {modes}, not {mode!r}").format(modes=', '.join(MODES), mode=mode))
    max_age = (values.get("max_age") or [""])[0]
    if not max_age.isdigit() or int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(_("max_age is a number of seconds up to {max_age_limit}, not {max_age!r}").format(
            max_age_limit=MAX_AGE_LIMIT, max_age=max_age))
    mx = tuple(p.lower().rstrip(".") for p in values.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError(_("a policy in enforce or testing mode names its MX hosts (mx: lines)"))
    return StsPolicy(mode, mx, int(max_age))


def mx_matches(exchange: str, patterns: tuple[str, ...]) -> bool:
    """RFC 8461 section 4.1: an exact name, or `*.example.net` matching exactly one more label on the left."""
    name = exchange.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            label, _dot, rest = name.partition(".")
            if label and rest == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False


def certificate_problem(der: bytes | None, name: str, ca_file: str | Path) -> str:
    """Why the certificate `der` is not valid for `name` under the CA in `ca_file` ("" when it is).

    RFC 8461 section 4.2: the chain must lead to a trusted root and the name must match (RFC 6125).
    """
    if not der:
        return "it presented no certificate"
    roots = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    leaf = x509.load_der_x509_certificate(der)
    # The Web PKI's rules, except two criticality flags the lab CA (trustme) sets on its certificates: a
    # critical subjectAltName and extendedKeyUsage change nothing about which name and key they certify.
    ee = (ExtensionPolicy.webpki_defaults_ee()
          .require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
          .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None))
    verifier = (PolicyBuilder().store(Store(roots))
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
                .build_server_verifier(x509.DNSName(name)))
    try:
        verifier.verify(leaf, [])
    except VerificationError as exc:
        return f"its certificate is not valid for {name}: {exc}"
    return ""


def fetch_policy(domain: str, address: str, port: int, context: ssl.SSLContext, source: str | None = None,
                 timeout: float = 10.0) -> str:
    """GET the policy of `domain` over HTTPS from `address`:`port` (RFC 8461 section 3.3); return its body.

    The TLS server name and the Host header are `mta-sts.<domain>`, and the certificate must be valid for it;
    only a 200 answer counts (redirects are not followed).
    """
    host = f"mta-sts.{domain}"
    try:
        with socket.create_connection((address, port), timeout=timeout,
                                      source_address=(source, 0) if source else None) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                response = http.client.HTTPResponse(tls)
                response.begin()
                body = response.read(64 * 1024)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise PolicyError(_("could not fetch https://{host}{well_known}: {exc}").format(
            host=host, well_known=WELL_KNOWN, exc=exc)) from None
    if response.status != 200:
        raise PolicyError(_("https://{host}{well_known} answered {status} {reason}, not 200").format(
            host=host, well_known=WELL_KNOWN, status=response.status, reason=response.reason))
    if not (response.getheader("Content-Type") or "").startswith("text/plain"):
        raise PolicyError(_("https://{host}{well_known} is not text/plain").format(host=host, well_known=WELL_KNOWN))
    return body.decode("utf-8", "replace")


@dataclass
class StsRequirement:
    """What an MTA-STS policy asks of one MX, checked by the relay while it talks to that MX."""

    domain: str
    exchange: str
    policy: StsPolicy
    ca_file: str
    report: Callable[[str], None]  # TLS-RPT (RFC 8460) as a note in the trace, in testing mode
    refused: str = ""  # set when the MX itself is not in the policy: no connection at all
    summary: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.summary = lazy(N_("MTA-STS policy of {domain}: mode {mode}, mx {mx}"), domain=self.domain,
                            mode=self.policy.mode, mx=", ".join(self.policy.mx))
        if not mx_matches(self.exchange, self.policy.mx):
            self.refused = self._fail(f"{self.exchange} is not an MX the policy names")

    def refusal(self, tls: ssl.SSLSocket | None) -> str | None:
        """After EHLO (tls None: no STARTTLS offered) or after STARTTLS: the reply to defer with, or None."""
        if tls is None:
            return self._fail(lazy(N_("{exchange} offered no STARTTLS"), exchange=self.exchange)) or None
        problem = certificate_problem(tls.getpeercert(binary_form=True), self.exchange, self.ca_file)
        return (self._fail(f"{self.exchange}: {problem}") or None) if problem else None

    def _fail(self, what: str) -> str:
        if self.policy.mode == "enforce":
            # RFC 8461 section 5: do not deliver; RFC 3463 4.7.5 "cryptographic failure".
            return f"451 4.7.5 MTA-STS policy enforce for {self.domain}: {what}; not delivered in clear text"
        if self.policy.mode == "testing":
            self.report(lazy(N_("TLS-RPT (RFC 8460) for {domain}: MTA-STS policy testing: {what}; delivered anyway, "
                                "failure reported"), domain=self.domain, what=what))
        return ""


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "smtplab-mta-sts/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.server.policy_text.encode() if self.path == WELL_KNOWN else b""  # type: ignore[attr-defined]
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain" if body else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # no output from a background thread (ipykernel would print it in the wrong cell)


class PolicyServer:
    """The `mta-sts.<domain>` host: HTTPS on loopback, serving one policy at /.well-known/mta-sts.txt."""

    def __init__(self, domain: str, address: str, context: ssl.SSLContext, policy: StsPolicy) -> None:
        self.domain = domain
        self.host_name = f"mta-sts.{domain}"
        self.policy = policy
        self._httpd = http.server.ThreadingHTTPServer((address, 0), _Handler)
        self._httpd.daemon_threads = True
        # The handshake runs in the request's own thread (on its first read), so a client that connects and
        # says nothing cannot hold up the others.
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self._httpd.policy_text = policy.to_text()  # type: ignore[attr-defined]
        self.address, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"smtplab-{self.host_name}",
                                        daemon=True)
        self._thread.start()

    def serve(self, policy: StsPolicy) -> None:
        """Serve another policy from now on (publish a new TXT id too, or senders keep their cached one)."""
        self.policy = policy
        self._httpd.policy_text = policy.to_text()  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
