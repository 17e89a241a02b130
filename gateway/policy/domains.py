"""Domain and address patterns: case-insensitive, IDNA-aware, with wildcards.

A pattern is one of:

* ``example.fr`` – that domain exactly (not its subdomains);
* ``*.mssante.fr`` – any subdomain of mssante.fr, at any depth (not mssante.fr itself);
* ``yahoo.*`` – yahoo under any suffix (yahoo.fr, yahoo.co.uk);
* ``someone@example.fr`` – that address.

Unicode domains are compared in their A-label (punycode) form, so ``médecins.fr`` in a list
matches ``xn--mdecins-bya.fr`` in an envelope and the other way round.

An address whose local part can route the message to another domain (see
:func:`routes_elsewhere`) matches no pattern: the policy never decides by a domain that
may not be the one the mail goes to.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from encodings import idna

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@functools.lru_cache(maxsize=4096)
def to_ascii(domain: str) -> str:
    """Lower-case A-label form of ``domain`` (remembered: every message asks it of the
    same few domains several times); labels that cannot be encoded stay as given.

    The standard library speaks IDNA 2003, which maps some labels to another name than
    today's resolvers do ("straße" to "strasse" where they use "xn--strae-oqa"; joiners
    dropped; full-width letters folded). Such a label stays as given too, so it matches
    no list entry: the decision must be about the domain the provider will deliver to."""
    domain = domain.strip().rstrip(".").lower()
    labels = []
    for label in re.split(r"[.\u3002\uff0e\uff61]", domain):
        if label.isascii():
            labels.append(label)
            continue
        try:
            encoded = idna.ToASCII(label)
            same = idna.ToUnicode(encoded) == unicodedata.normalize("NFC", label)
        except (UnicodeError, ValueError):
            same = False
        labels.append(encoded.decode("ascii").lower() if same else label)
    return ".".join(labels)


def is_valid_domain(domain: str) -> bool:
    """True when ``domain`` (A-label form) is a plausible host name with at least one dot."""
    labels = domain.split(".")
    return len(labels) >= 2 and len(domain) <= 253 and all(_LABEL.match(x) for x in labels)


# In a local part, each of these can make a provider deliver to another domain than the
# one after the last "@": "x%victim.example@here" (Postfix's allow_percent_hack, sendmail),
# "victim.example!x@here" (a UUCP bang path: swap_bangpath), and an "@" inside quotes or
# escaped, '"x@victim.example"@here' (resolve_dequoted_address). A source route,
# "@relay,@other:x@here", shows up as an "@" before the last one too.
_ROUTING_CHARACTERS = frozenset("%!@")


def routes_elsewhere(address: str) -> bool:
    """True when the local part of ``address``, quoted or not, holds "%", "!" or "@":
    mail to it may go to another domain than the one it names last."""
    local, at, _ = address.strip().strip("<>").strip().rpartition("@")
    return bool(at) and not _ROUTING_CHARACTERS.isdisjoint(local)


def split_address(address: str) -> tuple[str, str]:
    """(local part, A-label domain) of an address; a bare domain gives ("", domain)."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return "", to_ascii(address)
    return local.lower(), to_ascii(domain)


def normalise_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}" if local else domain


def is_one_of(address: str, addresses: Iterable[str]) -> bool:
    """The same mailbox as one of ``addresses``, whatever the case, and whether an accented
    domain is written as such or in its xn-- form (mail clients send either)."""
    wanted = normalise_address(address)
    return any(normalise_address(a) == wanted for a in addresses)


@dataclass(frozen=True)
class DomainPattern:
    """One compiled list entry; ``text`` is the entry as written, for explanations."""

    text: str
    kind: str  # "exact", "subdomains", "any-suffix" or "address"
    value: str

    @classmethod
    def parse(cls, entry: str) -> DomainPattern | None:
        """Compile an entry; None when it is not a domain, wildcard or address."""
        entry = entry.strip()
        if not entry:
            return None
        if "@" in entry:
            local, domain = split_address(entry)
            if not local or not is_valid_domain(domain) or routes_elsewhere(entry):
                return None
            return cls(entry, "address", f"{local}@{domain}")
        lowered = entry.lower()
        if lowered.startswith("*.") or lowered.endswith(".*"):
            # Wildcards may stand on one label: "*.fr" (anything in .fr), "yahoo.*".
            kind = "subdomains" if lowered.startswith("*.") else "any-suffix"
            domain = to_ascii(lowered[2:] if kind == "subdomains" else lowered[:-2])
            ok = all(_LABEL.match(x) for x in domain.split("."))
            return cls(entry, kind, domain) if ok else None
        domain = to_ascii(lowered)
        return cls(entry, "exact", domain) if is_valid_domain(domain) else None

    def matches(self, local: str, domain: str) -> bool:
        """Does an address (already split and normalised) match this pattern?"""
        if self.kind == "exact":
            return domain == self.value
        if self.kind == "subdomains":
            return domain.endswith("." + self.value)
        if self.kind == "any-suffix":
            return domain.startswith(self.value + ".")
        return f"{local}@{domain}" == self.value


def first_match(patterns: tuple[DomainPattern, ...], address: str) -> DomainPattern | None:
    """The first pattern matching ``address`` (an address or a bare domain), or None."""
    local, domain = split_address(address)
    if not domain or routes_elsewhere(address):
        return None
    for pattern in patterns:
        if pattern.matches(local, domain):
            return pattern
    return None
