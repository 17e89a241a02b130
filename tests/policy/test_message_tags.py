"""The sender's tags for one message: notices on or off, the link's expiry and each
document's download limit, settled by the decision, bounded by the rule's maxima, with
names the policy may change, and removed from every copy that leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import check_policy, decide, remove_subject_tags
from gateway.types import NOTICE_EVENTS
from tests.policy.helpers import envelope, facts, policy_with, write_policy

RULE = """
[[rule]]
name = "fallback"
default = true
action = "protect"
[rule.protect]
expiry_days = 14
max_expiry_days = 30
download_limit = 5
max_download_limit = 10
notify = ["opened"]
"""


def settled(tmp_path: Path, subject: str, *, default: str = RULE, header: str | None = None):
    kwargs = {"default": default} if header is None else {"default": default, "header": header}
    policy = policy_with(tmp_path, "", **kwargs)
    (group,) = decide(policy, envelope(), facts(subject=subject)).groups
    return policy, group.decision


@pytest.mark.parametrize(("subject", "notify"), [
    ("Résultats", ("opened",)),
    ("Résultats [avis]", NOTICE_EVENTS),
    ("Résultats [AVIS]", NOTICE_EVENTS),
    ("Résultats [sans-avis]", ()),
    ("[avis] Résultats [sans-avis]", ()),  # the safer of the two wins: no notice
])
def test_the_notices_are_the_rules_unless_the_subject_asks(tmp_path: Path, subject: str,
                                                           notify: tuple[str, ...]) -> None:
    _, decision = settled(tmp_path, subject)
    assert decision.action == "protect" and decision.protect is not None
    assert decision.protect.notify == notify


@pytest.mark.parametrize(("subject", "days", "downloads"), [
    ("Résultats", 14, 5),
    ("Résultats [expire:3j]", 3, 5),
    ("Résultats [expire: 30 jours]", 30, 5),
    ("Résultats [expire:2d] [telechargements:1]", 2, 1),
    ("Résultats [téléchargements:10]", 14, 10),
])
def test_expiry_and_downloads_come_from_the_tags_within_the_rules_maxima(
        tmp_path: Path, subject: str, days: int, downloads: int) -> None:
    _, decision = settled(tmp_path, subject)
    assert decision.protect is not None
    assert (decision.protect.expiry_days, decision.protect.download_limit) == (days, downloads)
    assert (decision.protect.max_expiry_days, decision.protect.max_download_limit) == (30, 10)


@pytest.mark.parametrize(("subject", "said"), [
    ("Résultats [expire:31j]", "[expire:30j]"),
    ("Résultats [telechargements:11]", "[telechargements:10]"),
])
def test_a_tag_asking_for_more_than_the_rule_allows_refuses_the_message_saying_the_most(
        tmp_path: Path, subject: str, said: str) -> None:
    _, decision = settled(tmp_path, subject)
    assert decision.action == "block" and decision.rule == "fallback"
    assert decision.block is not None
    assert said in decision.block.message_fr and said in decision.block.message_en


@pytest.mark.parametrize("subject", ["Résultats [expire:bientôt]", "Résultats [expire:0]",
                                     "Résultats [telechargements:-1]", "Résultats [expire]"])
def test_a_tag_that_cannot_be_read_refuses_the_message_with_an_example(
        tmp_path: Path, subject: str) -> None:
    _, decision = settled(tmp_path, subject)
    assert decision.action == "block" and decision.block is not None
    assert "par exemple [" in decision.block.message_fr
    assert "for example [" in decision.block.message_en


def test_without_maxima_a_tag_may_shorten_but_not_lengthen(tmp_path: Path) -> None:
    rule = RULE.replace("max_expiry_days = 30\n", "").replace("max_download_limit = 10\n", "")
    _, shorter = settled(tmp_path, "R [expire:3j] [telechargements:2]", default=rule)
    assert shorter.protect is not None
    assert (shorter.protect.expiry_days, shorter.protect.download_limit) == (3, 2)
    _, longer = settled(tmp_path, "R [expire:15j]", default=rule)
    assert longer.action == "block"


def test_the_tags_names_are_the_policys_and_every_one_is_removed_from_the_subject(
        tmp_path: Path) -> None:
    header = ('[tags]\nnotify = "notice"\nno_notify = "silence"\nexpiry = "jours"\n'
              'downloads = "fois"\n')
    policy, decision = settled(tmp_path, "Résultats [notice] [jours:2] [fois:1] [avis]",
                               header=header)
    assert decision.protect is not None
    assert decision.protect.notify == NOTICE_EVENTS
    assert (decision.protect.expiry_days, decision.protect.download_limit) == (2, 1)
    assert remove_subject_tags("Résultats [notice] [jours:2] [Fois:1] [silence] [code:4821]",
                               policy.tag_names) == "Résultats"
    # The default names mean nothing here: [avis] is an ordinary bracketed word.
    assert remove_subject_tags("Résultats [avis]", policy.tag_names) == "Résultats [avis]"


def test_the_default_names_are_removed_accents_and_case_aside(tmp_path: Path) -> None:
    policy, _ = settled(tmp_path, "Résultats")
    subject = "[URGENT] Résultats [Avis] [sans-avis] [expire:3j] [Téléchargements:1]"
    assert remove_subject_tags(subject, policy.tag_names) == "[URGENT] Résultats"


@pytest.mark.parametrize(("tags", "words"), [
    ('[tags]\nnotify = "expire"\n', "share a name"),
    ('[tags]\nnotify = "code"\n', "not a tag name"),
    ('[tags]\nexpiry = "3 jours"\n', "not a tag name"),
    ('[tags]\nnotfy = "avis"\n', "unknown key"),
])
def test_tag_names_that_cannot_work_are_reported(tmp_path: Path, tags: str, words: str) -> None:
    path = write_policy(tmp_path, "", header=tags)
    problems = check_policy(path)
    assert problems and any(words in p.message for p in problems), problems


def test_a_maximum_below_the_rules_own_value_is_reported(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "", default=RULE.replace("max_expiry_days = 30",
                                                           "max_expiry_days = 7"))
    problems = check_policy(path)
    assert any("max_expiry_days" in p.message for p in problems), problems
