"""The README's "only listed events with listed, typed fields are written (addresses, ids,
numbers, MIME types, rule names, SMTP codes; a provider's reply is kept as its codes
only), anything else becomes <redacted> or is left out": each type, with what passes and
what does not."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.audit import REDACTED, redact

SUBJECT = "Résultats de biopsie de Mme Dupont"  # health data, in every wrong place below


def field(event: str, name: str, value: Any) -> Any:
    record = redact(event, {name: value})
    assert record is not None
    return record.get(name, "left out")


def test_an_event_the_trail_does_not_list_is_not_written() -> None:
    assert redact("session.auth_failed", {"client": "192.0.2.7"}) is None
    assert redact("policy.decided", {"subject": SUBJECT}) == {"event": "policy.decided"}


@pytest.mark.parametrize(("value", "kept"), [
    ("Dr.Martin@Cabinet-Martin.fr", "dr.martin@cabinet-martin.fr"),
    ("", ""),  # the null sender of a DSN
    (SUBJECT, REDACTED), ("Dr Martin <dr.martin@cabinet-martin.fr>", REDACTED),
    ("not-an-address", REDACTED), (42, REDACTED),
])
def test_an_address_field_keeps_an_address_only(value: Any, kept: Any) -> None:
    assert field("delivery.sent", "recipient", value) == kept


def test_an_address_list_keeps_each_address_only() -> None:
    assert field("policy.decided", "recipients", ["p@example.org", SUBJECT]) == \
        ["p@example.org", REDACTED]
    assert field("policy.decided", "recipients", SUBJECT) == REDACTED


@pytest.mark.parametrize(("value", "kept"), [
    ("everyone-else", "everyone-else"), ("rule_2.b", "rule_2.b"),
    (SUBJECT, REDACTED), ("x" * 65, REDACTED), ("", REDACTED), (7, REDACTED),
])
def test_a_name_field_keeps_a_short_name_without_spaces_only(value: Any, kept: Any) -> None:
    assert field("policy.decided", "rule", value) == kept


@pytest.mark.parametrize(("value", "kept"), [
    (3, 3), (0, 0), ("3", REDACTED), (True, REDACTED), (2.5, REDACTED), (None, REDACTED),
])
def test_a_number_field_keeps_an_integer_only(value: Any, kept: Any) -> None:
    assert field("policy.decided", "attachments", value) == kept


def test_a_list_of_numbers_keeps_each_integer_only() -> None:
    assert field("policy.decided", "sizes", [10, "10", False]) == [10, REDACTED, REDACTED]
    assert field("policy.decided", "sizes", 10) == REDACTED


@pytest.mark.parametrize(("value", "kept"), [
    ("pass", "pass"), ("protect", "protect"), ("block", "block"),
    ("PASS", REDACTED), (SUBJECT, REDACTED), (None, REDACTED),
])
def test_an_action_is_one_of_pass_protect_block(value: Any, kept: Any) -> None:
    assert field("policy.decided", "action", value) == kept


def test_mime_types_are_kept_and_anything_else_is_not() -> None:
    assert field("policy.decided", "types", ["application/pdf", "biopsie.pdf", 3]) == \
        ["application/pdf", REDACTED, REDACTED]


@pytest.mark.parametrize(("value", "kept"), [
    ("1A23375E37E008E11D9", "1A23375E37E008E11D9"), (None, None),
    ("../etc/passwd", REDACTED), (SUBJECT, REDACTED),
])
def test_an_id_is_letters_digits_dashes_and_underscores(value: Any, kept: Any) -> None:
    assert field("policy.decided", "link", value) == kept


def test_a_providers_reply_is_kept_as_its_codes_only() -> None:
    assert field("delivery.bounced", "reply", "550 5.1.1 <mme.dupont@example.org>: "
                 "unknown user, " + SUBJECT) == "550 5.1.1"
    assert field("delivery.bounced", "reply", SUBJECT) == REDACTED


def test_a_client_address_is_an_ip_address() -> None:
    assert field("spool.queued", "client", "192.0.2.7") == "192.0.2.7"
    assert field("spool.queued", "client", SUBJECT) == REDACTED


def test_a_gap_record_names_events_and_times_in_their_own_forms() -> None:
    record = redact("audit.gap", {"lost": 3, "first": "2026-01-01T00:00:00.000Z",
                                  "last": SUBJECT, "events": ["spool.queued", SUBJECT]})
    assert record == {"event": "audit.gap", "lost": 3, "first": "2026-01-01T00:00:00.000Z",
                      "last": REDACTED, "events": ["spool.queued", REDACTED]}


def test_a_flag_is_a_boolean() -> None:
    assert field("portal.code_rejected", "locked", True) is True
    assert field("portal.code_rejected", "locked", "yes") == REDACTED
