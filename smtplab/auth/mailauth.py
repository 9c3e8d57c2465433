"""Sender authentication: SPF (pyspf), DKIM (dkimpy) and DMARC (authheaders), answered by the lab DNS.

The receiving MX calls `evaluate()` for each message: SPF checks the connecting address against the
MAIL FROM domain's policy (RFC 7208), DKIM verifies the signature with the key published in DNS
(RFC 6376), DMARC asks whether either passed *aligned* with the From header the reader sees, and what
the domain wants done otherwise (RFC 7489). The verdict is written as an Authentication-Results header
(RFC 8601). The libraries normally ask the system resolver; here every lookup goes to the lab DNS
(`auth/lab_dns.py` `LabDns`, re-exported here).
"""

from __future__ import annotations

import base64
import functools
import threading
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from typing import Any

import authheaders
import authheaders.dmarc_lookup
import dkim
import spf
from authheaders import dmarc_per_from
from authheaders.dmarc_lookup import DMARCException
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..errors import LibraryMismatch
from ..i18n import _
from .lab_dns import LabDns

__all__ = ["LabDns", "AuthVerdict", "evaluate", "dkim_sign", "new_dkim_key", "public_record"]

_local = threading.local()
_system_spf_lookup = spf.DNSLookup


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    lab_dns: LabDns | None = getattr(_local, "dns", None)
    if lab_dns is None:  # not inside a lab evaluation: behave exactly like pyspf
        return _system_spf_lookup(name, qtype, strict, timeout)
    return lab_dns.spf_records(name, qtype)



@functools.lru_cache(maxsize=1024)
def _org_domain(domain: str) -> str:
    return _original_org_domain(domain)


# authheaders re-reads the whole public suffix list (~60 ms) for every organizational-domain question;
# the answer for a name never changes while the lab runs.
_original_org_domain = authheaders.dmarc_lookup.get_org_domain


_PURE_PYTHON_RSA_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=64)
def _openssl_key(modulus: int, public_exponent: int, private_exponent: int, prime1: int, prime2: int,
                 exponent1: int, exponent2: int, coefficient: int) -> rsa.RSAPrivateKey:
    public = rsa.RSAPublicNumbers(public_exponent, modulus)
    numbers = rsa.RSAPrivateNumbers(prime1, prime2, private_exponent, exponent1, exponent2, coefficient, public)
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def _rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """RSASSA-PKCS1-v1_5 (RFC 8017 8.2.1) through OpenSSL: the same bytes as dkimpy's pure-Python version.

    PKCS #1 v1.5 signatures are deterministic, so the result is byte-identical; OpenSSL takes ~1 ms
    where dkimpy's Python big-integer arithmetic takes ~10 ms of the event loop for every message.
    """
    algorithm = _HASHES.get(digest.name.lower())
    if algorithm is None:
        return _PURE_PYTHON_RSA_SIGN(digest, private_key)
    key = _openssl_key(*(private_key[field] for field in (
        "modulus", "publicExponent", "privateExponent", "prime1", "prime2", "exponent1", "exponent2",
        "coefficient")))
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm()))


_PURE_PYTHON_RSA_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify


@functools.lru_cache(maxsize=64)
def _openssl_public_key(modulus: int, public_exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(public_exponent, modulus).public_key()


def _rsa_verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 8.2.2) through OpenSSL: the same verdict as dkimpy's.

    dkimpy's pure-Python version spends ~1 ms per message turning big integers into bytes a byte at a
    time. Anything OpenSSL would judge differently from dkimpy (a signature shorter than the key, a
    key OpenSSL will not load, a hash it does not know) goes to dkimpy's own code, as before.
    """
    algorithm = _HASHES.get(digest.name.lower())
    modulus = public_key["modulus"]
    if algorithm is None or len(signature) != (modulus.bit_length() + 7) // 8:
        return bool(_PURE_PYTHON_RSA_VERIFY(digest, signature, public_key))
    try:
        key = _openssl_public_key(modulus, public_key["publicExponent"])
    except ValueError:
        return bool(_PURE_PYTHON_RSA_VERIFY(digest, signature, public_key))
    try:
        key.verify(bytes(signature), digest.digest(), padding.PKCS1v15(), Prehashed(algorithm()))
    except InvalidSignature:
        return False
    return True


_hooks_lock = threading.Lock()
_hooks_set = False


def _set_hooks() -> None:
    """Point pyspf, authheaders and dkimpy at the lab's functions, on first use (never at import).

    None of them takes these as parameters: pyspf looks records up through its module-level DNSLookup,
    authheaders calls its module-level get_org_domain, and dkimpy imports the RSA functions by name into
    its package. Each is replaced only when it is still the very function this module was written
    against; anything else means another version or another patch, and the lab says so.
    """
    global _hooks_set
    with _hooks_lock:
        if _hooks_set:
            return
        expected = ((spf, "DNSLookup", _system_spf_lookup, _spf_lookup),
                    (authheaders.dmarc_lookup, "get_org_domain", _original_org_domain, _org_domain),
                    (authheaders, "get_org_domain", _original_org_domain, _org_domain),
                    (dkim, "RSASSA_PKCS1_v1_5_sign", _PURE_PYTHON_RSA_SIGN, _rsa_sign),
                    (dkim, "RSASSA_PKCS1_v1_5_verify", _PURE_PYTHON_RSA_VERIFY, _rsa_verify))
        for module, name, original, ours in expected:
            if getattr(module, name) not in (original, ours):
                raise LibraryMismatch(
                    _("{function} is not the function smtplab was written against (another version of {library}, "
                      "or another patch): install the versions in smtplab's requirements.txt").format(
                        function=f"{module.__name__}.{name}", library=module.__name__.split(".")[0]))
        for module, name, _original, ours in expected:
            setattr(module, name, ours)
        _hooks_set = True


@dataclass(frozen=True)
class AuthVerdict:
    """What the receiving MX concluded about who really sent a message."""

    spf: str  # pass, fail, softfail, neutral, none, temperror, permerror
    spf_reason: str
    spf_identity: str  # the MAIL FROM address (or postmaster@HELO) SPF was checked for
    dkim: str  # pass, fail, none
    dkim_domain: str  # d= of the signature
    dmarc: str  # pass, fail, none
    dmarc_policy: str  # none, quarantine, reject ('' without a DMARC record)
    from_domain: str  # the domain in the From header (what the reader sees)
    authserv_id: str

    @property
    def disposition(self) -> str:
        """What DMARC asks the receiver to do with this message: accept, quarantine or reject."""
        if self.dmarc == "fail" and self.dmarc_policy in ("quarantine", "reject"):
            return self.dmarc_policy
        return "accept"

    @property
    def header(self) -> str:
        """The Authentication-Results header field value (RFC 8601)."""
        parts = [self.authserv_id]
        spf_property = f"smtp.mailfrom={self.spf_identity}" if self.spf_identity else ""
        reason = f" ({self.spf_reason})" if self.spf_reason else ""
        parts.append(f"spf={self.spf}{reason} {spf_property}".strip())
        if self.dkim == "none":
            parts.append("dkim=none (no signature)")
        else:
            parts.append(f"dkim={self.dkim} header.d={self.dkim_domain}")
        policy = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        parts.append(f"dmarc={self.dmarc}{policy} header.from={self.from_domain}")
        return ";\r\n\t".join(parts)

    def explain(self) -> str:
        """Say in plain words what each check found."""
        # The results (pass, fail, none...) and SPF's reason (pyspf's words) are the protocol's: kept as they are.
        dkim = (_("DKIM {result} for {domain}") if self.dkim_domain else _("DKIM {result} (the message is not signed)"))
        dmarc = (_("DMARC {result} for From domain {domain}, policy p={policy}") if self.dmarc_policy
                 else _("DMARC {result} for From domain {domain} (no DMARC record)"))
        lines = [
            f"SPF {self.spf}: {self.spf_reason}",
            dkim.format(result=self.dkim, domain=self.dkim_domain),
            dmarc.format(result=self.dmarc, domain=self.from_domain, policy=self.dmarc_policy),
            _("so the receiver will: {disposition}").format(disposition=self.disposition),
        ]
        return "\n".join(lines)


def evaluate(content: bytes, *, client_ip: str, mail_from: str, helo: str, authserv_id: str,
             lab_dns: LabDns) -> AuthVerdict:
    """Run SPF, DKIM and DMARC for one received message (blocking: run it off the event loop)."""
    _set_hooks()
    _local.dns = lab_dns
    try:
        sender = mail_from if mail_from and mail_from != "<>" else f"postmaster@{helo}"
        spf_identity = sender.lower()
        try:
            spf_result, spf_reason = spf.check2(i=client_ip, s=sender, h=helo, querytime=10)
        except Exception as exc:  # a broken record is the sender's problem, not a crash
            spf_result, spf_reason = "temperror", str(exc)
        dkim_result, dkim_domain = _dkim(content, lab_dns)
        from_domain = _from_domain(content)
        dmarc_result, policy = _dmarc(from_domain, spf_result, spf_identity, dkim_result, dkim_domain, lab_dns)
    finally:
        _local.dns = None
    return AuthVerdict(spf_result, spf_reason, spf_identity, dkim_result, dkim_domain, dmarc_result, policy,
                       from_domain, authserv_id)


def _dkim(content: bytes, lab_dns: LabDns) -> tuple[str, str]:
    if b"dkim-signature:" not in content.split(b"\r\n\r\n", 1)[0].lower():
        return "none", ""
    verifier = dkim.DKIM(content)
    try:
        ok = verifier.verify(dnsfunc=lab_dns.dkim_txt)
    except dkim.DKIMException:
        ok = False
    domain = verifier.signature_fields.get(b"d", b"").decode("ascii", "replace") if verifier.signature_fields else ""
    return ("pass" if ok else "fail"), domain


def _from_domain(content: bytes) -> str:
    head = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    values: list[str] = []
    current = None
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if current == "from":
                values[-1] += line
            continue
        name, sep, value = line.partition(":")
        current = name.strip().lower() if sep else None
        if current == "from":
            values.append(value)
    addresses = [a for _, a in getaddresses(values)] or [parseaddr(v)[1] for v in values]
    return addresses[0].rpartition("@")[2].lower() if addresses else ""


def _dmarc(from_domain: str, spf_result: str, spf_identity: str, dkim_result: str, dkim_domain: str,
           lab_dns: LabDns) -> tuple[str, str]:
    if not from_domain:
        return "none", ""
    spf_arg = _Result(spf_result, smtp_mailfrom=spf_identity)
    dkim_arg = _Result(dkim_result, header_d=dkim_domain) if dkim_result != "none" else None
    try:
        result, _comment, _domain, policy = dmarc_per_from(from_domain, spf_result=spf_arg, dkim_result=dkim_arg,
                                                           dnsfunc=lab_dns.dmarc_txt)
    except DMARCException:
        return "permerror", ""
    return (result or "none"), (policy or "")


class _Result:
    """The attributes authheaders reads from SPF/DKIM results."""

    def __init__(self, result: str, smtp_mailfrom: str = "", header_d: str = "") -> None:
        self.result = result
        self.smtp_mailfrom = smtp_mailfrom
        self.header_d = header_d


def new_dkim_key(bits: int = 2048) -> bytes:
    """Return a new RSA private key (PEM) for DKIM signing (RFC 8301: at least 1024, better 2048 bits)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@functools.lru_cache(maxsize=64)
def public_record(private_pem: bytes) -> str:
    """Return the DKIM TXT record value that publishes the public half of `private_pem` (RFC 6376 3.6.1)."""
    # The lab made the key itself: skip the ~80 ms RSA consistency check on loading.
    key = serialization.load_pem_private_key(private_pem, password=None, unsafe_skip_rsa_key_validation=True)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def dkim_sign(content: bytes, *, domain: str, selector: str, private_key: bytes) -> bytes:
    """Return `content` with a DKIM-Signature header prepended (relaxed/relaxed, rsa-sha256)."""
    _set_hooks()
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]
    signature = dkim.sign(content, selector.encode(), domain.encode(), private_key,
                          include_headers=headers, canonicalize=(b"relaxed", b"relaxed"))
    return signature + content
