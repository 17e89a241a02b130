"""TLS for the listeners: the server context, and a self-signed pair when none is given."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d")


def write_self_signed(cert: Path, key: Path, hostname: str, days: int = 825) -> None:
    """Write a self-signed certificate for ``hostname`` (and localhost) and its key (0600)."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt.append(x509.DNSName("localhost"))
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
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
