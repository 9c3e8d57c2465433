"""DKIM signatures made through OpenSSL are the very bytes dkimpy's own pure-Python RSA would make."""

from __future__ import annotations

import base64

import dkim
import dkim.crypto

from smtplab.auth import mailauth

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Lunch?\r\n"
           b"Date: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <lunch@example.org>\r\n\r\n"
           b"Shall we meet at one?\r\n")


def test_the_lab_signs_through_openssl() -> None:
    assert dkim.RSASSA_PKCS1_v1_5_sign is mailauth._rsa_sign


def test_openssl_signature_is_byte_identical_to_dkimpy(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    key = mailauth.new_dkim_key()
    monkeypatch.setattr(dkim.time, "time", lambda: 1795852800.0)  # same t= tag in both signatures
    for body in (MESSAGE, MESSAGE.replace(b"one?", b"two?"), MESSAGE + b"\xc3\xa9t\xc3\xa9\r\n"):
        fast = mailauth.dkim_sign(body, domain="example.org", selector="lab", private_key=key)
        monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", dkim.crypto.RSASSA_PKCS1_v1_5_sign)
        slow = mailauth.dkim_sign(body, domain="example.org", selector="lab", private_key=key)
        monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", mailauth._rsa_sign)
        assert fast == slow


def test_openssl_signature_verifies_against_the_published_key() -> None:
    key = mailauth.new_dkim_key(1024)
    record = mailauth.public_record(key).encode()
    signed = mailauth.dkim_sign(MESSAGE, domain="example.org", selector="lab", private_key=key)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record if name == b"lab._domainkey.example.org." else None)
    tampered = signed.replace(b"one?", b"six?")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)


def test_the_lab_verifies_through_openssl() -> None:
    assert dkim.RSASSA_PKCS1_v1_5_verify is mailauth._rsa_verify


def test_openssl_verification_gives_dkimpys_verdict() -> None:
    import hashlib

    key = mailauth.new_dkim_key()
    public = dkim.crypto.parse_public_key(base64.b64decode(mailauth.public_record(key).split("p=")[1]))
    private = dkim.crypto.parse_pem_private_key(key)
    pure = dkim.crypto.RSASSA_PKCS1_v1_5_verify
    for text in (b"one", b"two", b"\xc3\xa9t\xc3\xa9"):
        digest = hashlib.sha256(text)
        good = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, private))
        flipped = good[:-1] + bytes([good[-1] ^ 1])
        short = good.lstrip(b"\x00")[1:]  # not the key's length: RFC 8017 says invalid, and so does dkimpy
        other = hashlib.sha256(text + b"!")
        for case_digest, signature in ((digest, good), (digest, flipped), (digest, short), (other, good)):
            assert mailauth._rsa_verify(case_digest, signature, public) == bool(pure(case_digest, signature, public))
        assert mailauth._rsa_verify(digest, good, public) is True
        assert mailauth._rsa_verify(digest, flipped, public) is False
