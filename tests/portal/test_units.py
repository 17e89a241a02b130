"""The portal's small parts on their own: ranges, proxies, the throttle, tokens, grants,
language."""

from __future__ import annotations

import pytest

from gateway.portal.clients import ClientAddresses, CodeThrottle
from gateway.portal.pages import negotiate
from gateway.portal.ranges import ByteRange, RangeNotSatisfiable, parse_range
from gateway.portal.tokens import AccessTokens

LINK = "yYpx1UXIeQx7KRtWJCmYrQ"


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-0", ByteRange(0, 1)),
    ("bytes=10-19", ByteRange(10, 20)),
    ("bytes=90-", ByteRange(90, 100)),
    ("bytes=-10", ByteRange(90, 100)),
    ("bytes=-500", ByteRange(0, 100)),
    ("bytes=95-500", ByteRange(95, 100)),
    ("Bytes = 1-2", ByteRange(1, 3)),
])
def test_a_single_byte_range_is_understood(header: str | None,
                                           expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-4", "bytes=-0", "bytes=-",
                                    "bytes=0-1,3-4", "lines=1-2", "bytes=a-b", "bytes=٣-٤"])
def test_other_ranges_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("203.0.113.1", ["198.51.100.1"], "203.0.113.1"),      # not a proxy: header ignored
    ("127.0.0.1", [], "127.0.0.1"),                         # the proxy itself
    ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
    ("127.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # two header lines
    ("127.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1"),  # two trusted hops
    ("127.0.0.1", ["garbage"], "127.0.0.1"),
    ("127.0.0.1", ["198.51.100.1, garbage"], "127.0.0.1"),
    ("::1", ["[2001:db8::5]"], "2001:db8::5"),
    ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    (None, ["198.51.100.1"], "unknown"),
])
def test_the_client_is_the_first_untrusted_address_from_the_right(
        peer: str | None, forwarded: list[str], client: str) -> None:
    addresses = ClientAddresses(["127.0.0.1", "::1", "10.0.0.0/8"])
    assert addresses.client(peer, forwarded) == client


def test_the_throttle_forgives_after_its_window() -> None:
    now = [1000.0]
    throttle = CodeThrottle(limit=2, window=60, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.retry_after("a") == 0
    throttle.failed("a")
    assert throttle.retry_after("a") == 60
    assert throttle.retry_after("b") == 0
    now[0] += 30
    assert throttle.retry_after("a") == 30
    now[0] += 31
    assert throttle.retry_after("a") == 0


def test_the_throttle_keeps_a_bounded_number_of_clients() -> None:
    throttle = CodeThrottle(limit=1, window=60, max_clients=100, clock=lambda: 0.0)
    for i in range(1000):
        throttle.failed(f"client-{i}")
    assert len(throttle._failures) <= 100
    assert throttle.retry_after("client-999") > 0


def test_a_token_is_good_for_its_link_until_it_expires() -> None:
    now = [1000.0]
    tokens = AccessTokens(lifetime=60, clock=lambda: now[0])
    token = tokens.issue(LINK)
    assert tokens.valid(LINK, token)
    assert not tokens.valid("AAAAAAAAAAAAAAAAAAAAAA", token)
    assert not tokens.valid(LINK, token[:-1] + ("A" if token[-1] != "A" else "B"))
    expires, signature = token.split(".")
    assert not tokens.valid(LINK, f"{int(expires) + 600}.{signature}")
    assert not tokens.valid(LINK, "")
    assert not tokens.valid(LINK, None)
    assert not tokens.valid(LINK, "x.y")
    assert not AccessTokens(clock=lambda: now[0]).valid(LINK, token)  # another process's key
    now[0] += 61
    assert not tokens.valid(LINK, token)


def test_a_grant_is_good_for_one_document_of_one_link_until_it_expires() -> None:
    now = [1000.0]
    tokens = AccessTokens(grant_lifetime=600, clock=lambda: now[0])
    document, other = "Zm9vYmFyYmF6cXV4cXV1eA", "AAAAAAAAAAAAAAAAAAAAAA"
    grant, expires = tokens.issue_grant(LINK, document)
    assert expires == 1600
    assert tokens.valid_grant(LINK, document, grant)
    assert not tokens.valid_grant(LINK, other, grant)
    assert not tokens.valid_grant(other, document, grant)
    assert not tokens.valid_grant(LINK, document, None)
    # Neither kind of token passes for the other, though one key signs both.
    assert not tokens.valid(LINK, grant)
    assert not tokens.valid_grant(LINK, document, tokens.issue(LINK))
    assert not AccessTokens(clock=lambda: now[0]).valid_grant(LINK, document, grant)
    now[0] += 599
    assert tokens.valid_grant(LINK, document, grant)
    now[0] += 1
    assert not tokens.valid_grant(LINK, document, grant)


@pytest.mark.parametrize(("header", "language"), [
    (None, "fr"), ("", "fr"), ("fr-FR,fr;q=0.9", "fr"), ("en-US,en;q=0.9", "en"),
    ("de-DE,en;q=0.5", "en"), ("de, es", "fr"), ("en;q=0.4, fr;q=0.6", "fr"),
    ("fr;q=0.5, en;q=0.5", "fr"), ("en;q=abc, fr;q=0.1", "fr"), ("EN", "en"),
])
def test_french_unless_the_browser_prefers_english(header: str | None, language: str) -> None:
    assert negotiate(header) == language
