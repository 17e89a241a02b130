"""The rule engine: for each recipient, the first rule whose ``when`` holds decides.

:func:`trace` is the one evaluator; :func:`decide` groups its verdicts, and
:func:`gateway.policy.explain.explain` puts its reasons into words. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.policy.conditions import MessageContext, Node, Outcome
from gateway.policy.lists import DomainList
from gateway.policy.patterns import (
    BadTag,
    TagNames,
    access_code_tag,
    days_asked,
    downloads_asked,
    notices_asked,
)
from gateway.types import (
    NOTICE_EVENTS,
    AccessCodeMode,
    BlockSettings,
    Decision,
    Decisions,
    Envelope,
    MessageFacts,
    ProtectSettings,
    RecipientGroup,
)


@dataclass(frozen=True)
class Rule:
    """A compiled rule. ``condition`` is None for the default rule, which always holds."""

    name: str
    condition: Node | None
    decision: Decision
    line: int | None = None


@dataclass(frozen=True, eq=False)
class Policy:
    """A loaded, validated policy. Immutable: a reload builds a new one and swaps it whole."""

    path: Path | None
    rules: tuple[Rule, ...]
    lists: Mapping[str, DomainList]
    tag_names: frozenset[str] = frozenset({"code", *TagNames().all()})
    tags: TagNames = TagNames()


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    outcome: Outcome


@dataclass(frozen=True)
class RecipientTrace:
    """How one recipient was decided: every rule tried, the last one being the one that held."""

    recipient: str
    tried: tuple[RuleResult, ...]
    decision: Decision


_DEFAULT_OUTCOME = Outcome(True, ("default rule: applies when no rule above did",))


def trace(policy: Policy, envelope: Envelope, facts: MessageFacts) -> tuple[RecipientTrace, ...]:
    """Evaluate the rules for every recipient, in envelope order."""
    ctx = MessageContext(envelope, facts)
    return tuple(_trace_one(policy, ctx, rcpt) for rcpt in envelope.rcpt_tos)


def _trace_one(policy: Policy, ctx: MessageContext, recipient: str) -> RecipientTrace:
    tried: list[RuleResult] = []
    for rule in policy.rules:
        if rule.condition is None:
            outcome = _DEFAULT_OUTCOME
        else:
            outcome = rule.condition.evaluate(ctx, recipient)
        tried.append(RuleResult(rule, outcome))
        if outcome.held:
            return RecipientTrace(recipient, tuple(tried),
                                  _resolve(rule.decision, ctx, policy.tags))
    # load_policy guarantees a default rule; this keeps a hand-built policy safe anyway.
    return RecipientTrace(recipient, tuple(tried), FALLBACK_DECISION)


FALLBACK_DECISION = Decision(rule="(no rule held)", action="protect", protect=ProtectSettings())
"""What a policy without a default rule would do: protect with the default settings,
never pass by accident (and never decide a protect the transform has no settings for)."""


def _resolve(decision: Decision, ctx: MessageContext, tags: TagNames) -> Decision:
    """Settle what the sender's subject tags ask for this message, once and for all: the
    access code, the notices, the expiry and the download limit. The protect step does
    what this says. A rule that needs the sender's ``[code:NNNN]`` tag refuses a message
    without one, and a tag asking for more than the rule allows, or that cannot be read,
    refuses the message too, each with the sentence that says what to write."""
    settings = decision.protect
    if settings is None:
        return decision
    subject = ctx.facts.subject
    mode: AccessCodeMode = settings.access_code
    if mode not in ("none", "generated"):
        if access_code_tag(subject) is not None:
            mode = "sender-tag"
        elif mode == "sender-tag-or-generated":
            mode = "generated"
        else:
            return Decision(rule=decision.rule, action="block", block=NEEDS_CODE_TAG)
    notify = settings.notify
    asked = notices_asked(subject, tags)
    if asked is not None:
        notify = NOTICE_EVENTS if asked else ()
    try:
        days = days_asked(subject, tags)
        downloads = downloads_asked(subject, tags)
    except BadTag as bad:
        return Decision(rule=decision.rule, action="block", block=_unreadable_tag(
            bad.name, tags, settings))
    if days is not None and days > settings.max_expiry_days:
        return Decision(rule=decision.rule, action="block", block=_too_much(
            tags.expiry, f"{settings.max_expiry_days}j", "jours", "days",
            settings.max_expiry_days))
    if downloads is not None and downloads > settings.max_download_limit:
        return Decision(rule=decision.rule, action="block", block=_too_much(
            tags.downloads, str(settings.max_download_limit), "téléchargements par document",
            "downloads per document", settings.max_download_limit))
    return Decision(rule=decision.rule, action=decision.action, protect=replace(
        settings, access_code=mode, notify=notify,
        expiry_days=settings.expiry_days if days is None else days,
        download_limit=settings.download_limit if downloads is None else downloads))


def _unreadable_tag(name: str, tags: TagNames, settings: ProtectSettings) -> BlockSettings:
    example = f"[{tags.expiry}:3j]" if name == tags.expiry else f"[{tags.downloads}:1]"
    return BlockSettings(
        message_fr=f"L'étiquette [{name}:…] de l'objet ne se lit pas : écrivez par exemple "
                   f"{example} (un nombre entier, au moins 1), puis renvoyez le message",
        message_en=f"The subject's [{name}:…] tag cannot be read: write for example "
                   f"{example} (a whole number, at least 1), then send again",
        code=550, status="5.7.1")


def _too_much(name: str, most: str, unit_fr: str, unit_en: str, limit: int) -> BlockSettings:
    return BlockSettings(
        message_fr=f"L'étiquette [{name}:…] demande plus que la politique du cabinet ne "
                   f"permet ({limit} {unit_fr} au plus) : écrivez [{name}:{most}] ou moins, "
                   "puis renvoyez le message",
        message_en=f"The subject's [{name}:…] tag asks for more than the practice's policy "
                   f"allows (at most {limit} {unit_en}): write [{name}:{most}] or less, then "
                   "send again",
        code=550, status="5.7.1")


NEEDS_CODE_TAG = BlockSettings(
    message_fr="Ce message doit porter le code d'accès que le destinataire saisira : "
               "ajoutez-le à l'objet sous la forme [code:1234] (4 à 12 lettres ou chiffres), "
               "puis renvoyez-le",
    message_en="This message needs the access code the recipient will type: add it to the "
               "subject as [code:1234] (4 to 12 letters or digits), then send again",
    code=550, status="5.7.1")
"""A ``sender-tag`` rule's answer to a message without a tag."""


def decide(policy: Policy, envelope: Envelope, facts: MessageFacts) -> Decisions:
    """Each recipient's decision, recipients sharing a decision grouped, in envelope order."""
    groups: dict[Decision, list[str]] = {}
    for item in trace(policy, envelope, facts):
        groups.setdefault(item.decision, []).append(item.recipient)
    return Decisions(tuple(RecipientGroup(d, tuple(r)) for d, r in groups.items()))
