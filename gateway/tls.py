"""TLS for the listeners: the server context, the certificate's expiry, and a self-signed
pair for a stand-in peer (``pli init`` makes a practice CA instead: ``gateway.certs``)."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.certs import server_certificate
from gateway.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: file not found: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"TLS: cannot use {cert} with {key}: {exc.reason}") from None
    return context


def certificate_expiry(cert: Path) -> float:
    """When the first certificate in ``cert`` (a PEM file) stops being valid, Unix time."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: file not found: {exc.filename}") from None
    except ValueError as exc:
        raise ConfigError(f"TLS: {cert} is not a PEM certificate: {exc}") from None
    return certificate.not_valid_after_utc.timestamp()


def utc_day(timestamp: float) -> str:
    """A certificate's date as the logs and ``pli check`` print it (UTC)."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


def write_self_signed(cert: Path, key: Path, hostname: str, days: int = 825) -> None:
    """Write a self-signed server certificate for ``hostname`` (and localhost) and its key
    (0600): an end entity, as a server's certificate must be, trusted by naming it."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = server_certificate(hostname, private.public_key(), name, private, days)
    cert.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
