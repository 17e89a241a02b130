"""Policy: which recipients of a message pass, get a protected copy, or block it.

Public API (everything else in the package is internal)::

    load_policy(path) -> Policy
        Read the policy file and the lists it names. Raises PolicyError (a ConfigError)
        whose ``problems`` list every mistake and whose str() is the readable report.
        A Policy is immutable: a reload builds a new one and swaps the reference.

    check_policy(path) -> list[Problem]
        The same checks without raising; [] when the policy is good. Each Problem has
        ``file``, ``line``, ``rule``, ``field`` and ``message``; str(problem) is one line.

    decide(policy, envelope, facts) -> Decisions
        Pure. One Decision per recipient (rule name, action, settings), recipients that
        share a decision grouped, in envelope order: the transform makes one copy per group.

    explain(policy, envelope, facts) -> Explanation
        The same evaluation as decide, in words: ``.to_text()`` and ``.to_json()``.

    block_reply(decisions, *, utf8=False) -> str | None
        "550 5.7.1 <French> / <English>" when some recipient is blocked, else None.

    import_list(source_file, dest_list_file) -> ImportSummary
        Load a downloaded whitelist (the MSSanté XML, text or CSV) into a list file,
        atomically.

    consumer_smtp_reason(host, lists_dir) -> str | None
        Why Pli refuses to relay through ``host`` (a consumer provider), or None.

    access_code_tag(subject) -> str | None
        The code the sender gave with [code:NNNN]; for the vault, never to be logged.

    remove_subject_tags(subject, names=policy.tag_names) -> str
        The subject without Pli's tags ([code:…], [clair], …) before it goes out.

The policy file format is described in :mod:`gateway.policy.schema` and shown, commented,
in ``gateway/defaults/default.toml``.
"""

from gateway.policy.engine import Policy, decide
from gateway.policy.explain import Explanation, explain
from gateway.policy.lists import ImportSummary, consumer_smtp_reason, import_list
from gateway.policy.loader import PolicyError, Problem, check_policy, load_policy
from gateway.policy.patterns import access_code_tag, remove_subject_tags
from gateway.policy.reply import block_reply
from gateway.types import Decision, Decisions, RecipientGroup

__all__ = [
    "Decision",
    "Decisions",
    "Explanation",
    "ImportSummary",
    "Policy",
    "PolicyError",
    "Problem",
    "RecipientGroup",
    "access_code_tag",
    "block_reply",
    "check_policy",
    "consumer_smtp_reason",
    "decide",
    "explain",
    "import_list",
    "load_policy",
    "remove_subject_tags",
]
