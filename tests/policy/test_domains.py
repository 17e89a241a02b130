from __future__ import annotations

import pytest

from gateway.policy.domains import DomainPattern, first_match, routes_elsewhere, to_ascii
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


ROUTED = [
    "x%victim.example@cabinet-martin.example",       # Postfix: allow_percent_hack
    "victim.example!x@cabinet-martin.example",       # swap_bangpath
    '"x@victim.example"@cabinet-martin.example',     # resolve_dequoted_address
    '"x%victim.example"@cabinet-martin.example',
    '"victim.example!x"@cabinet-martin.example',
    '"x\\@victim.example"@cabinet-martin.example',   # an @ escaped inside the quotes
    "<@relay.example:x@cabinet-martin.example>",     # a source route, if one gets this far
]


@pytest.mark.parametrize("address", ROUTED)
def test_a_local_part_that_can_route_elsewhere_inherits_no_domain_decision(address: str) -> None:
    """A provider may deliver these to victim.example: they must not be taken for the
    practice's colleagues, nor for anyone else on the domain after the last @."""
    assert routes_elsewhere(address)
    assert listed("cabinet-martin.example").match(address) is None
    assert first_match((DomainPattern("cabinet-martin.example", "exact",
                                      "cabinet-martin.example"),), address) is None


@pytest.mark.parametrize("address", [
    "prenom.nom+tag@domaine.fr", '"prenom nom"@domaine.fr', '"prenom..nom"@domaine.fr',
    "o'brien@domaine.fr", "élodie@domaine.fr", "Dr.Martin@Domaine.FR", "<dr@domaine.fr>",
])
def test_ordinary_addresses_and_quoted_spaces_or_dots_are_taken_as_they_are(address: str) -> None:
    assert not routes_elsewhere(address)
    assert listed("domaine.fr").match(address) is not None


def test_a_list_entry_whose_local_part_routes_elsewhere_is_a_bad_entry() -> None:
    entries, bad = parse_list("x%victim.example@cabinet.fr\nvictim!x@cabinet.fr\ndr@cabinet.fr\n")
    assert [e.text for e in entries] == ["dr@cabinet.fr"]
    assert [b.line for b in bad] == [1, 2]
