"""Whatever the message and envelope, deciding never raises and always decides everyone."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import Policy, block_reply, decide, explain, load_policy
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
    text=text | st.sampled_from(["né le 31/02/1984", "1 84 03 2A 123 456 99", "DOB 1984-13-40"]),
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
