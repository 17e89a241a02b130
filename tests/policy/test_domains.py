from __future__ import annotations

import pytest

from gateway.policy.domains import DomainPattern, to_ascii
from gateway.policy.lists import DomainList, parse_list


def listed(*entries: str) -> DomainList:
    patterns = [DomainPattern.parse(e) for e in entries]
    assert all(patterns)
    return DomainList.of("test", [p for p in patterns if p])


@pytest.mark.parametrize(
    ("entry", "address", "matches"),
    [
        ("gmail.com", "patient@gmail.com", True),
        ("gmail.com", "Patient@GMAIL.COM", True),
        ("gmail.com", "patient@gmail.com.", True),
        ("gmail.com", "patient@mail.gmail.com", False),
        ("gmail.com", "patient@notgmail.com", False),
        ("*.mssante.fr", "dr@medecin.mssante.fr", True),
        ("*.mssante.fr", "dr@a.b.mssante.fr", True),
        ("*.mssante.fr", "dr@mssante.fr", False),
        ("*.mssante.fr", "dr@evilmssante.fr", False),
        ("yahoo.*", "x@yahoo.fr", True),
        ("yahoo.*", "x@yahoo.co.uk", True),
        ("yahoo.*", "x@yahoo", False),
        ("yahoo.*", "x@myyahoo.fr", False),
        ("*.fr", "x@cabinet.fr", True),
        ("*.fr", "x@cabinet.com", False),
        ("dr.x@chu.fr", "DR.X@chu.fr", True),
        ("dr.x@chu.fr", "dr.y@chu.fr", False),
    ],
)
def test_entries_match_addresses_case_insensitively_with_wildcards(
    entry: str, address: str, matches: bool
) -> None:
    assert (listed(entry).match(address) is not None) is matches


def test_a_unicode_domain_in_a_list_matches_its_punycode_form() -> None:
    assert listed("médecins-exemple.fr").match("dr@xn--mdecins-exemple-bnb.fr") is not None


def test_a_punycode_domain_in_a_list_matches_its_unicode_form() -> None:
    assert listed("xn--mdecins-exemple-bnb.fr").match("dr@Médecins-Exemple.fr") is not None


def test_a_unicode_wildcard_matches_punycode_subdomains() -> None:
    assert listed("*.hôpital.fr").match("x@cardio.xn--hpital-ixa.fr") is not None


def test_to_ascii_gives_the_a_label_form() -> None:
    assert to_ascii("Hôpital.FR.") == "xn--hpital-ixa.fr"


@pytest.mark.parametrize("entry", ["not a domain", "*.", "*.*", "localhost", "@gmail.com", "a@b"])
def test_entries_that_are_not_domains_are_refused(entry: str) -> None:
    assert DomainPattern.parse(entry) is None


def test_list_files_skip_comments_and_report_bad_lines_with_their_number() -> None:
    entries, bad = parse_list("# header\n\ngmail.com  # Google\nnot a domain\n")
    assert [e.text for e in entries] == ["gmail.com"]
    assert [(b.line, b.text) for b in bad] == [(4, "not a domain")]


@pytest.mark.parametrize("address", [
    "dr@straße.fr",          # IDNA 2003 says strasse.fr; resolvers today, xn--strae-oqa.fr
    "dr@cabinet\u200d-martin.fr",  # a joiner IDNA 2003 drops silently
    "dr@cabinet-martin.ｆｒ",  # full-width letters
])
def test_a_label_whose_idna_2003_form_is_another_name_matches_nothing(address: str) -> None:
    """The provider may deliver to a different domain than the one the list names: such
    an address must not inherit the list entry's decision (a pass would send in clear)."""
    assert listed("strasse.fr").match(address) is None
    assert listed("cabinet-martin.fr").match(address) is None
