"""The lab's own certificate authority (trustme) and the TLS contexts built from it.

Every lab gets a fresh CA; each host gets a certificate for its name. The lab's own clients trust
the CA; `ca_file` is the path a learner hands to curl (`--cacert`), swaks (`--tls-ca-path`) or
openssl s_client (`-CAfile`).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trustme

from ..files import make_private_dir, write_private

__all__ = ["LabCA"]


class LabCA:
    """A throw-away certificate authority for one lab."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        make_private_dir(directory)
        self.ca_file = directory / "ca.pem"
        key_file = directory / "ca-key.pem"
        if self.ca_file.exists() and key_file.exists():
            # A persistent lab keeps its CA, so a mail client told to trust it once keeps working.
            self._ca = trustme.CA.from_pem(self.ca_file.read_bytes(), key_file.read_bytes())
        else:
            self._ca = trustme.CA(organization_name="smtplab teaching CA", organization_unit_name="smtplab")
            # Keys are 0600 from their creation (files.py): a classmate who read one could impersonate
            # every host of the lab to its owner's clients.
            write_private(key_file, self._ca.private_key_pem.bytes())
            write_private(self.ca_file, self._ca.cert_pem.bytes())
        self._server_contexts: dict[str, ssl.SSLContext] = {}

    def server_context(self, host_name: str, address: str | None = None) -> ssl.SSLContext:
        """Return a server-side context with a certificate for `host_name` (also written to disk).

        The certificate also names the host's loopback address, so clients that connect by address
        (smtplib, curl smtp://127.0.2.11) can verify it too.
        """
        if host_name not in self._server_contexts:
            names = [host_name] + ([address] if address else [])
            cert = self._ca.issue_cert(*names, common_name=host_name, organization_name="smtplab",
                                       organization_unit_name=host_name)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.keylog_filename = str(self.keylog())
            cert.configure_cert(context)
            write_private(self.directory / f"{host_name}.pem", cert.private_key_and_cert_chain_pem.bytes())
            self._server_contexts[host_name] = context
        return self._server_contexts[host_name]

    def keylog(self) -> Path:
        """The lab's TLS key log: the secrets of every TLS session the lab's servers hold (SSLKEYLOGFILE format).

        TLS keeps the wire secret with keys that only the two ends ever have: they derive them during
        the handshake and never send them. OpenSSL can write them down as it makes them, one line per
        secret, `LABEL <client random> <secret>` (the NSS key log format, what the SSLKEYLOGFILE
        variable of browsers writes); Python exposes that as `SSLContext.keylog_filename`. With this
        file, Wireshark decrypts every session in a capture of the lab and shows the SMTP, IMAP and
        POP3 inside STARTTLS (`lab.pcap` writes the lines of the captured sessions beside the capture).

        Real servers never do this: whoever holds the file reads every session it lists, passwords
        included, as if there were no TLS. The lab does it because its sessions carry only its own
        made-up users, and seeing the inside of TLS is the lesson. The file is created 0600 inside the
        lab's private directory and holds only the sessions of the lab's own server contexts.
        """
        path = self.directory / "tls-keys.log"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # 0600 before OpenSSL writes
        return path

    def close(self) -> None:
        """Stop writing the key log: OpenSSL keeps the file open as long as a server context lives."""
        for context in self._server_contexts.values():
            context.keylog_filename = None  # type: ignore[assignment]

    def client_context(self) -> ssl.SSLContext:
        """Return a client context that trusts exactly this lab's CA and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def relay_context(self) -> ssl.SSLContext:
        """Return the context MTAs use towards an MX: opportunistic TLS (RFC 3207, RFC 7435).

        Encrypt whenever the MX offers STARTTLS, but do not insist on a certificate naming the host
        connected to, as Postfix's default (`smtp_tls_security_level = may`) and every MTA without
        MTA-STS (RFC 8461) or DANE (RFC 7672) does: an MX reached by its domain's address (implicit
        MX) or under another name still gets the mail, encrypted. (Such TLS stops an eavesdropper,
        not an active attacker who strips STARTTLS: that is what MTA-STS and DANE are for.)
        """
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
