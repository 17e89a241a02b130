"""The certificates Pli makes: a practice authority (CA) and the server certificate it issues.

A mail client trusts Pli's own certificate once per computer by importing the practice CA
(``tls/ca.pem``) as an authority; every server certificate issued by it afterwards, on
either port, is then trusted too, so a renewal needs nothing on the computers. The CA key
stays next to the server's (``tls/ca-key.pem``, 0600) for ``pli tls renew``.

- The server certificate is an end entity (basicConstraints CA:FALSE, key usage
  digitalSignature, extended key usage serverAuth): Thunderbird refuses a CA certificate
  presented by a server (MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY). It names the
  server's host name, localhost and 127.0.0.1, and lasts 825 days, the most Apple's
  systems accept for a server certificate.
- The CA may sign certificates for those names only (a critical name constraint), so a
  computer that trusts it trusts it for Pli and nothing else, whoever gets its key.
- ``cert.pem`` holds the server certificate followed by the CA's, the usual full chain.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import ConfigError

SERVER_DAYS = 825
CA_DAYS = 3650
_LOOPBACK = ipaddress.ip_address("127.0.0.1")


def ca_files(cert: Path) -> tuple[Path, Path]:
    """Where the practice CA of the server certificate ``cert`` lives: beside it."""
    return cert.parent / "ca.pem", cert.parent / "ca-key.pem"


@dataclass(frozen=True)
class PracticeCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def names(self) -> tuple[str, ...] | None:
        """The DNS names (and their subdomains) it may vouch for; None for any."""
        try:
            constraints = self.certificate.extensions.get_extension_for_class(
                x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return None
        return tuple(n.value for n in constraints.permitted_subtrees or ()
                     if isinstance(n, x509.DNSName))

    def permits(self, hostname: str) -> bool:
        host, names = hostname.lower().rstrip("."), self.names
        return names is None or any(host == n or host.endswith("." + n) for n in names)


@dataclass(frozen=True)
class Renewal:
    cert: Path
    valid_until: float
    ca: Path
    authority: x509.Certificate
    ca_created: bool  # a new CA: every computer must import it (once)


def server_names(hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names.append(x509.IPAddress(_LOOPBACK))
    return names


def server_certificate(hostname: str, public_key: ec.EllipticCurvePublicKey,
                       issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, days: int,
                       not_after: datetime.datetime | None = None) -> x509.Certificate:
    """An end-entity TLS server certificate for ``hostname``, localhost and 127.0.0.1,
    valid ``days`` (never past ``not_after``); self-signed when ``issuer_key`` is the
    certificate's own key."""
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    if not_after is not None:
        end = min(end, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(server_names(hostname)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(hostname: str, days: int = CA_DAYS) -> PracticeCA:
    """A CA that may vouch for ``hostname`` (and its subdomains), localhost, 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pli"),
        # Dated, so that an older installation's CA is told apart in a list.
        x509.NameAttribute(NameOID.COMMON_NAME, f"Pli {hostname} {now:%Y-%m-%d}"),
    ])
    permitted: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        permitted.append(x509.DNSName("localhost"))
    permitted.append(x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted,
                                            excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return PracticeCA(certificate, key)


def load_ca(cert: Path) -> PracticeCA | None:
    """The practice CA beside ``cert``, or None when there is none yet."""
    ca_path, key_path = ca_files(cert)
    if not ca_path.exists() and not key_path.exists():
        return None
    try:
        certificate = x509.load_pem_x509_certificate(ca_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: {exc.filename} is missing: the practice CA needs both "
                          f"{ca_path.name} and {key_path.name}") from None
    except ValueError as exc:
        raise ConfigError(f"TLS: the practice CA in {ca_path.parent} does not read: {exc}") \
            from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or \
            key.public_key() != certificate.public_key():
        raise ConfigError(f"TLS: {key_path} is not the key of {ca_path}")
    return PracticeCA(certificate, key)


def write_server_certificate(ca: PracticeCA, cert: Path, key: Path, hostname: str,
                             days: int = SERVER_DAYS) -> x509.Certificate:
    """Issue a new key and certificate for ``hostname`` and put both in place; the key
    first, so a reload between the two renames finds a mismatched pair and keeps the
    certificate it serves."""
    private = ec.generate_private_key(ec.SECP256R1())
    certificate = server_certificate(hostname, private.public_key(), ca.certificate.subject,
                                     ca.key, days, not_after=ca.certificate.not_valid_after_utc)
    _write(key, _key_bytes(private), 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM)
           + ca.certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate


def write_ca(ca: PracticeCA, cert: Path) -> list[Path]:
    """Put the practice CA of the server certificate ``cert`` in place, beside it."""
    ca_path, key_path = ca_files(cert)
    _write(key_path, _key_bytes(ca.key), 0o600)
    _write(ca_path, ca.certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return [ca_path, key_path]


def write_practice_certificates(cert: Path, key: Path, hostname: str) -> list[Path]:
    """For ``pli init``: the practice CA (unless one is there) and a server certificate
    it issues. Returns the files written."""
    written = []
    ca = load_ca(cert)
    if ca is None:
        ca = make_ca(hostname)
        written += write_ca(ca, cert)
    write_server_certificate(ca, cert, key, hostname)
    return [*written, cert, key]


def renew(cert: Path, key: Path, hostname: str, days: int = SERVER_DAYS) -> Renewal:
    """``pli tls renew``: a new server certificate from the practice CA, which is made
    first when the installation has none (one from before Pli had a CA). A certificate
    issued by another authority (the NAS's, a public CA's) is left alone."""
    current = _first_certificate(cert)
    if current is not None and not renewable(cert):
        raise ConfigError(
            f"TLS: {cert} was issued by {current.issuer.rfc4514_string()}, not by Pli: "
            f"renew it where it comes from, then reload Pli")
    ca = load_ca(cert)
    ca_path = ca_files(cert)[0]
    created = ca is None
    if ca is None:
        ca = make_ca(hostname)
        write_ca(ca, cert)
    elif not ca.permits(hostname):
        raise ConfigError(
            f"TLS: the practice CA {ca_path} vouches for {', '.join(ca.names or ())} only, "
            f"not for {hostname}: move {ca_path.name} and {ca_files(cert)[1].name} aside "
            f"and renew again to make a new CA, which every computer then imports")
    issued = write_server_certificate(ca, cert, key, hostname, days)
    return Renewal(cert, issued.not_valid_after_utc.timestamp(), ca_path, ca.certificate,
                   created)


def renewable(cert: Path) -> bool:
    """Whether ``pli tls renew`` may replace ``cert``: Pli made it, as an older Pli's
    self-signed certificate or issued by the practice CA beside it."""
    current = _first_certificate(cert)
    if current is None or _self_signed(current):
        return True
    ca = load_ca(cert)
    return ca is not None and issued_by(current, ca.certificate)


def issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    if certificate.issuer != ca.subject:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_authority(cert: Path) -> bool:
    """Whether the certificate a server presents from ``cert`` says it is a CA: what
    Thunderbird refuses once that certificate is trusted as an authority."""
    certificate = _first_certificate(cert)
    if certificate is None:
        return False
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints)
                    .value.ca)
    except x509.ExtensionNotFound:
        return False


def fingerprint(certificate: x509.Certificate, algorithm: str) -> str:
    """As mail clients and Windows show it: "3A:7F:..." (SHA-256 or SHA-1)."""
    digest = hashlib.new(algorithm, certificate.public_bytes(serialization.Encoding.DER))
    return ":".join(f"{b:02X}" for b in digest.digest())


def _first_certificate(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigError(f"TLS: {path} is not a PEM certificate: {exc}") from None


def _self_signed(certificate: x509.Certificate) -> bool:
    return issued_by(certificate, certificate)


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` whole (temporary file, fsync, rename): a crash leaves the old
    file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
