from __future__ import annotations

import pytest

from gateway.policy.patterns import (
    access_code_tag,
    contains_date_of_birth,
    contains_nir,
    fold,
    keyword_regex,
    nir_key_is_valid,
    remove_subject_tags,
    subject_tags,
)


def with_key(first13: str) -> str:
    """A NIR made valid by computing its key (Corsica counted as 19/18)."""
    number = first13.replace(" ", "")
    numeric = number[:5] + {"2A": "19", "2B": "18"}.get(number[5:7], number[5:7]) + number[7:]
    return f"{first13} {97 - int(numeric) % 97:02d}"


# 1 84 03 75 123 456: 1840375123456 mod 97 = 7, so the key is 90.
VALID = "1 84 03 75 123 456 90"


def test_a_nir_with_its_key_computed_by_hand_is_valid() -> None:
    assert nir_key_is_valid(VALID)


def test_a_nir_with_a_wrong_key_is_not_valid() -> None:
    assert not nir_key_is_valid("1 84 03 75 123 456 91")


@pytest.mark.parametrize("department", ["2A", "2B"])
def test_a_corsican_nir_is_valid_with_its_key(department: str) -> None:
    assert nir_key_is_valid(with_key(f"2 91 07 {department} 004 123"))


def test_a_corsican_nir_with_the_key_of_plain_digits_is_not_valid() -> None:
    # The key computed as if 2A were 20 (not 19) must be refused.
    plain = "2910720004123"
    wrong = f"2 91 07 2A 004 123 {97 - int(plain) % 97:02d}"
    assert not nir_key_is_valid(wrong)


@pytest.mark.parametrize(
    "text",
    [
        f"NIR : {VALID}.",
        "numéro 184037512345690 sur la feuille",
        f"Sécu {with_key('2 91 07 2A 004 123')}",
        "1 84 03 75 123\u00a0456 90",
    ],
)
def test_a_valid_nir_is_found_in_text_written_with_or_without_spaces(text: str) -> None:
    assert contains_nir(text)


@pytest.mark.parametrize(
    "text",
    [
        "1 84 03 75 123 456 91",
        "tél 06 12 34 56 78, rendez-vous à 14h",
        "commande 9840375123456907",
        "1840375123456909",  # 16 digits: part of a longer number
        "",
    ],
)
def test_text_without_a_valid_nir_is_not_flagged(text: str) -> None:
    assert not contains_nir(text)


@pytest.mark.parametrize(
    "text",
    [
        "Patiente née le 12/03/1984, suivie pour",
        "né le 12.03.84",
        "Date de naissance : 12.03.1984",
        "DDN: 1/2/1950",
        "DOB 1984-03-12",
        "date of birth: 12-03-1984",
        "née le 1er mars 1984",
        "Né le 12 février 1984",
        "born on March 12, 1984",
    ],
)
def test_a_stated_date_of_birth_is_found(text: str) -> None:
    assert contains_date_of_birth(text)


@pytest.mark.parametrize(
    "text",
    [
        "rendez-vous le 12/03/2025",
        "né le 31/02/1984",
        "né le 12/13/1984",
        "née le lundi",
        "",
    ],
)
def test_dates_that_are_not_a_real_date_of_birth_are_not_flagged(text: str) -> None:
    assert not contains_date_of_birth(text)


def test_folding_removes_case_and_accents() -> None:
    assert fold("Échographie À JEUN") == "echographie a jeun"


@pytest.mark.parametrize(
    ("keyword", "text", "found"),
    [
        ("échographie", "Votre ECHOGRAPHIE est prête", True),
        ("ordonnance", "Ordonnance jointe", True),
        ("compte rendu", "le compte   rendu opératoire", True),
        ("VIH", "sérologie vih négative", True),
        ("vih", "vihuela", False),
        ("ordonnance", "ordonnances", False),
    ],
)
def test_keywords_match_whole_words_ignoring_case_and_accents(
    keyword: str, text: str, found: bool
) -> None:
    regex = keyword_regex((keyword,))
    assert regex is not None
    assert (regex.search(fold(text)) is not None) is found


def test_subject_tags_are_read_by_name_with_their_value() -> None:
    assert subject_tags("Résultats [Clair] [code: 4821]") == {"clair": "", "code": "4821"}


@pytest.mark.parametrize(
    ("subject", "code"),
    [("Résultats [code:4821]", "4821"), ("[CODE:ab12cd]", "ab12cd"), ("[code:12]", None),
     ("[code:]", None), ("sans tag", None), ("[code:12 34]", None)],
)  # fmt: skip
def test_the_access_code_is_taken_from_a_well_formed_code_tag(
    subject: str, code: str | None
) -> None:
    assert access_code_tag(subject) == code


def test_removing_tags_keeps_other_bracketed_words() -> None:
    assert remove_subject_tags("[URGENT] Résultats [code:4821] [clair]", ["code", "clair"]) == (
        "[URGENT] Résultats"
    )
