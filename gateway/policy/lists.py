"""Domain lists: plain text files, one entry per line, ``#`` starts a comment.

Entries are domains, wildcards (``*.mssante.fr``, ``yahoo.*``) or addresses; see
:mod:`gateway.policy.domains` for how they match. This module reads lists (at policy load),
imports a downloaded whitelist (text, CSV, or the MSSanté XML) into a list file, and
checks upstream SMTP hosts against the consumer providers' list.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigError
from gateway.policy.domains import (
    DomainPattern,
    is_valid_domain,
    routes_elsewhere,
    split_address,
    to_ascii,
)
from gateway.policy.mssante import NotAWhitelist, looks_like_xml, parse_whitelist

CONSUMER_SMTP_FILE = "consumer-smtp.txt"


@dataclass(frozen=True)
class BadEntry:
    line: int
    text: str


@dataclass(frozen=True, repr=False)
class DomainList:
    """A loaded list. Exact domains and addresses are looked up directly, wildcards in order."""

    name: str
    path: Path | None
    patterns: tuple[DomainPattern, ...]
    _exact: dict[str, DomainPattern] = field(default_factory=dict, repr=False, compare=False)
    _wildcards: tuple[DomainPattern, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(
        cls, name: str, patterns: Iterable[DomainPattern], path: Path | None = None
    ) -> DomainList:
        patterns = tuple(patterns)
        exact: dict[str, DomainPattern] = {}
        for p in patterns:
            if p.kind in ("exact", "address"):
                exact.setdefault(p.value, p)
        wildcards = tuple(p for p in patterns if p.kind not in ("exact", "address"))
        return cls(name, path, patterns, exact, wildcards)

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return f"DomainList({self.name!r}, {len(self.patterns)} entries)"

    def match(self, address: str) -> DomainPattern | None:
        """The entry that ``address`` (or bare domain) matches, or None; none for an
        address whose local part can route it to another domain."""
        local, domain = split_address(address)
        if not domain or routes_elsewhere(address):
            return None
        hit = self._exact.get(f"{local}@{domain}") if local else None
        if hit is None:
            hit = self._exact.get(domain)
        if hit is not None:
            return hit
        for pattern in self._wildcards:
            if pattern.matches(local, domain):
                return pattern
        return None


def parse_list(text: str) -> tuple[list[DomainPattern], list[BadEntry]]:
    """Entries of a list file's text, and the lines that are not valid entries."""
    entries: list[DomainPattern] = []
    bad: list[BadEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        pattern = DomainPattern.parse(entry)
        if pattern is None:
            bad.append(BadEntry(number, entry))
        else:
            entries.append(pattern)
    return entries, bad


def read_list(name: str, path: Path) -> tuple[DomainList, list[BadEntry]]:
    """Load a list file; raises OSError when it cannot be read."""
    text = path.read_text(encoding="utf-8-sig")
    entries, bad = parse_list(text)
    return DomainList.of(name, entries, path), bad


# --- Consumer SMTP hosts -----------------------------------------------------------------


def consumer_smtp_reason(host: str, lists_dir: str | os.PathLike[str]) -> str | None:
    """Why Pli refuses to relay through ``host``, or None when it is not a consumer host.

    Reads ``consumer-smtp.txt`` in ``lists_dir``; raises ConfigError when it cannot.
    """
    path = Path(lists_dir) / CONSUMER_SMTP_FILE
    try:
        hosts, _ = read_list("consumer-smtp", path)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the list of consumer SMTP hosts: {exc.strerror or exc}"
        ) from None
    name = host.strip()
    if name.count(":") == 1 and name.rpartition(":")[2].isdigit():
        name = name.rpartition(":")[0]  # "smtp.gmail.com:587"
    entry = hosts.match(name)
    if entry is None:
        return None
    return (
        f"{name} is the outgoing server of a consumer mail provider (listed as {entry.text!r} "
        f"in {CONSUMER_SMTP_FILE}); patient data must not travel through a personal mailbox "
        "account, so Pli will not relay through it. Use the practice's professional provider "
        "as upstream instead."
    )


# --- Importing a downloaded whitelist ------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    added: int
    removed: int
    unchanged: int
    generated: str | None = None  # the MSSanté whitelist's DateDeGeneration
    previous: str | None = None  # that of the list it replaced, when known
    added_names: tuple[str, ...] = ()
    removed_names: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.added + self.unchanged

    def __str__(self) -> str:
        text = (
            f"{self.total} entries: {self.added} added, {self.removed} removed, "
            f"{self.unchanged} unchanged"
        )
        if self.generated:
            text += f"; whitelist generated {self.generated}"
            if self.previous:
                text += f" (the one replaced: {self.previous})"
        return text


GENERATED_LINE = "# DateDeGeneration: "


def import_list(
    source_file: str | os.PathLike[str], dest_list_file: str | os.PathLike[str]
) -> ImportSummary:
    """Replace the entries of ``dest_list_file`` with the domains found in ``source_file``.

    The source is the ANS's MSSanté whitelist (XML), plain text (one domain per line) or
    CSV (the column holding the most domains is used). A source with no domain at all,
    or XML that is not the whitelist, is refused, so a wrong file never empties a list.
    """
    source = Path(source_file)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return import_data(data, str(source), Path(dest_list_file))


def import_data(data: bytes, source: str, dest: Path) -> ImportSummary:
    """:func:`import_list` for bytes already read (or downloaded) from ``source``."""
    generated = None
    if looks_like_xml(data):
        try:
            whitelist = parse_whitelist(data)
        except NotAWhitelist as exc:
            raise ConfigError(f"{source}: not the MSSanté whitelist: {exc}; the list was left "
                              "as it was") from None
        new, generated = sorted(whitelist.domains, key=_key), whitelist.generated
    else:
        new = domains_in(data.decode("utf-8-sig", errors="replace"))
    if not new:
        raise ConfigError(f"{source}: no domain found in this file; the list was left as it was")
    return replace_entries(dest, new, generated)


def replace_entries(dest: Path, new: list[str], generated: str | None = None) -> ImportSummary:
    """Write ``new`` as the entries of the list file ``dest``, keeping its header comments
    (the whitelist's generation date among them), atomically."""
    header: list[str] = []
    old: list[str] = []
    previous = None
    if dest.exists():
        try:
            current = dest.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"{dest}: cannot read: {exc.strerror or exc}") from None
        header = _header_lines(current)
        patterns, _ = parse_list(current)
        old = [p.text.lower() for p in patterns]
    else:
        header = [f"# {dest.stem}: imported list, one domain per line."]
    for line in header:
        if line.startswith(GENERATED_LINE):
            previous = line[len(GENERATED_LINE):].strip()
    if generated:
        header = [line for line in header if not line.startswith(GENERATED_LINE)]
        while header and not header[-1].strip():
            header.pop()
        header.append(f"{GENERATED_LINE}{generated}")
    old_keys = {_key(e) for e in old}
    new_keys = {_key(e) for e in new}
    summary = ImportSummary(
        added=len(new_keys - old_keys),
        removed=len(old_keys - new_keys),
        unchanged=len(new_keys & old_keys),
        generated=generated,
        previous=previous if generated else None,
        added_names=tuple(sorted(new_keys - old_keys)),
        removed_names=tuple(sorted(old_keys - new_keys)),
    )
    body = "\n".join(header).rstrip("\n")
    content = (body + "\n\n" if body else "") + "\n".join(new) + "\n"
    write_atomically(dest, content)
    return summary


def domains_in(text: str) -> list[str]:
    """Domains found in a plain-text or CSV whitelist, deduplicated and sorted."""
    rows = _rows(text)
    columns: dict[int, list[str]] = {}
    for row in rows:
        if row and row[0].lstrip().startswith("#"):
            continue
        for index, cell in enumerate(row):
            domain = _as_domain(cell)
            if domain is not None:
                columns.setdefault(index, []).append(domain)
    if not columns:
        return []
    best = max(columns, key=lambda i: (len(columns[i]), -i))
    return sorted(set(columns[best]), key=_key)


def _rows(text: str) -> list[list[str]]:
    sample = text[:8192]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return [[line] for line in text.splitlines()]
    try:
        return list(csv.reader(io.StringIO(text), dialect))
    except csv.Error:
        return [[line] for line in text.splitlines()]


def _as_domain(cell: str) -> str | None:
    cell = cell.split("#", 1)[0].strip().strip("\"'").strip()
    if not cell or " " in cell or "@" in cell or "/" in cell:
        return None
    wildcard = cell.startswith("*.")
    domain = to_ascii(cell[2:] if wildcard else cell)
    if not is_valid_domain(domain) or domain.split(".")[-1].isdigit():
        return None
    return ("*." if wildcard else "") + domain


def _key(entry: str) -> str:
    return entry.lower()


def _header_lines(text: str) -> list[str]:
    """The comment and blank lines at the top of a list file, before its first entry."""
    header = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    return header


def write_atomically(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` so that readers see the old or the new file, never half."""
    folder = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
