"""Address fields (From, To, Cc...) read by the grammar of RFC 5322 §3.4, strictly.

One reader for every step that looks at an address field (the From: check, the policy's
facts, the notice), and a strict one: text that the grammar does not allow is not
guessed at, because mail readers guess differently. ``a@b.fr <c@d.fr>`` is one address
to one reader and two to another; ``=?utf-8?q?<a@b>?= <c@d>`` hides an address in a
display name for a reader that decodes first. Those come back as None: "cannot be
read", and a submitted message whose From: cannot be read is refused.

Accepted: display names of atoms and quoted strings (with dots, as obsolete forms
allow), comments anywhere white space may be, groups (``Undisclosed:;``), dot-atom or
quoted local parts, domain literals, and UTF-8 anywhere an atom may be (RFC 6532).
Refused: source routes (``<@relay:x@y>``), an address without a domain, anything left
over after an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
      | (?P<atom>[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+)
      | (?P<qs>"(?:[^"\\]|\\.)*")
      | (?P<lit>\[(?:[^\[\]\\]|\\.)*\])
      | (?P<special>[<>@,:;.])
      | (?P<comment>\()""",
    re.X | re.S,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
                       r"(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+)*")


@dataclass(frozen=True)
class Mailbox:
    """``display`` is the display name as written (encoded words not decoded);
    ``address`` is ``local@domain``, its local part unquoted when it needs no quotes."""

    display: str
    address: str


class _Unreadable(Exception):
    pass


def parse_addresses(value: str) -> list[Mailbox] | None:
    """Every mailbox of an address list (group members included), or None when the
    text is not an address list."""
    try:
        tokens = _tokens(value)
        return _Parser(tokens).address_list()
    except _Unreadable:
        return None


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position] == "(":
            position = _skip_comment(text, position)
            continue
        match = _TOKEN.match(text, position)
        if match is None:
            raise _Unreadable
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _skip_comment(text: str, position: int) -> int:
    depth = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    raise _Unreadable


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, text: str) -> None:
        if self.peek() != ("special", text):
            raise _Unreadable
        self.at += 1

    def address_list(self) -> list[Mailbox]:
        found: list[Mailbox] = []
        while True:
            kind, text = self.peek()
            if kind == "end":
                return found
            if (kind, text) == ("special", ","):  # empty list elements (obsolete syntax)
                self.at += 1
                continue
            found.extend(self.address())
            kind, text = self.peek()
            if kind == "end":
                return found
            self.take(",")

    def address(self) -> list[Mailbox]:
        words = self.words()
        kind, text = self.peek()
        if (kind, text) == ("special", ":"):  # a group: its members, if any
            self.at += 1
            members: list[Mailbox] = []
            while self.peek() != ("special", ";"):
                if self.peek()[0] == "end":
                    raise _Unreadable
                if self.peek() == ("special", ","):
                    self.at += 1
                    continue
                members.append(self.mailbox(self.words()))
            self.at += 1
            return members
        return [self.mailbox(words)]

    def mailbox(self, words: list[tuple[str, str]]) -> Mailbox:
        kind, text = self.peek()
        if (kind, text) == ("special", "<"):
            self.at += 1
            if self.peek() == ("special", "@"):
                raise _Unreadable  # a source route
            address = self.addr_spec(self.words())
            self.take(">")
            return Mailbox(" ".join(t for _, t in words if t != "."), address)
        return Mailbox("", self.addr_spec(words))

    def words(self) -> list[tuple[str, str]]:
        """Atoms, quoted strings and dots: a display name or a local part."""
        words: list[tuple[str, str]] = []
        while True:
            kind, text = self.peek()
            if kind in ("atom", "qs") or (kind, text) == ("special", "."):
                words.append((kind, text))
                self.at += 1
            else:
                return words

    def addr_spec(self, local: list[tuple[str, str]]) -> str:
        self.take("@")
        kind, text = self.peek()
        if kind == "lit":
            self.at += 1
            domain = text
        else:
            words = self.words()
            domain = "".join(t for _, t in words)
            if any(k == "qs" for k, _ in words) or not _DOT_ATOM.fullmatch(domain):
                raise _Unreadable
        if not _dot_separated(local):
            raise _Unreadable
        return f"{_local_part(local)}@{domain}"


def _dot_separated(words: list[tuple[str, str]]) -> bool:
    """word *("." word): never two words in a row, never an empty one."""
    if not words or words[0][1] == "." or words[-1][1] == ".":
        return False
    return all((a[1] == ".") != (b[1] == ".") for a, b in pairwise(words))


def _local_part(words: list[tuple[str, str]]) -> str:
    plain = "".join(_QUOTED_PAIR.sub(r"\1", t[1:-1]) if k == "qs" else t for k, t in words)
    if _DOT_ATOM.fullmatch(plain):
        return plain
    escaped = plain.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
