"""Whatever the message and envelope, deciding never raises and always decides everyone."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import Policy, block_reply, decide, explain, load_policy
from gateway.policy.patterns import contains_date_of_birth, contains_nir, nir_key_is_valid
from gateway.types import AttachmentFacts, Envelope, MessageFacts

RULES = """
[lists]
webmail = "lists/webmail.txt"

[[rule]]
name = "no-webmail"
when = { sender_in = ["webmail"] }
action = "block"
block = { message_fr = "Non.", message_en = "No." }

[[rule]]
name = "clair"
when = { sender_is = ["dr@cabinet.fr"], subject_tag = "clair" }
action = "pass"

[[rule]]
name = "content"
when = { any = [{ nir = true }, { date_of_birth = true }, { keywords = ["échographie"] },
                { pattern = ["\\\\d{5}"] }, { not = { attachment_type = ["image/*"] } }] }
action = "protect"

[[rule]]
name = "big"
when = { all = [{ size_over = "1KB" }, { has_attachments = true }, { recipient_is = ["*.fr", "x@y.com", "yahoo.*"] }] }
action = "protect"
protect = { access_code = "sender-tag-or-generated" }

[[rule]]
name = "fallback"
default = true
action = "pass"
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    folder = tmp_path_factory.mktemp("policy")
    (folder / "lists").mkdir()
    (folder / "lists" / "webmail.txt").write_text("gmail.com\nyahoo.*\n*.exemple.fr\n", encoding="utf-8")
    (folder / "policy.toml").write_text(RULES, encoding="utf-8")
    return load_policy(folder / "policy.toml")


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
address = st.one_of(
    text,
    st.builds(lambda local, domain: f"{local}@{domain}", text, text),
    st.sampled_from(["dr@gmail.com", "p@yahoo.fr", "dr@cabinet.fr", "x@xn--hpital-ixa.fr", "@", ""]),
)
attachments = st.builds(
    AttachmentFacts,
    filename=st.none() | text,
    declared_type=text,
    true_type=text | st.sampled_from(["image/png", "application/pdf"]),
    size=st.integers(min_value=0, max_value=10**9),
    inline=st.booleans(),
    depth=st.integers(min_value=0, max_value=50),
)
facts = st.builds(
    MessageFacts,
    header_from=st.lists(address, max_size=3).map(tuple),
    subject=text | st.sampled_from(["[clair]", "[code:1234] x", "[[code:]]"]),
    size=st.integers(min_value=0, max_value=10**10),
    attachments=st.lists(attachments, max_size=3).map(tuple),
    text=text | st.sampled_from(["né le 31/02/1984", "1 84 03 2A 123 456 99", "DOB 1984-13-40",
                                  "née le 12/03/1984", "1 84 03 75 123 456 90"]),  # found
    defects=st.integers(min_value=0, max_value=10),
)
envelopes = st.builds(
    Envelope,
    mail_from=address,
    rcpt_tos=st.lists(address, max_size=5).map(tuple),
    smtputf8=st.booleans(),
)

@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, facts)
def test_decide_never_raises_and_decides_every_recipient(
    policy: Policy, env: Envelope, message: MessageFacts
) -> None:
    decisions = decide(policy, env, message)
    assert sorted(decisions.recipients) == sorted(env.rcpt_tos)
    block_reply(decisions)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, facts)
def test_explain_always_agrees_with_decide(
    policy: Policy, env: Envelope, message: MessageFacts
) -> None:
    decisions = decide(policy, env, message)
    explained = explain(policy, env, message)
    for item in explained.recipients:
        decision = decisions.decision_for(item.recipient)
        assert decision is not None and decision.rule == item.rule
    explained.to_json()


# -- texts that hold what the content conditions look for ---------------------------------
# The samples above are all near misses (an impossible date, a wrong key): these reach the
# branches where a NIR or a date of birth is found.

def _nir(sex: int, year: int, month: int, department: str, commune: int, order: int) -> str:
    number = f"{sex}{year:02d}{month:02d}{department}{commune:03d}{order:03d}"
    counted = number.replace("2A", "19").replace("2B", "18") if department in ("2A", "2B") \
        else number
    key = 97 - int(counted) % 97
    return f"{number}{key:02d}"


valid_nirs = st.builds(
    _nir, st.sampled_from([1, 2]), st.integers(0, 99), st.integers(1, 12),
    st.sampled_from(["2A", "2B"]) | st.integers(1, 95).map(lambda d: f"{d:02d}"),
    st.integers(1, 999), st.integers(1, 999))


def _spaced(nir: str) -> str:
    """As people write it: "1 84 03 75 123 456 78"."""
    return " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:]))


MONTH_NAMES = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
               "septembre", "octobre", "novembre", "décembre"]
births = st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2100, 12, 31))
stated_births = st.one_of(
    births.map(lambda d: f"née le {d.day:02d}/{d.month:02d}/{d.year}"),
    births.map(lambda d: f"Date de naissance : {d.day}.{d.month}.{d.year}"),
    births.map(lambda d: f"DOB {d.year}-{d.month:02d}-{d.day:02d}"),
    births.map(lambda d: f"né le {d.day} {MONTH_NAMES[d.month - 1]} {d.year}"),
    births.map(lambda d: f"born on {d.strftime('%B')} {d.day}, {d.year}"),
)


@settings(max_examples=200)
@given(valid_nirs, st.booleans(), text, text)
def test_a_nir_with_a_valid_key_is_found_wherever_it_stands(
        nir: str, spaced: bool, before: str, after: str) -> None:
    written = _spaced(nir) if spaced else nir
    assert nir_key_is_valid(written)
    assert contains_nir(f"{before} {written} {after}")


@settings(max_examples=200)
@given(stated_births, text)
def test_a_stated_date_of_birth_is_found(stated: str, after: str) -> None:
    assert contains_date_of_birth(f"Patient {stated} {after}")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(valid_nirs.map(_spaced), stated_births), text,
       st.lists(address, min_size=1, max_size=3).map(tuple))
def test_a_message_holding_a_nir_or_a_date_of_birth_is_decided_by_its_rule(
        policy: Policy, found: str, around: str, recipients: tuple[str, ...]) -> None:
    message = MessageFacts(header_from=("dr@cabinet.fr",), subject="Résultats", size=100,
                           attachments=(), text=f"{around}\n{found}\n", defects=0)
    env = Envelope(mail_from="dr@cabinet.fr", rcpt_tos=recipients)
    decisions = decide(policy, env, message)
    assert sorted(decisions.recipients) == sorted(recipients)
    for recipient in recipients:
        decision = decisions.decision_for(recipient)
        assert decision is not None
        assert (decision.rule, decision.action) == ("content", "protect")
