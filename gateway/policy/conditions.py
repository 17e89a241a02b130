"""Compiled conditions and the one evaluator shared by ``decide`` and ``explain``.

Every condition answers with an :class:`Outcome`: whether it held, and in words why (what
held, or the first thing that failed). ``decide`` ignores the words, ``explain`` shows them;
both go through :meth:`Node.evaluate`, so the server and the contractor's tool cannot
disagree. The words name addresses, list entries, types and sizes, never message text.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Protocol

from gateway.policy import schema
from gateway.policy.domains import DomainPattern, normalise_address
from gateway.policy.lists import DomainList
from gateway.policy.patterns import (
    contains_date_of_birth,
    contains_nir,
    fold,
    keyword_regex,
    subject_tags,
)
from gateway.types import Envelope, MessageFacts

Role = Literal["recipient", "sender"]


@dataclass(frozen=True)
class Outcome:
    held: bool
    reasons: tuple[str, ...]


class MessageContext:
    """What every rule may look at for one message, computed once and then cached."""

    def __init__(self, envelope: Envelope, facts: MessageFacts) -> None:
        self.envelope = envelope
        self.facts = facts
        senders = [envelope.mail_from, *facts.header_from]
        self.senders = tuple(dict.fromkeys(normalise_address(s) for s in senders if s.strip()))

    @cached_property
    def raw_text(self) -> str:
        return self.facts.subject + "\n" + self.facts.text

    @cached_property
    def folded_text(self) -> str:
        return fold(self.raw_text)

    @cached_property
    def tags(self) -> dict[str, str]:
        return subject_tags(self.facts.subject)

    @cached_property
    def has_nir(self) -> bool:
        return contains_nir(self.raw_text)

    @cached_property
    def has_date_of_birth(self) -> bool:
        return contains_date_of_birth(self.raw_text)


class Node(Protocol):
    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome: ...


def _held(*reasons: str) -> Outcome:
    return Outcome(True, reasons)


def _failed(reason: str) -> Outcome:
    return Outcome(False, (reason,))


@dataclass(frozen=True)
class AllOf:
    children: tuple[Node, ...]

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        held: list[str] = []
        for child in self.children:
            outcome = child.evaluate(ctx, recipient)
            if not outcome.held:
                return outcome
            held.extend(outcome.reasons)
        return Outcome(True, tuple(held))


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        failures: list[str] = []
        for child in self.children:
            outcome = child.evaluate(ctx, recipient)
            if outcome.held:
                return outcome
            failures.extend(outcome.reasons)
        return _failed("none of these held: " + "; ".join(failures))


@dataclass(frozen=True)
class Not:
    child: Node

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        outcome = self.child.evaluate(ctx, recipient)
        if outcome.held:
            return _failed("not wanted, but held: " + "; ".join(outcome.reasons))
        return _held("as wanted, this did not hold: " + "; ".join(outcome.reasons))


def _who(role: Role, ctx: MessageContext, recipient: str) -> tuple[str, ...]:
    return (recipient,) if role == "recipient" else ctx.senders


@dataclass(frozen=True)
class InList:
    role: Role
    lists: tuple[DomainList, ...]

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        who = _who(self.role, ctx, recipient)
        for address in who:
            for domain_list in self.lists:
                entry = domain_list.match(address)
                if entry is not None:
                    return _held(
                        f"{self.role} {address} is in list {domain_list.name} "
                        f"(entry {entry.text})"
                    )
        names = ", ".join(d.name for d in self.lists)
        return _failed(f"{self.role} {_show(who)} is not in list {names}")


@dataclass(frozen=True)
class IsOneOf:
    role: Role
    patterns: DomainList

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        who = _who(self.role, ctx, recipient)
        for address in who:
            entry = self.patterns.match(address)
            if entry is not None:
                return _held(f"{self.role} {address} matches {entry.text}")
        wanted = ", ".join(p.text for p in self.patterns.patterns)
        return _failed(f"{self.role} {_show(who)} matches none of {wanted}")


def _show(addresses: tuple[str, ...]) -> str:
    return ", ".join(addresses) if addresses else "(none)"


@dataclass(frozen=True)
class HasAttachments:
    expected: bool

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        count = len(ctx.facts.attachments)
        said = f"the message has {count} attachment(s)" if count else "the message has none"
        return Outcome((count > 0) == self.expected, (said,))


@dataclass(frozen=True)
class AttachmentType:
    globs: tuple[str, ...]

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        for attachment in ctx.facts.attachments:
            kind = attachment.true_type.lower()
            for glob in self.globs:
                if fnmatch.fnmatchcase(kind, glob):
                    return _held(f"an attachment is {kind} (matches {glob})")
        found = sorted({a.true_type for a in ctx.facts.attachments})
        return _failed(
            f"no attachment is of type {', '.join(self.globs)} (found: {_show(tuple(found))})"
        )


@dataclass(frozen=True)
class SizeOver:
    limit: int

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        size = ctx.facts.size
        if size > self.limit:
            return _held(f"the message is {size} bytes, over {self.limit}")
        return _failed(f"the message is {size} bytes, not over {self.limit}")


@dataclass(frozen=True)
class SubjectTag:
    tag: str

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        if fold(self.tag) in ctx.tags:
            return _held(f"the subject has the tag [{self.tag}]")
        return _failed(f"the subject has no [{self.tag}] tag")


@dataclass(frozen=True)
class Keywords:
    words: tuple[str, ...]
    regex: re.Pattern[str] | None

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        match = self.regex.search(ctx.folded_text) if self.regex else None
        if match is not None:
            word = next((w for w in self.words if fold(w).split() == match.group().split()), None)
            return _held(f"the text contains the keyword {word or match.group()!r}")
        return _failed(f"the text contains none of the keywords {', '.join(self.words)}")


@dataclass(frozen=True)
class Pattern:
    sources: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...]

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        for source, regex in zip(self.sources, self.regexes, strict=True):
            if regex.search(ctx.raw_text):
                return _held(f"the text matches the pattern {source!r}")
        return _failed(f"the text matches none of the patterns {', '.join(self.sources)}")


@dataclass(frozen=True)
class Nir:
    expected: bool

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        found = ctx.has_nir
        said = "the text contains a NIR with a valid key" if found else (
            "the text contains no NIR with a valid key"
        )
        return Outcome(found == self.expected, (said,))


@dataclass(frozen=True)
class DateOfBirth:
    expected: bool

    def evaluate(self, ctx: MessageContext, recipient: str) -> Outcome:
        found = ctx.has_date_of_birth
        said = "the text states a date of birth" if found else "the text states no date of birth"
        return Outcome(found == self.expected, (said,))


# --- From the schema to nodes ------------------------------------------------------------


def compile_condition(model: schema.Condition, lists: Mapping[str, DomainList]) -> Node:
    """Turn a validated ``when`` table into a node; list names must exist in ``lists``."""
    nodes = [_compile_key(key, model, lists) for key in model.keys()]
    return nodes[0] if len(nodes) == 1 else AllOf(tuple(nodes))


def _compile_key(key: str, model: schema.Condition, lists: Mapping[str, DomainList]) -> Node:
    if key == "all":
        return AllOf(tuple(compile_condition(c, lists) for c in model.all or ()))
    if key == "any":
        return AnyOf(tuple(compile_condition(c, lists) for c in model.any or ()))
    if key == "not":
        assert model.not_ is not None
        return Not(compile_condition(model.not_, lists))
    if key in ("recipient_in", "sender_in"):
        role: Role = "recipient" if key == "recipient_in" else "sender"
        names = getattr(model, key)
        return InList(role, tuple(lists[n] for n in names))
    if key in ("recipient_is", "sender_is"):
        role = "recipient" if key == "recipient_is" else "sender"
        entries = [DomainPattern.parse(e) for e in getattr(model, key)]
        return IsOneOf(role, DomainList.of(key, [e for e in entries if e is not None]))
    if key == "has_attachments":
        return HasAttachments(bool(model.has_attachments))
    if key == "attachment_type":
        return AttachmentType(tuple(model.attachment_type or ()))
    if key == "size_over":
        return SizeOver(int(model.size_over or 0))
    if key == "subject_tag":
        return SubjectTag(model.subject_tag or "")
    if key == "keywords":
        words = tuple(model.keywords or ())
        return Keywords(words, keyword_regex(words))
    if key == "pattern":
        sources = tuple(model.pattern or ())
        return Pattern(sources, tuple(re.compile(s, re.IGNORECASE) for s in sources))
    if key == "nir":
        return Nir(bool(model.nir))
    if key == "date_of_birth":
        return DateOfBirth(bool(model.date_of_birth))
    raise ValueError(f"unknown condition {key!r}")  # the schema makes this unreachable
