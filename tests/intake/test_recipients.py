"""Recipients, sent as raw bytes: a local part that can route the message to another
domain is refused at RCPT; ordinary addresses, and source routes (which are dropped), go
to the domain they name last, and the policy decides for that domain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.intake.test_submission import message
from tests.spool.helpers import wait_queue_empty
from tests.support import (
    ADDRESS,
    PASSWORD,
    USER,
    Gateway,
    LoopThread,
    Provider,
    RawSmtp,
    RunningApp,
    make_gateway,
    wait_until,
)

ROUTED = [
    "x%victim.example@cabinet-martin.fr",
    '"x@victim.example"@cabinet-martin.fr',
    "victim.example!x@cabinet-martin.fr",
    '"x%victim.example"@cabinet-martin.fr',
    '"victim.example!x"@cabinet-martin.fr',
    '"x\\@victim.example"@cabinet-martin.fr',
]


@pytest.fixture
def default_gw(tmp_path: Path, loop: LoopThread) -> Iterator[tuple[Gateway, Provider]]:
    """The policy `pli init` installs: cabinet-martin.fr is the practice's own domain."""
    gw = make_gateway(tmp_path / "pli", policy=None)
    provider = Provider(loop, None, gw.provider_port, offer_starttls=False).start()
    app = RunningApp(loop, gw).start()
    yield gw, provider
    app.stop()
    provider.stop()


def logged_in(gw: Gateway) -> RawSmtp:
    session = RawSmtp(gw.submission_port)
    session.starttls(gw.client_context())
    assert session.login(USER, PASSWORD)[0] == 235
    assert session.say(f"MAIL FROM:<{ADDRESS}>")[0] == 250
    return session


def send_data(session: RawSmtp, to: str) -> None:
    assert session.say("DATA")[0] == 354
    assert session.say(message(to=to, body="sentinelbody") + b".")[0] == 250


def test_a_recipient_whose_local_part_routes_elsewhere_is_refused_at_rcpt(
        default_gw: tuple[Gateway, Provider]) -> None:
    gw, provider = default_gw
    with logged_in(gw) as session:
        for address in ROUTED:
            code, text = session.say(f"RCPT TO:<{address}>")
            assert code == 553 and text.startswith(b"5.1.3 Adresse refusee"), (address, text)
            assert b" / Address refused" in text
        # The session goes on, and an ordinary colleague is taken.
        assert session.say("RCPT TO:<dr.durand@cabinet-martin.fr>")[0] == 250
        send_data(session, "dr.durand@cabinet-martin.fr")
    wait_until(lambda: provider.received)
    wait_queue_empty(gw)  # every copy queued has been relayed by now
    assert [r.rcpt_tos for r in provider.received] == [["dr.durand@cabinet-martin.fr"]]


@pytest.mark.parametrize("address", [
    "prenom.nom+tag@cabinet-martin.fr", '"prenom nom"@cabinet-martin.fr',
    '"prenom..nom"@cabinet-martin.fr',
])
def test_ordinary_addresses_and_quoted_spaces_or_dots_are_accepted_as_colleagues(
        default_gw: tuple[Gateway, Provider], address: str) -> None:
    gw, provider = default_gw
    with logged_in(gw) as session:
        assert session.say(f"RCPT TO:<{address}>")[0] == 250
        send_data(session, address)
    got = wait_until(lambda: provider.received)
    assert len(got) == 1 and got[0].rcpt_tos[0].endswith("@cabinet-martin.fr")
    assert b"sentinelbody" in got[0].content  # passed as it is, like any colleague's copy


def test_a_source_route_is_dropped_and_the_last_domain_decides(
        default_gw: tuple[Gateway, Provider]) -> None:
    """RFC 5321 (section 4.1.1.3, appendix C) has servers ignore source routes: naming
    the practice's domain as a relay makes the patient no colleague."""
    gw, provider = default_gw
    with logged_in(gw) as session:
        assert session.say("RCPT TO:<@cabinet-martin.fr,@relay.example:patient@example.org>")[0] \
            == 250
        send_data(session, "patient@example.org")
    got = wait_until(lambda: len(provider.received) == 2 and provider.received)
    notice = next(r for r in got if r.rcpt_tos == ["patient@example.org"])
    assert b"sentinelbody" not in notice.content and b"/l/" in notice.content  # protected
