"""The certificates `pli init` and `pli tls renew` write: a practice CA and a server
certificate it issues. Checked by their extensions against the rules Thunderbird applies
(mozilla::pkix), and by real TLS handshakes from a client that trusts the CA file alone."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import smtplib
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs import SERVER_DAYS, load_ca, server_certificate
from gateway.initdir import InitOptions, init_dir
from tests.support import HOST, LoopThread, PliProcess, RunningApp, make_gateway, wait_until
from tests.test_cli import pli


def mozilla_end_entity_problems(certificate: x509.Certificate) -> list[str]:
    """What mozilla::pkix refuses in the certificate a TLS server presents (an ECDSA
    key): a CA certificate in that place, a key usage without digitalSignature, an
    extended key usage without serverAuth."""
    problems = []
    extensions = certificate.extensions
    try:
        if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            problems.append("MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY")
    except x509.ExtensionNotFound:
        pass
    try:
        if not extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            problems.append("SEC_ERROR_INADEQUATE_KEY_USAGE")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            problems.append("SEC_ERROR_INADEQUATE_CERT_TYPE")
    except x509.ExtensionNotFound:
        pass
    return problems


def mozilla_authority_problems(certificate: x509.Certificate) -> list[str]:
    """What mozilla::pkix refuses in an issuer: no basicConstraints CA:TRUE, or a key
    usage without keyCertSign."""
    problems = []
    try:
        if not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            problems.append("SEC_ERROR_CA_CERT_INVALID")
    except x509.ExtensionNotFound:
        problems.append("SEC_ERROR_CA_CERT_INVALID")
    try:
        if not certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            problems.append("SEC_ERROR_INADEQUATE_KEY_USAGE")
    except x509.ExtensionNotFound:
        pass
    return problems


def old_self_signed(cert: Path, key: Path, hostname: str) -> None:
    """What `pli init` wrote before it made a practice CA: self-signed, marked as a CA."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256()))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def served(port: int, trusted: Path, *, implicit: bool) -> x509.Certificate:
    """The certificate a listener presents, over a handshake that checks it against the
    CA file ``trusted`` alone, for the address the client dialled (127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(trusted))
    if implicit:
        with smtplib.SMTP_SSL(HOST, port, context=context, timeout=10) as client:
            der = client.sock.getpeercert(binary_form=True)
    else:
        with smtplib.SMTP(HOST, port, timeout=10) as client:
            client.starttls(context=context)
            der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_init_writes_an_end_entity_certificate_issued_by_a_practice_ca(tmp_path: Path) -> None:
    init_dir(tmp_path, InitOptions(domain="cabinet-martin.fr"))
    tls = tmp_path / "tls"
    leaf, *chain = x509.load_pem_x509_certificates((tls / "cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    assert chain == [ca]  # the full chain, as a server sends it
    assert mozilla_end_entity_problems(leaf) == []
    assert mozilla_authority_problems(ca) == []
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["pli.cabinet-martin.fr", "localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= \
        datetime.timedelta(days=SERVER_DAYS, minutes=5)
    assert ca.not_valid_after_utc > leaf.not_valid_after_utc
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert [n.value for n in constraints.value.permitted_subtrees or ()] == [
        "pli.cabinet-martin.fr", "localhost", ipaddress.ip_network("127.0.0.1/32")]
    for secret in ("key.pem", "ca-key.pem"):
        assert (tls / secret).stat().st_mode & 0o777 == 0o600
    # The rules above do catch what an older `pli init` wrote.
    old_self_signed(tmp_path / "old.pem", tmp_path / "old-key.pem", "pli.cabinet-martin.fr")
    old = x509.load_pem_x509_certificate((tmp_path / "old.pem").read_bytes())
    assert mozilla_end_entity_problems(old) == ["MOZILLA_PKIX_ERROR_CA_CERT_USED_AS_END_ENTITY"]


def test_both_ports_are_trusted_through_the_ca_alone_and_stay_so_after_a_renewal(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    imported = tmp_path / "imported-ca.pem"  # what each computer keeps, once
    shutil.copyfile(gw.ca, imported)
    ports = ((gw.submission_port, False), (gw.submissions_port, True))
    process = PliProcess(gw, tmp_path / "pli.log").start()
    assert process.proc is not None
    try:
        first = [served(port, imported, implicit=implicit) for port, implicit in ports]
        assert first[0] == first[1]
        assert mozilla_end_entity_problems(first[0]) == []

        renewed = pli("tls", "renew", "-c", str(gw.config))
        assert renewed.returncode == 0, renewed.stderr
        assert "renewed" in renewed.stdout and "That CA is new" not in renewed.stdout
        process.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: '"event": "tls.reloaded"' in process.log())

        second = [served(port, imported, implicit=implicit) for port, implicit in ports]
        assert second[0] == second[1] != first[0]  # a new certificate, the same trust
        assert second[0].public_key() != first[0].public_key()  # and a new key
        assert mozilla_end_entity_problems(second[0]) == []
        assert imported.read_bytes() == gw.ca.read_bytes()  # the CA itself did not change
    finally:
        process.kill(signal.SIGTERM)


def handshake_with(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                   ca: Path, name: str, tmp_path: Path) -> None:
    """A TLS server presenting ``certificate``, and a client that trusts ``ca`` alone
    connecting to it as ``name``; raises what the client's check raises."""
    chain, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + ca.read_bytes())
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(chain, key_file)
    listener = socket.create_server((HOST, 0))
    listener.settimeout(10)

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_side.wrap_socket(connection, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate
        finally:
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = ssl.create_default_context(cafile=str(ca))
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname=name):
                pass
    finally:
        thread.join(10)
        listener.close()


def test_the_practice_ca_vouches_for_pli_s_own_names_and_nothing_else(tmp_path: Path) -> None:
    """A computer that imported the CA is exposed to no one else's site, even should the
    CA's key be taken from the NAS: the CA may only sign for Pli's names."""
    init_dir(tmp_path / "pli", InitOptions(domain="cabinet-martin.fr"))
    cert = tmp_path / "pli" / "tls" / "cert.pem"
    ca = load_ca(cert)
    assert ca is not None and ca.permits("pli.cabinet-martin.fr")
    assert not ca.permits("banque.example") and not ca.permits("cabinet-martin.fr")
    key = ec.generate_private_key(ec.SECP256R1())
    for name, trusted in (("pli.cabinet-martin.fr", True), ("banque.example", False)):
        forged = server_certificate(name, key.public_key(), ca.certificate.subject, ca.key, 30)
        if trusted:
            handshake_with(forged, key, cert.parent / "ca.pem", name, tmp_path)
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match="permitted subtree"):
                handshake_with(forged, key, cert.parent / "ca.pem", name, tmp_path)


def test_an_older_installation_keeps_working_and_pli_check_says_how_to_move_on(
        tmp_path: Path) -> None:
    gw = make_gateway(tmp_path / "pli")
    old_self_signed(gw.cert, gw.folder / "tls" / "key.pem", "localhost")
    gw.ca.unlink()
    (gw.folder / "tls" / "ca-key.pem").unlink()
    loop = LoopThread()
    app = RunningApp(loop, gw).start()
    try:  # the exception each computer made for it goes on working, on both ports
        for port, implicit in ((gw.submission_port, False), (gw.submissions_port, True)):
            served(port, gw.cert, implicit=implicit)
    finally:
        app.stop()
        loop.close()
    checked = pli("check", "-c", str(gw.config))
    assert checked.returncode == 0, checked.stderr  # it works: a note, not a problem
    assert "note: TLS:" in checked.stdout and "CA:TRUE" in checked.stdout
    assert "pli tls renew" in checked.stdout

    renewed = pli("tls", "renew", "-c", str(gw.config))
    assert renewed.returncode == 0, renewed.stderr
    assert "That CA is new: import it once on each computer" in renewed.stdout
    assert "SHA-256" in renewed.stdout and "SHA-1" in renewed.stdout
    leaf = x509.load_pem_x509_certificate(gw.cert.read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(gw.ca.read_bytes()))
    assert mozilla_end_entity_problems(leaf) == []
    checked = pli("check", "-c", str(gw.config))
    assert checked.returncode == 0 and "note:" not in checked.stdout


def test_renew_leaves_a_certificate_pli_did_not_make_alone(tmp_path: Path) -> None:
    assert pli("init", str(tmp_path), "--domain", "cabinet-martin.fr",
               "--name", "Cabinet Martin").returncode == 0
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    issued = trustme.CA().issue_cert("pli.cabinet-martin.fr")  # as the NAS's would be
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    before = cert.read_bytes(), key.read_bytes()
    renewed = pli("tls", "renew", "-c", str(tmp_path / "pli.toml"))
    assert renewed.returncode == 1
    assert "not by Pli: renew it where it comes from" in renewed.stderr
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_renew_refuses_a_host_name_the_practice_ca_does_not_cover(tmp_path: Path) -> None:
    assert pli("init", str(tmp_path), "--domain", "cabinet-martin.fr",
               "--name", "Cabinet Martin").returncode == 0
    config = tmp_path / "pli.toml"
    config.write_text(config.read_text().replace('hostname = "pli.cabinet-martin.fr"',
                                                 'hostname = "pli.autre-cabinet.fr"'))
    before = (tmp_path / "tls" / "cert.pem").read_bytes()
    renewed = pli("tls", "renew", "-c", str(config))
    assert renewed.returncode == 1
    assert "vouches for pli.cabinet-martin.fr, localhost only, not for pli.autre-cabinet.fr" \
        in renewed.stderr
    assert (tmp_path / "tls" / "cert.pem").read_bytes() == before
