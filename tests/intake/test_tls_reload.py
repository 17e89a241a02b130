"""A renewed certificate is served after `systemctl reload pli` (SIGHUP), on both
listeners, without dropping a session under way; a broken one changes nothing."""

from __future__ import annotations

import signal
import smtplib
import ssl
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.tls import certificate_expiry, write_self_signed
from tests.support import (
    ADDRESS,
    HOST,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    PliProcess,
    Provider,
    make_gateway,
    wait_until,
)


def served(port: int, *, implicit: bool) -> bytes:
    """The certificate a listener presents now, as DER."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # compared byte for byte below instead
    if implicit:
        with smtplib.SMTP_SSL(HOST, port, context=context, timeout=10) as client:
            return client.sock.getpeercert(binary_form=True)
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.starttls(context=context)
        return client.sock.getpeercert(binary_form=True)


def der(cert: Path) -> bytes:
    """The first certificate of a PEM file (the server's, ahead of its chain), as DER."""
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)


def expiry_gauge(gw: Gateway) -> float:
    url = f"http://{HOST}:{gw.settings().metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    line = next(x for x in text.splitlines() if x.startswith("pli_tls_certificate_expiry_"))
    return float(line.split()[1])


def ssl_expiry(certificate: bytes) -> float:
    return x509.load_der_x509_certificate(certificate).not_valid_after_utc.timestamp()


def test_sighup_serves_a_renewed_certificate_and_keeps_it_when_the_next_is_broken(
        tmp_path: Path, loop: LoopThread) -> None:
    gw = make_gateway(tmp_path / "pli")
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    pli = PliProcess(gw, tmp_path / "pli.log").start()
    assert pli.proc is not None
    cert, key = gw.folder / "tls" / "cert.pem", gw.folder / "tls" / "key.pem"
    ports = ((gw.submission_port, False), (gw.submissions_port, True))
    try:
        first = der(cert)
        assert [served(p, implicit=i) for p, i in ports] == [first, first]

        with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as under_way:
            under_way.starttls(context=gw.client_context())
            under_way.login(USER, PASSWORD)
            write_self_signed(cert, key, "pli.cabinet-martin.fr")  # the renewal hook
            pli.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: '"event": "tls.reloaded"' in pli.log())
            renewed = der(cert)
            assert renewed != first
            assert [served(p, implicit=i) for p, i in ports] == [renewed, renewed]
            assert expiry_gauge(gw) == certificate_expiry(cert)  # for the contractor's alerts
            under_way.sendmail(ADDRESS, ["patient@example.org"],
                               f"From: {ADDRESS}\r\nTo: patient@example.org\r\n"
                               "Subject: Rendez-vous\r\n\r\nBonjour\r\n")

        # A key that does not go with the certificate: refused, the renewed pair stays.
        spare = tmp_path / "spare"
        write_self_signed(spare / "cert.pem", spare / "key.pem", "other.example")
        key.write_bytes((spare / "key.pem").read_bytes())
        pli.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: '"event": "tls.reload_failed"' in pli.log())
        assert [served(p, implicit=i) for p, i in ports] == [renewed, renewed]
        assert '"kept": "previous certificate"' in pli.log()
        assert expiry_gauge(gw) == ssl_expiry(renewed)
        wait_until(lambda: len(provider.received) == 1)
    finally:
        pli.kill(signal.SIGTERM)
        provider.stop()
