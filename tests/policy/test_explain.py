from __future__ import annotations

import json
from pathlib import Path

from gateway.policy import Policy, decide, explain
from tests.policy.helpers import attachment, envelope, facts, policy_with

RULES = """
[[rule]]
name = "no-webmail"
when = { sender_in = ["webmail"] }
action = "block"
block = { message_fr = "Non.", message_en = "No." }

[[rule]]
name = "colleagues"
when = { recipient_in = ["internal", "secure"] }
action = "pass"

[[rule]]
name = "scans"
when = { all = [{ has_attachments = true }, { attachment_type = ["image/*"] }] }
action = "protect"
protect = { expiry_days = 7 }
"""


def policy(tmp_path: Path) -> Policy:
    return policy_with(tmp_path, RULES)


def test_each_recipient_is_explained_in_envelope_order(tmp_path: Path) -> None:
    env = envelope("p@gmail.com", "a@cabinet-exemple.fr")
    result = explain(policy(tmp_path), env, facts())
    assert [(r.recipient, r.rule, r.action) for r in result.recipients] == [
        ("p@gmail.com", "fallback", "protect"),
        ("a@cabinet-exemple.fr", "colleagues", "pass"),
    ]


def test_the_conditions_that_held_are_given(tmp_path: Path) -> None:
    message = facts(attachments=(attachment("application/pdf"), attachment("image/jpeg")))
    (r,) = explain(policy(tmp_path), envelope("p@gmail.com"), message).recipients
    assert r.rule == "scans"
    assert r.held == ("the message has 2 attachment(s)", "an attachment is image/jpeg (matches image/*)")


def test_each_earlier_rule_comes_with_the_first_condition_that_failed(tmp_path: Path) -> None:
    message = facts(attachments=(attachment("application/pdf"),))
    (r,) = explain(policy(tmp_path), envelope("p@gmail.com"), message).recipients
    assert [(s.rule, s.failed) for s in r.skipped] == [
        ("no-webmail", "sender dr@cabinet-exemple.fr is not in list webmail"),
        ("colleagues", "recipient p@gmail.com is not in list internal, secure"),
        ("scans", "no attachment is of type image/* (found: application/pdf)"),
    ]


def test_the_action_settings_are_given(tmp_path: Path) -> None:
    (r,) = explain(policy(tmp_path), envelope("p@gmail.com"), facts()).recipients
    assert r.settings["expiry_days"] == 14
    assert r.settings["access_code"] == "generated"


def test_the_text_names_rules_reasons_and_settings(tmp_path: Path) -> None:
    text = explain(policy(tmp_path), envelope("x@medecin.mssante.fr", sender="dr@gmail.com"), facts()).to_text()
    assert text.splitlines()[0] == "x@medecin.mssante.fr: BLOCK by rule 'no-webmail'"
    assert "sender dr@gmail.com is in list webmail (entry gmail.com)" in text
    assert 'message_fr="Non."' in text


def test_the_text_shows_skipped_rules_before_the_deciding_one(tmp_path: Path) -> None:
    text = explain(policy(tmp_path), envelope("a@cabinet-exemple.fr"), facts()).to_text()
    assert text == (
        "a@cabinet-exemple.fr: PASS by rule 'colleagues'\n"
        "  - rule 'no-webmail' did not apply: sender dr@cabinet-exemple.fr is not in list webmail\n"
        "  + rule 'colleagues' applied:\n"
        "      recipient a@cabinet-exemple.fr is in list internal (entry cabinet-exemple.fr)"
    )


def test_the_json_is_stable_and_complete(tmp_path: Path) -> None:
    env = envelope("a@cabinet-exemple.fr")
    first = explain(policy(tmp_path), env, facts()).to_json()
    assert first == explain(policy(tmp_path), env, facts()).to_json()
    assert json.loads(first) == {
        "recipients": [
            {
                "recipient": "a@cabinet-exemple.fr",
                "rule": "colleagues",
                "action": "pass",
                "settings": {},
                "conditions_held": [
                    "recipient a@cabinet-exemple.fr is in list internal (entry cabinet-exemple.fr)"
                ],
                "rules_not_matching": [
                    {"rule": "no-webmail", "failed": "sender dr@cabinet-exemple.fr is not in list webmail"}
                ],
            }
        ]
    }


def test_explain_agrees_with_decide(tmp_path: Path) -> None:
    env = envelope("p@gmail.com", "a@cabinet-exemple.fr", "x@medecin.mssante.fr")
    message = facts(attachments=(attachment("image/png"),))
    p = policy(tmp_path)
    decided = {r: g.decision.rule for g in decide(p, env, message).groups for r in g.recipients}
    explained = {r.recipient: r.rule for r in explain(p, env, message).recipients}
    assert decided == explained


def test_explanations_never_quote_the_subject_or_the_text(tmp_path: Path) -> None:
    p = policy_with(tmp_path, '[[rule]]\nname = "ids"\nwhen = { nir = true }\naction = "protect"\n')
    message = facts(subject="Dossier de Mme Secret", text="NIR 1 84 03 75 123 456 90")
    out = explain(p, envelope(), message)
    for rendered in (out.to_text(), out.to_json()):
        assert "Secret" not in rendered and "123 456" not in rendered
    assert "the text contains a NIR with a valid key" in out.to_text()


def test_a_not_condition_explains_what_did_not_hold(tmp_path: Path) -> None:
    p = policy_with(tmp_path, '[[rule]]\nname = "outside"\nwhen = { not = { recipient_in = ["internal"] } }\naction = "pass"\n')
    (r,) = explain(p, envelope("p@gmail.com"), facts()).recipients
    assert r.held == ("as wanted, this did not hold: recipient p@gmail.com is not in list internal",)


def test_explain_shows_a_sender_tag_rule_refusing_a_message_without_its_tag(
        tmp_path: Path) -> None:
    """The README's "the policy decides it, `pli explain` shows it": the contractor sees
    the refusal and the words the sender will read, not a protect that would not happen."""
    default = ('[[rule]]\nname = "fallback"\ndefault = true\naction = "protect"\n'
               'protect = { access_code = "sender-tag" }\n')
    p = policy_with(tmp_path, "", default=default)
    (untagged,) = explain(p, envelope(), facts(subject="Résultats")).recipients
    assert (untagged.rule, untagged.action) == ("fallback", "block")
    assert "[code:1234]" in explain(p, envelope(), facts(subject="Résultats")).to_text()
    (tagged,) = explain(p, envelope(), facts(subject="Résultats [code:4821]")).recipients
    assert (tagged.rule, tagged.action) == ("fallback", "protect")
