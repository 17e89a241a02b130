"""Build policy files and facts in a temporary folder, in code."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from gateway.policy import Policy, load_policy
from gateway.types import AttachmentFacts, Envelope, MessageFacts

LISTS = {
    "webmail": "gmail.com\nyahoo.*\norange.fr\n",
    "internal": "cabinet-exemple.fr\n",
    "secure": "medecin.mssante.fr\n*.hopital.mssante.fr\n",
}

HEADER = """
[lists]
webmail = "lists/webmail.txt"
internal = "lists/internal.txt"
secure = "lists/secure.txt"
"""

DEFAULT_RULE = """
[[rule]]
name = "fallback"
default = true
action = "protect"
"""


def write_policy(folder: Path, rules: str, *, header: str = HEADER, default: str = DEFAULT_RULE,
                 lists: dict[str, str] | None = None) -> Path:  # fmt: skip
    (folder / "lists").mkdir(exist_ok=True)
    for name, text in (LISTS if lists is None else lists).items():
        (folder / "lists" / f"{name}.txt").write_text(text, encoding="utf-8")
    path = folder / "policy.toml"
    path.write_text(dedent(header) + dedent(rules) + dedent(default), encoding="utf-8")
    return path


def policy_with(folder: Path, rules: str, **kwargs: object) -> Policy:
    return load_policy(write_policy(folder, rules, **kwargs))  # type: ignore[arg-type]


def envelope(*rcpts: str, sender: str = "dr@cabinet-exemple.fr") -> Envelope:
    return Envelope(mail_from=sender, rcpt_tos=rcpts or ("patient@gmail.com",))


def attachment(true_type: str, declared: str = "application/octet-stream") -> AttachmentFacts:
    return AttachmentFacts(filename="f", declared_type=declared, true_type=true_type, size=10)


def facts(**kwargs: object) -> MessageFacts:
    return MessageFacts(**kwargs)  # type: ignore[arg-type]
