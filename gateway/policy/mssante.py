"""The national whitelist of MSSanté operator domains, as the ANS publishes it (XML).

The file (``listeblanchemssante.xml``)::

    <ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
      <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>
      <ListeDomaines>
        <Domaine>
          <Nom>ch-exemple.mssante.fr</Nom>
          <Description>...</Description> <DNCertificatOperateur>...</DNCertificatOperateur>
          <ResponsableContact>...</ResponsableContact> <SupportContact>...</SupportContact>
          <DateMAJ>...</DateMAJ>
        </Domaine> ...

Only the root, the generation date and the domain names are read. Pure: text in, a
:class:`Whitelist` out, or :class:`NotAWhitelist` saying why the text is not one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from gateway.policy.domains import is_valid_domain, to_ascii

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT = f"{{{NAMESPACE}}}ListeBlancheMSSante"
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


class NotAWhitelist(ValueError):
    """The text is not the ANS's whitelist; the message says what it is instead."""


@dataclass(frozen=True)
class Whitelist:
    generated: str  # DateDeGeneration as written, e.g. "2025-03-13T14:54:10Z"
    domains: tuple[str, ...]  # lower case, xn-- form, deduplicated, in the file's order
    unclosed: bool = False  # the file ends after </ListeDomaines>, its root left open


def looks_like_xml(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def parse_whitelist(data: bytes) -> Whitelist:
    """The whitelist in ``data``; NotAWhitelist unless it is the ANS's XML with a
    generation date and at least one valid domain."""
    if _DOCTYPE.search(data[:4096]):
        raise NotAWhitelist("it declares a DOCTYPE or entities, which the whitelist never does")
    unclosed = False
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        # The copy the ANS keeps in its public repository ends after </ListeDomaines>,
        # without closing the root element. Its list is complete, so it is read; a file
        # cut anywhere before that (a download that broke off) is still refused.
        if not data.rstrip().endswith(b"</ListeDomaines>"):
            raise NotAWhitelist(f"it is not well-formed XML ({exc})") from None
        try:
            root = ET.fromstring(data.rstrip() + b"\n</ListeBlancheMSSante>\n")
        except ET.ParseError:
            raise NotAWhitelist(f"it is not well-formed XML ({exc})") from None
        unclosed = True
    if root.tag != ROOT:
        raise NotAWhitelist(f"its root element is {root.tag!r}, not ListeBlancheMSSante in "
                            f"the namespace {NAMESPACE}")
    generated = (root.findtext(f"{{{NAMESPACE}}}DateDeGeneration") or "").strip()
    if not generated:
        raise NotAWhitelist("it has no DateDeGeneration")
    names = root.findall(f"{{{NAMESPACE}}}ListeDomaines/{{{NAMESPACE}}}Domaine/"
                         f"{{{NAMESPACE}}}Nom")
    domains: dict[str, None] = {}
    bad = []
    for name in names:
        text = (name.text or "").strip().rstrip(".")
        domain = to_ascii(text).lower() if text else ""
        if domain and is_valid_domain(domain):
            domains.setdefault(domain, None)
        else:
            bad.append(text)
    if not domains:
        raise NotAWhitelist("it lists no domain (ListeDomaines/Domaine/Nom)")
    if bad:
        raise NotAWhitelist(f"{len(bad)} of its domain names are not domains, e.g. {bad[0]!r}")
    return Whitelist(generated, tuple(domains), unclosed)
