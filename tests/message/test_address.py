"""Address fields are read by RFC 5322's grammar, strictly: what it does not allow is not
guessed at, since readers guess differently."""

from __future__ import annotations

import pytest

from gateway.message.address import parse_addresses


@pytest.mark.parametrize(("value", "addresses"), [
    ('"Dr Anne Martin" <anne.martin@cabinet-martin.fr>', ["anne.martin@cabinet-martin.fr"]),
    ("Dr. Martin <dr@cab.fr>", ["dr@cab.fr"]),
    ("dr@cab.fr (Dr Martin)", ["dr@cab.fr"]),
    ("a@b.fr, c@d.fr", ["a@b.fr", "c@d.fr"]),
    ("Equipe: a@b.fr, c@d.fr;", ["a@b.fr", "c@d.fr"]),
    ("Undisclosed recipients:;", []),
    ('"dr.martin"@cab.fr', ["dr.martin@cab.fr"]),
    ('"x y"@cab.fr', ['"x y"@cab.fr']),
    ("x@[192.0.2.1]", ["x@[192.0.2.1]"]),
    ("médecin <dr@cabinet-santé.fr>", ["dr@cabinet-santé.fr"]),
    ("=?utf-8?q?Dr_Martin?= <dr@cab.fr>", ["dr@cab.fr"]),
])
def test_what_the_grammar_allows_is_read(value: str, addresses: list[str]) -> None:
    found = parse_addresses(value)
    assert found is not None and [m.address for m in found] == addresses


@pytest.mark.parametrize("value", [
    "a@b.fr <c@d.fr>",  # one reader sees two addresses, another one
    "alice@example.org)<bob@example.org>",
    "=?utf-8?q?<a@b>?= <c@d>",  # an address hidden in an encoded word
    "foo <a@b.fr> bar <c@d.fr>",
    "<@relay.example:x@y.fr>",  # a source route
    "a@b@c", "<dr@cab.fr", "x", 'a@"b"', "a@b..fr",
])
def test_what_it_does_not_allow_cannot_be_read(value: str) -> None:
    assert parse_addresses(value) is None
