from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import decide, load_policy
from gateway.types import Envelope, MessageFacts, ProtectSettings
from tests.policy.helpers import attachment, envelope, facts, policy_with

REPO = Path(__file__).resolve().parents[2]
NIR = "1 84 03 75 123 456 90"

# (case id, `when` table, envelope, facts, whether the rule under test holds)
CASES: list[tuple[str, str, Envelope, MessageFacts, bool]] = [
    ("recipient in a list", '{ recipient_in = ["webmail"] }', envelope("p@gmail.com"), facts(), True),
    ("recipient not in a list", '{ recipient_in = ["webmail"] }', envelope("p@chu.fr"), facts(), False),
    ("recipient in one of two lists", '{ recipient_in = ["internal", "secure"] }',
     envelope("x@cardio.hopital.mssante.fr"), facts(), True),
    ("recipient is an address", '{ recipient_is = ["P@Gmail.com"] }', envelope("p@gmail.com"), facts(), True),
    ("recipient is another address", '{ recipient_is = ["q@gmail.com"] }', envelope("p@gmail.com"), facts(), False),
    ("recipient is in a domain", '{ recipient_is = ["chu.fr"] }', envelope("p@chu.fr"), facts(), True),
    ("recipient under a wildcard", '{ recipient_is = ["*.chu.fr"] }', envelope("p@cardio.chu.fr"), facts(), True),
    ("envelope sender in a list", '{ sender_in = ["webmail"] }', envelope(sender="dr@yahoo.fr"), facts(), True),
    ("header From in a list", '{ sender_in = ["webmail"] }', envelope(),
     facts(header_from=("dr@orange.fr",)), True),
    ("no sender in a list", '{ sender_in = ["webmail"] }', envelope(),
     facts(header_from=("dr@cabinet-exemple.fr",)), False),
    ("null sender is no sender", '{ sender_in = ["webmail"] }', envelope(sender=""), facts(), False),
    ("sender is an address", '{ sender_is = ["dr@cabinet-exemple.fr"] }', envelope(), facts(), True),
    ("sender is another address", '{ sender_is = ["x@cabinet-exemple.fr"] }', envelope(), facts(), False),
    ("has attachments", "{ has_attachments = true }", envelope(),
     facts(attachments=(attachment("application/pdf"),)), True),
    ("has no attachments", "{ has_attachments = true }", envelope(), facts(), False),
    ("wants no attachments", "{ has_attachments = false }", envelope(), facts(), True),
    ("true type in a set", '{ attachment_type = ["application/pdf"] }', envelope(),
     facts(attachments=(attachment("application/pdf", declared="text/plain"),)), True),
    ("declared type is not looked at", '{ attachment_type = ["application/pdf"] }', envelope(),
     facts(attachments=(attachment("text/plain", declared="application/pdf"),)), False),
    ("true type by glob", '{ attachment_type = ["image/*"] }', envelope(),
     facts(attachments=(attachment("text/plain"), attachment("image/png"))), True),
    ("size over bytes", "{ size_over = 1000 }", envelope(), facts(size=1001), True),
    ("size at the limit", "{ size_over = 1000 }", envelope(), facts(size=1000), False),
    ("size over MB", '{ size_over = "10MB" }', envelope(), facts(size=10 * 1024 * 1024 + 1), True),
    ("size under MB", '{ size_over = "10MB" }', envelope(), facts(size=10 * 1024 * 1024), False),
    ("tag with named sender", '{ sender_is = ["dr@cabinet-exemple.fr"], subject_tag = "clair" }',
     envelope(), facts(subject="Résultats [clair]"), True),
    ("tag from another sender", '{ sender_is = ["x@cabinet-exemple.fr"], subject_tag = "clair" }',
     envelope(), facts(subject="Résultats [clair]"), False),
    ("tag missing", '{ sender_is = ["dr@cabinet-exemple.fr"], subject_tag = "[clair]" }',
     envelope(), facts(subject="Résultats"), False),
    ("keyword in body", '{ keywords = ["échographie"] }', envelope(),
     facts(text="Votre ECHOGRAPHIE"), True),
    ("keyword in subject", '{ keywords = ["ordonnance"] }', envelope(),
     facts(subject="Ordonnance"), True),
    ("keyword absent", '{ keywords = ["ordonnance"] }', envelope(), facts(text="bonjour"), False),
    ("pattern", '{ pattern = ["dossier\\\\s+n°\\\\s*\\\\d+"] }', envelope(),
     facts(text="Dossier n° 4521"), True),
    ("pattern absent", '{ pattern = ["dossier\\\\s+n°\\\\s*\\\\d+"] }', envelope(),
     facts(text="Dossier"), False),
    ("valid NIR", "{ nir = true }", envelope(), facts(text=f"NIR {NIR}"), True),
    ("NIR with a wrong key", "{ nir = true }", envelope(), facts(text="NIR 1 84 03 75 123 456 91"), False),
    ("no NIR wanted", "{ nir = false }", envelope(), facts(text="bonjour"), True),
    ("date of birth", "{ date_of_birth = true }", envelope(), facts(text="née le 12/03/1984"), True),
    ("no date of birth", "{ date_of_birth = true }", envelope(), facts(text="rdv le 12/03/2025"), False),
    ("all hold", '{ all = [{ has_attachments = true }, { recipient_in = ["webmail"] }] }',
     envelope("p@gmail.com"), facts(attachments=(attachment("image/png"),)), True),
    ("all: one fails", '{ all = [{ has_attachments = true }, { recipient_in = ["webmail"] }] }',
     envelope("p@gmail.com"), facts(), False),
    ("keys of one table are joined by and", '{ has_attachments = true, recipient_in = ["webmail"] }',
     envelope("p@gmail.com"), facts(), False),
    ("any: one holds", '{ any = [{ nir = true }, { date_of_birth = true }] }', envelope(),
     facts(text="né le 12/03/1984"), True),
    ("any: none holds", '{ any = [{ nir = true }, { date_of_birth = true }] }', envelope(),
     facts(text="bonjour"), False),
    ("not", '{ not = { recipient_in = ["internal"] } }', envelope("p@gmail.com"), facts(), True),
    ("not: inner holds", '{ not = { recipient_in = ["internal"] } }',
     envelope("a@cabinet-exemple.fr"), facts(), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("when", "env", "message", "holds"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_condition_decides_as_documented(
    tmp_path: Path, when: str, env: Envelope, message: MessageFacts, holds: bool
) -> None:
    policy = policy_with(
        tmp_path, f'[[rule]]\nname = "under-test"\nwhen = {when}\naction = "pass"\n'
    )
    (group,) = decide(policy, env, message).groups
    assert group.decision.rule == ("under-test" if holds else "fallback")


def test_a_block_rule_carries_the_sentences_the_sender_reads(tmp_path: Path) -> None:
    policy = policy_with(
        tmp_path,
        """
        [[rule]]
        name = "no-webmail"
        when = { sender_in = ["webmail"] }
        action = "block"
        block = { message_fr = "Refusé.", message_en = "Refused." }
        """,
    )
    (group,) = decide(policy, envelope(sender="dr@gmail.com"), facts()).groups
    assert group.decision.action == "block"
    assert group.decision.block is not None
    assert (group.decision.block.message_fr, group.decision.block.message_en) == ("Refusé.", "Refused.")


def test_a_protect_rule_carries_its_settings(tmp_path: Path) -> None:
    policy = policy_with(
        tmp_path,
        """
        [[rule]]
        name = "big"
        when = { size_over = "5MB" }
        action = "protect"
        [rule.protect]
        attachments = "keep"
        body = "keep"
        subject = "keep"
        expiry_days = 30
        download_limit = 2
        access_code = "none"
        language = "en"
        template = "hospital"
        keep_inline_images = true
        """,
    )
    (group,) = decide(policy, envelope(), facts(size=6 * 1024 * 1024)).groups
    assert group.decision.protect == ProtectSettings(
        attachments="keep", body="keep", subject="keep", expiry_days=30, download_limit=2,
        access_code="none", language="en", template="hospital", keep_inline_images=True,
    )  # fmt: skip


def test_protect_defaults_are_link_minimal_neutral_14_days_5_downloads(tmp_path: Path) -> None:
    (group,) = decide(policy_with(tmp_path, ""), envelope(), facts()).groups
    settings = group.decision.protect
    assert settings is not None
    assert (settings.attachments, settings.body, settings.subject) == ("link", "minimal", "neutral")
    assert (settings.expiry_days, settings.download_limit, settings.language) == (14, 5, "fr")


def test_a_colleague_and_a_patient_get_two_groups_in_envelope_order(tmp_path: Path) -> None:
    policy = policy_with(
        tmp_path,
        '[[rule]]\nname = "colleagues"\nwhen = { recipient_in = ["internal"] }\naction = "pass"\n',
    )
    env = envelope("p@gmail.com", "secretariat@cabinet-exemple.fr", "q@gmail.com")
    groups = decide(policy, env, facts()).groups
    assert [(g.decision.rule, g.recipients) for g in groups] == [
        ("fallback", ("p@gmail.com", "q@gmail.com")),
        ("colleagues", ("secretariat@cabinet-exemple.fr",)),
    ]


def test_a_sender_condition_applies_to_every_recipient(tmp_path: Path) -> None:
    policy = policy_with(
        tmp_path,
        """
        [[rule]]
        name = "no-webmail"
        when = { sender_in = ["webmail"] }
        action = "block"
        block = { message_fr = "Non.", message_en = "No." }
        [[rule]]
        name = "colleagues"
        when = { recipient_in = ["internal"] }
        action = "pass"
        """,
    )
    env = envelope("a@cabinet-exemple.fr", "p@gmail.com", sender="dr@gmail.com")
    (group,) = decide(policy, env, facts()).groups
    assert group.decision.rule == "no-webmail"
    assert group.recipients == ("a@cabinet-exemple.fr", "p@gmail.com")


def test_the_first_rule_that_holds_decides(tmp_path: Path) -> None:
    policy = policy_with(
        tmp_path,
        """
        [[rule]]
        name = "first"
        when = { recipient_in = ["webmail"] }
        action = "pass"
        [[rule]]
        name = "second"
        when = { recipient_is = ["gmail.com"] }
        action = "protect"
        """,
    )
    (group,) = decide(policy, envelope("p@gmail.com"), facts()).groups
    assert group.decision.rule == "first"


def test_no_recipient_gives_no_group(tmp_path: Path) -> None:
    policy = policy_with(tmp_path, "")
    assert decide(policy, Envelope("dr@cabinet-exemple.fr", ()), facts()).groups == ()


@pytest.mark.parametrize(
    ("mode", "subject", "resolved"),
    [
        ("sender-tag-or-generated", "Résultats [code:4821]", "sender-tag"),
        ("sender-tag-or-generated", "Résultats", "generated"),
        ("sender-tag-or-generated", "Résultats [code:1]", "generated"),
        ("sender-tag", "Résultats [code:4821]", "sender-tag"),
        ("generated", "Résultats [code:4821]", "generated"),
        ("none", "Résultats [code:4821]", "none"),
    ],
)
def test_the_access_code_mode_is_settled_for_the_message(
    tmp_path: Path, mode: str, subject: str, resolved: str
) -> None:
    default = f'[[rule]]\nname = "fallback"\ndefault = true\naction = "protect"\nprotect = {{ access_code = "{mode}" }}\n'
    policy = policy_with(tmp_path, "", default=default)
    (group,) = decide(policy, envelope(), facts(subject=subject)).groups
    assert group.decision.protect is not None
    assert group.decision.protect.access_code == resolved


def test_a_sender_tag_rule_refuses_a_message_without_a_tag_saying_how(tmp_path: Path) -> None:
    """The policy's answer is final: the protect step never turns it into something else."""
    default = ('[[rule]]\nname = "fallback"\ndefault = true\naction = "protect"\n'
               'protect = { access_code = "sender-tag" }\n')
    policy = policy_with(tmp_path, "", default=default)
    for subject in ("Résultats", "Résultats [code:1]"):  # no tag, or one too short to be a code
        (group,) = decide(policy, envelope(), facts(subject=subject)).groups
        assert group.decision.action == "block" and group.decision.rule == "fallback"
        assert group.decision.block is not None
        assert "[code:1234]" in group.decision.block.message_fr
        assert "[code:1234]" in group.decision.block.message_en


# --- The policy Pli installs ---------------------------------------------------------------


@pytest.fixture
def default_policy(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "pli"
    (folder / "lists").mkdir(parents=True)
    for source in (REPO / "gateway" / "defaults" / "lists").glob("*.txt"):
        (folder / "lists" / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "lists" / "internal.txt").write_text("cabinet-exemple.fr\n", encoding="utf-8")
    policy_file = folder / "policy.toml"
    policy_file.write_text((REPO / "gateway" / "defaults" / "default.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return load_policy(policy_file)


def test_the_shipped_policy_loads_as_it_is() -> None:
    assert len(load_policy(REPO / "gateway" / "defaults" / "default.toml").rules) == 3


@pytest.mark.parametrize("sender", ["dr@gmail.com", "dr@yahoo.fr", "dr@hotmail.fr", "dr@orange.fr"])
def test_the_default_policy_blocks_senders_at_consumer_webmail(default_policy, sender: str) -> None:  # type: ignore[no-untyped-def]
    (group,) = decide(default_policy, envelope("p@gmail.com", sender=sender), facts()).groups
    assert group.decision.action == "block"
    assert group.decision.block is not None and group.decision.block.code == 550


def test_the_default_policy_blocks_a_consumer_address_in_the_from_header(default_policy) -> None:  # type: ignore[no-untyped-def]
    env = envelope("p@gmail.com")
    (group,) = decide(default_policy, env, facts(header_from=("dr@free.fr",))).groups
    assert group.decision.action == "block"


@pytest.mark.parametrize("recipient", ["secretariat@cabinet-exemple.fr", "dr.x@medecin.mssante.fr",
                                       # a patient's Mon espace santé mailbox
                                       "jeanne.dupont@patient.mssante.fr",
                                       # a domain of the national whitelist
                                       "accueil@adsea29.mssante.fr"])
def test_the_default_policy_passes_colleagues_and_secure_health(default_policy, recipient: str) -> None:  # type: ignore[no-untyped-def]
    (group,) = decide(default_policy, envelope(recipient), facts()).groups
    assert group.decision.action == "pass"


@pytest.mark.parametrize("recipient", ["p@gmail.com", "direction@ecole.fr", "rh@employeur.com",
                                       # ends in mssante.fr, but in no list: not trusted
                                       "x@inconnu.mssante.fr"])
def test_the_default_policy_protects_everyone_else(default_policy, recipient: str) -> None:  # type: ignore[no-untyped-def]
    (group,) = decide(default_policy, envelope(recipient), facts()).groups
    assert group.decision.action == "protect"
    assert group.decision.protect == ProtectSettings(
        access_code="generated", max_expiry_days=30, max_download_limit=10)
