"""Real clients (smtplib) submitting through Pli to an aiosmtpd provider, over loopback."""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTPUTF8
from email.utils import formatdate, make_msgid, parsedate_to_datetime

import pytest

from tests.spool.helpers import wait_queue_empty
from tests.support import (
    ADDRESS,
    HOST,
    OTHER_ADDRESS,
    PASSWORD,
    USER,
    Gateway,
    Provider,
    RunningApp,
    wait_until,
)


def message(sender: str = ADDRESS, to: str = "patient@example.org", body: str = "Bonjour",
            complete: bool = True) -> bytes:
    """As a mail client writes it; ``complete=False`` leaves out Date: and Message-ID:, as
    scanners and scripts sending by SMTP may."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Rendez-vous"
    if complete:
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain="cabinet-martin.fr")
    msg.set_content(body)
    return msg.as_bytes(policy=SMTPUTF8)


def starttls_client(gw: Gateway) -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, gw.submission_port, local_hostname="[192.0.2.1]", timeout=10)
    client.starttls(context=gw.client_context())
    client.ehlo("[192.0.2.1]")
    return client


def test_starttls_then_auth_plain_relays_the_message_unchanged(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    data = message()
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)  # smtplib prefers PLAIN when offered
        refused = client.sendmail(ADDRESS, ["patient@example.org"], data)
    assert refused == {}
    got = wait_until(lambda: provider.received)
    assert got[0].mail_from == ADDRESS
    assert got[0].rcpt_tos == ["patient@example.org"]
    assert got[0].content == data


def test_a_message_without_date_or_message_id_gets_them_and_nothing_else_changes(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    data = message(complete=False)
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, ["patient@example.org"], data)
    got = wait_until(lambda: provider.received)[0].content
    head, _, body = got.partition(b"\r\n\r\n")
    sent_head, _, sent_body = data.partition(b"\r\n\r\n")
    assert body == sent_body and head.startswith(sent_head + b"\r\n")
    headers = BytesHeaderParser().parsebytes(got)
    assert parsedate_to_datetime(headers["Date"]).tzinfo is not None
    assert headers["Message-ID"].startswith("<") and headers["Message-ID"].endswith("@localhost>")
    assert len(headers.get_all("Date")) == len(headers.get_all("Message-ID")) == 1


def test_auth_login_uses_the_challenges_thunderbird_and_outlook_expect(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        code, text = client.docmd("AUTH", "LOGIN")
        assert (code, text) == (334, b"VXNlcm5hbWU6")
        code, text = client.docmd(base64.b64encode(USER.encode()).decode())
        assert (code, text) == (334, b"UGFzc3dvcmQ6")
        code, text = client.docmd(base64.b64encode(PASSWORD.encode()).decode())
        assert code == 235 and text.startswith(b"2.7.0")
        client.sendmail(ADDRESS, ["patient@example.org"], message())
    wait_until(lambda: provider.received)


def test_implicit_tls_listener_offers_auth_and_relays(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with smtplib.SMTP_SSL(HOST, gw.submissions_port, context=gw.client_context(),
                          timeout=10) as client:
        client.ehlo("[192.0.2.1]")
        assert "PLAIN" in client.esmtp_features["auth"]
        assert "LOGIN" in client.esmtp_features["auth"]
        assert "starttls" not in client.esmtp_features
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, ["patient@example.org"], message())
    wait_until(lambda: provider.received)


def test_ehlo_advertises_the_extensions_mail_clients_rely_on(gw: Gateway, pli: RunningApp) -> None:
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        code, _ = client.ehlo("[192.0.2.1]")
        assert code == 250
        assert "auth" not in client.esmtp_features  # never before TLS
        assert "starttls" in client.esmtp_features
        client.starttls(context=gw.client_context())
        client.ehlo("[192.0.2.1]")
        features = client.esmtp_features
    for name in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"):
        assert name in features, name
    assert int(features["size"]) == gw.settings().max_message_size
    assert set(features["auth"].split()) == {"PLAIN", "LOGIN"}


def test_the_ehlo_reply_travels_as_one_tls_record(gw: Gateway, pli: RunningApp) -> None:
    """Counted on the wire: the whole reply in one record, not one record per line."""
    raw = socket.create_connection((HOST, gw.submissions_port), timeout=10)
    into, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = gw.client_context().wrap_bio(into, out, server_hostname="localhost")

    def exchange(command: bytes) -> tuple[bytes, int]:
        """Send command; return the whole reply and the TLS records it came in."""
        if command:
            tls.write(command)
        raw.sendall(out.read())
        wire, text = b"", b""
        while not re.search(rb"(^|\n)\d{3} [^\n]*\r\n$", text):
            chunk = raw.recv(65536)
            assert chunk, "connection closed"
            wire += chunk
            into.write(chunk)
            with contextlib.suppress(ssl.SSLWantReadError):
                while True:
                    text += tls.read(65536)
        records, at = 0, 0
        while at < len(wire):
            at += 5 + int.from_bytes(wire[at + 3:at + 5], "big")
            records += 1
        return text, records

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(out.read())
            into.write(raw.recv(65536))
    raw.sendall(out.read())
    assert exchange(b"")[0].startswith(b"220 ")  # greeting (and any session tickets)
    for _ in range(2):
        text, records = exchange(b"EHLO [192.0.2.1]\r\n")
        assert text.count(b"\r\n") >= 6 and b"250-AUTH" in text and text.startswith(b"250-")
        assert records == 1, (records, text)
    raw.close()


def test_auth_before_starttls_is_refused(gw: Gateway, pli: RunningApp) -> None:
    with smtplib.SMTP(HOST, gw.submission_port, timeout=10) as client:
        client.ehlo("client.example")
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        code, text = client.docmd("AUTH", f"PLAIN {plain}")
    assert code == 530 and text.startswith(b"5.7.0")


def test_mail_without_auth_is_refused_even_from_localhost(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        code, text = client.mail(ADDRESS)
        assert code == 530 and text.startswith(b"5.7.0")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail(ADDRESS, ["patient@example.org"], message())
    assert provider.received == []


def test_wrong_password_is_refused(gw: Gateway, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.login(USER, "not the password")
    assert err.value.smtp_code == 535
    assert err.value.smtp_error.startswith(b"5.7.8")


def test_envelope_sender_of_another_user_is_refused_with_the_address(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        code, text = client.mail(OTHER_ADDRESS)
    assert code == 550
    assert text.startswith(b"5.7.1")
    assert OTHER_ADDRESS.encode() in text


def test_header_from_of_another_address_is_refused(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail(ADDRESS, ["patient@example.org"], message(sender=OTHER_ADDRESS))
    assert err.value.smtp_code == 550
    assert err.value.smtp_error.startswith(b"5.7.1")
    assert OTHER_ADDRESS.encode() in err.value.smtp_error
    assert provider.received == []


def test_declared_size_over_the_limit_is_refused(gw: Gateway, pli: RunningApp) -> None:
    limit = gw.settings().max_message_size
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        code, text = client.mail(ADDRESS, [f"SIZE={limit + 1}"])
    assert code == 552 and text.startswith(b"5.3.4")


def test_message_bigger_than_the_limit_is_refused_and_not_relayed(
        tmp_path, loop, provider_tls) -> None:
    from tests.support import make_gateway
    gw = make_gateway(tmp_path / "small", extra="")
    gw.config.write_text(gw.config.read_text().replace(
        "max_message_size = 157286400", "max_message_size = 20000"))
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    try:
        with starttls_client(gw) as client:
            client.login(USER, PASSWORD)
            # No SIZE parameter: the limit is enforced on the data itself.
            assert client.mail(ADDRESS)[0] == 250
            assert client.rcpt("patient@example.org")[0] == 250
            code, text = client.data(message(body="x" * 30000))
            assert code == 552 and text.startswith(b"5.3.4")
            # The session goes on: the next message fits and is relayed.
            client.sendmail(ADDRESS, ["patient@example.org"], message())
        wait_until(lambda: provider.received)
        wait_queue_empty(gw)  # every copy queued has been relayed by now
        assert len(provider.received) == 1
        assert b"x" * 30000 not in provider.received[0].content
    finally:
        app.stop()
        provider.stop()


def test_one_connection_carries_several_messages(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        for n in range(3):
            client.sendmail(ADDRESS, [f"patient{n}@example.org"], message(body=f"n{n}"))
    got = wait_until(lambda: len(provider.received) == 3 and provider.received)
    assert sorted(r.rcpt_tos[0] for r in got) == [f"patient{n}@example.org" for n in range(3)]


def test_bare_line_feeds_are_normalised_before_relaying(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    raw = (f"From: {ADDRESS}\r\nTo: p@example.org\r\nSubject: x\r\n\r\n"
           "line one\nline two\rline three\r\n").encode()
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        client.mail(ADDRESS)
        client.rcpt("p@example.org")
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(raw + b".\r\n")
        code, text = client.getreply()
    assert code == 250
    content = wait_until(lambda: provider.received)[0].content
    assert b"line one\r\nline two\r\nline three\r\n" in content
    assert content.count(b"\n") == content.count(b"\r\n") == content.count(b"\r")


def test_smtputf8_addresses_are_accepted_and_relayed(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    data = message(to="élodie@exemple.fr")
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, ["élodie@exemple.fr"], data, mail_options=["SMTPUTF8"])
    got = wait_until(lambda: provider.received)
    assert got[0].rcpt_tos == ["élodie@exemple.fr"]


def test_pipelined_commands_get_one_reply_each(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        client.send(f"MAIL FROM:<{ADDRESS}>\r\nRCPT TO:<a@example.org>\r\n"
                    "RCPT TO:<b@example.org>\r\nDATA\r\n".encode())
        replies = [client.getreply()[0] for _ in range(4)]
        assert replies == [250, 250, 250, 354]
        client.send(message() + b".\r\n")
        assert client.getreply()[0] == 250
    got = wait_until(lambda: provider.received)
    assert got[0].rcpt_tos == ["a@example.org", "b@example.org"]


def test_every_reply_after_the_greeting_carries_an_enhanced_status_code(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    """Walk a session through success and error replies and check each one."""
    raw = socket.create_connection((HOST, gw.submission_port), timeout=10)
    reader = raw.makefile("rb")

    def reply() -> list[bytes]:
        lines = []
        while True:
            line = reader.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def say(command: str) -> bytes:
        conn.sendall(command.encode() + b"\r\n")
        return reply()[-1]

    conn: socket.socket | ssl.SSLSocket = raw
    assert reply()[0].startswith(b"220 ")
    say("EHLO [192.0.2.1]")
    checked = [say("MAIL FROM:<x@example.org>"), say("NOOP"), say("BOGUS"), say("STARTTLS")]
    conn = gw.client_context().wrap_socket(raw, server_hostname="localhost")
    reader = conn.makefile("rb")
    say("EHLO [192.0.2.1]")
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    checked += [say("RCPT TO:<a@example.org>"), say("AUTH PLAIN " +
                base64.b64encode(b"\0nobody\0wrong").decode()), say(f"AUTH PLAIN {plain}"),
                say(f"MAIL FROM:<{ADDRESS}>"), say("MAIL FROM:<x@example.org>"),
                say("RCPT TO:<a@example.org>"), say("RSET"), say("DATA"), say("VRFY a"),
                say("QUIT")]
    for line in checked:
        code, status = line[:3], line[4:].split(b" ")[0]
        assert status[:1] == code[:1] and status.count(b".") == 2, line
    conn.close()


def test_an_internationalised_sender_address_is_accepted_in_the_header_too(
        gw: Gateway, provider: Provider, loop) -> None:  # type: ignore[no-untyped-def]
    from gateway.users import User, hash_password, load_users, save_users
    users = load_users(gw.folder / "users.toml")
    users["elodie"] = User("elodie", hash_password("un long mot de passe"),
                           ("élodie@cabinet-martin.fr",))
    save_users(gw.folder / "users.toml", users)
    app = RunningApp(loop, gw).start()
    try:
        data = message(sender="Élodie <élodie@cabinet-martin.fr>")
        with starttls_client(gw) as client:
            client.login("elodie", "un long mot de passe")
            client.sendmail("élodie@cabinet-martin.fr", ["patient@example.org"], data,
                            mail_options=["SMTPUTF8"])
        assert wait_until(lambda: provider.received)[0].mail_from == "élodie@cabinet-martin.fr"
    finally:
        app.stop()


@pytest.mark.parametrize("registered, sent", [
    ("dr@cabinet-santé.fr", "dr@xn--cabinet-sant-meb.fr"),
    ("dr@xn--cabinet-sant-meb.fr", "Dr@Cabinet-Santé.fr"),
])
def test_an_accented_domain_is_the_same_address_in_either_form(
        gw: Gateway, provider: Provider, loop, registered: str,  # type: ignore[no-untyped-def]
        sent: str) -> None:
    """Mail clients send an accented domain as is (SMTPUTF8) or in its xn-- form: the
    practitioner's own address either way, in the envelope and in From:."""
    from gateway.users import User, hash_password, load_users, save_users
    users = load_users(gw.folder / "users.toml")
    users["durand"] = User("durand", hash_password("un long mot de passe"), (registered,))
    save_users(gw.folder / "users.toml", users)
    app = RunningApp(loop, gw).start()
    try:
        options = [] if sent.isascii() else ["SMTPUTF8"]
        with starttls_client(gw) as client:
            client.login("durand", "un long mot de passe")
            client.sendmail(sent, ["patient@example.org"], message(sender=sent),
                            mail_options=options)
            # Another domain that only looks alike is still refused.
            code, _ = client.mail("dr@cabinet-sante.fr")
            assert code == 550
        assert wait_until(lambda: provider.received)[0].mail_from == sent
    finally:
        app.stop()


def test_refusals_a_secretary_reads_come_in_french_then_english_in_plain_ascii(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        code, text = client.mail(ADDRESS)  # not logged in yet
        assert code == 530 and text.startswith(b"5.7.0 Identification requise")
        client.login(USER, PASSWORD)
        code, text = client.mail(OTHER_ADDRESS)
    assert code == 550
    french, _, english = text.decode("ascii").partition(" / ")
    assert french.startswith("5.7.1 Ce compte ne peut pas envoyer en tant que")
    assert english.startswith("You may not send as")


def test_a_recipient_given_twice_gets_one_copy(
        gw: Gateway, provider: Provider, pli: RunningApp) -> None:
    with starttls_client(gw) as client:
        client.login(USER, PASSWORD)
        client.sendmail(ADDRESS, ["patient@example.org", "Patient@example.org"], message())
    wait_until(lambda: provider.received)
    wait_queue_empty(gw)  # every copy queued has been relayed by now: there was one
    assert [r.rcpt_tos for r in provider.received] == [["patient@example.org"]]
