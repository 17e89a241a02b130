"""Why each recipient got its decision, in words (for ``pli explain``).

Built from :func:`gateway.policy.engine.trace`, the evaluator ``decide`` uses, so the tool
and the live server give the same answer. The text names rules, lists, addresses, types and
sizes; never the subject, the body or file names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from gateway.policy.engine import Policy, trace
from gateway.types import Decision, Envelope, MessageFacts


@dataclass(frozen=True)
class RuleSkipped:
    rule: str
    failed: str


@dataclass(frozen=True)
class RecipientExplanation:
    recipient: str
    rule: str
    action: str
    settings: dict[str, Any]
    held: tuple[str, ...]
    skipped: tuple[RuleSkipped, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "rule": self.rule,
            "action": self.action,
            "settings": self.settings,
            "conditions_held": list(self.held),
            "rules_not_matching": [{"rule": s.rule, "failed": s.failed} for s in self.skipped],
        }


@dataclass(frozen=True)
class Explanation:
    recipients: tuple[RecipientExplanation, ...]

    def to_json(self) -> str:
        """Stable JSON: sorted keys, recipients in envelope order."""
        data = {"recipients": [r.as_dict() for r in self.recipients]}
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)

    def to_text(self) -> str:
        if not self.recipients:
            return "No recipient: nothing to decide."
        blocks = []
        for r in self.recipients:
            lines = [f"{r.recipient}: {r.action.upper()} by rule {r.rule!r}"]
            for skipped in r.skipped:
                lines.append(f"  - rule {skipped.rule!r} did not apply: {skipped.failed}")
            lines.append(f"  + rule {r.rule!r} applied:")
            lines.extend(f"      {reason}" for reason in r.held)
            if r.settings:
                shown = ", ".join(f"{k}={_show(v)}" for k, v in r.settings.items())
                lines.append(f"  = {r.action}: {shown}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def explain(policy: Policy, envelope: Envelope, facts: MessageFacts) -> Explanation:
    """For each recipient: the deciding rule, what held, and why each earlier rule did not."""
    explained = []
    for item in trace(policy, envelope, facts):
        deciding = next((r for r in item.tried if r.outcome.held), None)
        explained.append(
            RecipientExplanation(
                recipient=item.recipient,
                rule=item.decision.rule,
                action=item.decision.action,
                settings=_settings(item.decision),
                held=deciding.outcome.reasons if deciding is not None else (),
                skipped=tuple(
                    RuleSkipped(r.rule.name, r.outcome.reasons[0] if r.outcome.reasons else "")
                    for r in item.tried
                    if not r.outcome.held
                ),
            )
        )
    return Explanation(tuple(explained))


def _settings(decision: Decision) -> dict[str, Any]:
    if decision.protect is not None:
        return asdict(decision.protect)
    if decision.block is not None:
        return asdict(decision.block)
    return {}
