"""What a mail library would not send, sent as raw bytes over loopback: the replies Pli
gives to an empty sender, a foreign authorization identity, control characters and a
STARTTLS left half-way."""

from __future__ import annotations

from tests.support import PASSWORD, USER, Gateway, RawSmtp, RunningApp


def logged_in(gw: Gateway) -> RawSmtp:
    session = RawSmtp(gw.submission_port)
    session.starttls(gw.client_context())
    assert session.login(USER, PASSWORD)[0] == 235
    return session


def test_an_empty_sender_gets_the_sentence_written_for_it(gw: Gateway, pli: RunningApp) -> None:
    with logged_in(gw) as session:
        code, text = session.say("MAIL FROM:<>")
    assert code == 550
    assert text == (b"5.7.1 Un expediteur vide (<>) ne peut pas envoyer / "
                    b"An empty sender (<>) cannot be used to submit mail")
