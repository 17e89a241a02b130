"""Loading and checking a policy file: every problem reported, each with where to fix it.

:func:`check_policy` returns the problems (empty when the policy is good);
:func:`load_policy` returns a :class:`Policy` or raises :class:`PolicyError` carrying them.
Both read the policy file and its list files, and nothing else.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError
from gateway.policy import schema
from gateway.policy.conditions import compile_condition
from gateway.policy.engine import Policy, Rule
from gateway.policy.lists import DomainList, read_list
from gateway.policy.patterns import TagNames, fold
from gateway.types import BlockSettings, Decision, ProtectSettings


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a policy (or one of its list files), and where."""

    file: Path
    line: int | None
    rule: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule!r}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + ": " + self.message


class PolicyError(ConfigError):
    """A policy that cannot be used; ``problems`` lists every reason."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = [f"{path}: {len(problems)} problem(s) in the policy"]
        lines.extend(f"  {p}" for p in problems)
        super().__init__("\n".join(lines))


def check_policy(path: str | Path) -> list[Problem]:
    """Every problem in the policy file at ``path`` and the lists it names; [] when good."""
    return _build(Path(path))[1]


def load_policy(path: str | Path) -> Policy:
    """The policy at ``path``, ready for ``decide``; raises PolicyError listing every problem."""
    path = Path(path)
    policy, problems = _build(path)
    if problems or policy is None:
        raise PolicyError(path, problems)
    return policy


# --- The build ---------------------------------------------------------------------------


def _build(path: Path) -> tuple[Policy | None, list[Problem]]:
    def problem(
        message: str, *, line: int | None = None, rule: str | None = None, field: str | None = None
    ) -> None:
        problems.append(Problem(path, line, rule, field, message))

    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem("no such policy file")
        return None, problems
    except (OSError, UnicodeDecodeError) as exc:
        problem(f"cannot read the policy file: {getattr(exc, 'strerror', None) or exc}")
        return None, problems
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        problem(f"not valid TOML: {exc}", line=int(found.group(1)) if found else None)
        return None, problems
    where = _LineIndex(text)

    top: schema.PolicyFile | None = None
    try:
        top = schema.PolicyFile.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or None
            line = where.top_key(loc)
            if loc == ("rule",) and err["type"] == "missing":
                message = "no rules: add [[rule]] tables, the last one with default = true"
            else:
                message = _message(err, schema.PolicyFile)
            problem(message, line=line, field=field)

    lists, list_problems = _load_lists(path, raw.get("lists"), where)
    problems.extend(list_problems)

    raw_rules = raw.get("rule")
    rules_raw: list[dict[str, Any]] = []
    if isinstance(raw_rules, list):
        rules_raw = [r if isinstance(r, dict) else {} for r in raw_rules]
    models: list[schema.Rule | None] = []
    for index, rule_raw in enumerate(rules_raw):
        name = rule_raw.get("name") if isinstance(rule_raw.get("name"), str) else None
        label = name or f"#{index + 1}"
        if isinstance(declared := raw.get("lists"), dict):
            for field, message in _list_references(rule_raw.get("when"), "when", declared):
                line = where.rule_field(index, tuple(field.split(".")))
                problem(message, line=line, rule=label, field=field)
        try:
            model = schema.Rule.model_validate(rule_raw)
        except ValidationError as exc:
            models.append(None)
            for err in exc.errors():
                loc = tuple(err["loc"])
                problem(
                    _message(err, _model_at(loc)),
                    line=where.rule_field(index, loc),
                    rule=label,
                    field=".".join(str(p) for p in loc) or None,
                )
            continue
        models.append(model)
        for field, message in _rule_problems(model):
            line = where.rule_field(index, tuple(field.split(".")))
            problem(message, line=line, rule=label, field=field)

    problems.extend(_order_problems(path, rules_raw, where))
    if problems:
        problems.sort(key=lambda p: (p.file != path, str(p.file), p.line or 0))
        return None, problems
    lines = [where.rule_field(i, ()) for i in range(len(models))]
    assert top is not None  # no problems: the top level validated
    return _compile(path, models, lists, lines, top.tags), problems


def _load_lists(
    path: Path, declared: Any, where: _LineIndex
) -> tuple[dict[str, DomainList], list[Problem]]:
    lists: dict[str, DomainList] = {}
    problems: list[Problem] = []
    if not isinstance(declared, dict):
        return lists, problems
    for name, relative in declared.items():
        if not isinstance(relative, str):
            continue  # reported by the schema
        line = where.table_key("lists", name)
        list_path = path.parent / relative
        try:
            domain_list, bad = read_list(name, list_path)
        except FileNotFoundError:
            problems.append(
                Problem(path, line, None, f"lists.{name}", f"list file {list_path} does not exist")
            )
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            problems.append(
                Problem(path, line, None, f"lists.{name}", f"cannot read {list_path}: {reason}")
            )
            continue
        for entry in bad:
            problems.append(
                Problem(
                    list_path,
                    entry.line,
                    None,
                    f"lists.{name}",
                    f"{entry.text!r} is not a domain, a wildcard (*.example.fr, example.*) "
                    "or an address",
                )
            )
        lists[name] = domain_list
    return lists, problems


def _rule_problems(rule: schema.Rule) -> Iterator[tuple[str, str]]:
    """(field, message) for what the schema alone cannot see in one rule."""
    if rule.default and rule.when is not None:
        yield "when", "the default rule applies to everything: remove `when` or `default = true`"
    if not rule.default and rule.when is None:
        yield "when", (
            "missing: say when the rule applies, or make it the last rule with default = true"
        )
    if rule.protect is not None and rule.action != "protect":
        yield "protect", f"protect settings given, but the action is {rule.action!r}"
    if rule.block is not None and rule.action != "block":
        yield "block", f"block settings given, but the action is {rule.action!r}"
    if rule.action == "block" and rule.block is None:
        yield "block", (
            "a block rule needs [rule.block] with message_fr and message_en (what the sender reads)"
        )
    if rule.when is None:
        return
    tag_fields = [f for f, c in _walk(rule.when, "when") if c.subject_tag is not None]
    if tag_fields and not _names_sender(rule.when):
        yield f"{tag_fields[0]}.subject_tag", (
            "a subject tag is honoured only for the senders the rule names: add sender_is or "
            "sender_in next to subject_tag (in the same table or the top-level `all`)"
        )


def _list_references(when: Any, field: str, declared: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Unknown list names in a raw ``when`` table, found even when the rule is otherwise
    invalid, so that one mistake does not hide another."""
    if not isinstance(when, dict):
        return
    for key in schema.LIST_KEYS:
        names = when.get(key)
        for name in [names] if isinstance(names, str) else names if isinstance(names, list) else []:
            if isinstance(name, str) and name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                message = f"unknown list {name!r} (lists declared in [lists]: {known})"
                yield f"{field}.{key}", message
    for key in ("all", "any"):
        children = when.get(key)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from _list_references(child, f"{field}.{key}.{i}", declared)
    yield from _list_references(when.get("not"), f"{field}.not", declared)


def _walk(condition: schema.Condition, field: str) -> Iterator[tuple[str, schema.Condition]]:
    yield field, condition
    for key in ("all", "any"):
        for i, child in enumerate(getattr(condition, key) or ()):
            yield from _walk(child, f"{field}.{key}.{i}")
    if condition.not_ is not None:
        yield from _walk(condition.not_, f"{field}.not")


def _names_sender(when: schema.Condition) -> bool:
    """Does the top of ``when`` require a sender condition (for every way it can hold)?"""
    tables = [when, *(when.all or ())]
    return any(t.sender_is or t.sender_in for t in tables)


def _order_problems(
    path: Path, rules_raw: list[dict[str, Any]], where: _LineIndex
) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    first_default: int | None = None
    for index, rule in enumerate(rules_raw):
        name = rule.get("name") if isinstance(rule.get("name"), str) else None
        if name is not None:
            if name in names:
                other = where.rule_field(names[name], ("name",))
                problems.append(
                    Problem(
                        path,
                        where.rule_field(index, ("name",)),
                        name,
                        "name",
                        f"two rules are named {name!r} (the other is at line {other}); "
                        "give each rule its own name",
                    )
                )
            else:
                names[name] = index
        if first_default is not None:
            default_name = rules_raw[first_default].get("name")
            problems.append(
                Problem(
                    path,
                    where.rule_field(index, ()),
                    name or f"#{index + 1}",
                    "default" if rule.get("default") is True else None,
                    f"this rule comes after the default rule {default_name!r}, so it can never "
                    "apply; move it above the default rule or remove it",
                )
            )
        elif rule.get("default") is True:
            first_default = index
    if rules_raw and first_default is None:
        problems.append(
            Problem(
                path,
                where.rule_field(len(rules_raw) - 1, ()),
                None,
                "default",
                "no default rule: end the list with a rule that has default = true (and no "
                "`when`), so that every recipient gets a decision",
            )
        )
    return problems


def _compile(
    path: Path,
    models: list[schema.Rule | None],
    lists: dict[str, DomainList],
    lines: list[int | None],
    tag_options: schema.TagOptions,
) -> Policy:
    rules: list[Rule] = []
    names = TagNames(**tag_options.model_dump())
    tags = {"code", *(fold(n) for n in names.all())}
    for model, line in zip(models, lines, strict=True):
        assert model is not None  # only called when every rule validated
        condition = compile_condition(model.when, lists) if model.when is not None else None
        if model.when is not None:
            tags.update(fold(c.subject_tag) for _, c in _walk(model.when, "when") if c.subject_tag)
        rules.append(Rule(model.name, condition, _decision(model), line))
    return Policy(path, tuple(rules), MappingProxyType(dict(lists)), frozenset(tags), names)


def _decision(model: schema.Rule) -> Decision:
    if model.action == "protect":
        options = model.protect or schema.ProtectOptions()
        return Decision(model.name, "protect", protect=_protect_settings(options))
    if model.action == "block":
        assert model.block is not None
        return Decision(model.name, "block", block=BlockSettings(**model.block.model_dump()))
    return Decision(model.name, "pass")


def _protect_settings(options: schema.ProtectOptions) -> ProtectSettings:
    values = options.model_dump(exclude={"reply", "reply_max_size", "reply_max_files", "notify",
                                         "max_expiry_days", "max_download_limit"})
    return ProtectSettings(
        **values,
        notify=tuple(options.notify),
        max_expiry_days=options.max_expiry_days or options.expiry_days,
        max_download_limit=options.max_download_limit or options.download_limit,
        reply_max_files=options.reply_max_files if options.reply else 0,
        reply_max_bytes=options.reply_max_size if options.reply else 0,
    )


# --- Messages ----------------------------------------------------------------------------


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel]:
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    if "protect" in parents:
        return schema.ProtectOptions
    if "block" in parents:
        return schema.BlockOptions
    if "when" in parents:
        return schema.Condition
    return schema.Rule


def _message(err: Any, model: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        known = [f.alias or n for n, f in model.model_fields.items()]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        return f"unknown key {key!r} (misspelt?); {hint}"
    if kind == "missing":
        return "missing"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


# --- Where things are in the file -------------------------------------------------------

_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?")


class _LineIndex:
    """Finds the line (1-based) of a rule or key by scanning the TOML text; approximate
    (comments are skipped, strings are not parsed) but it points at the right rule."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rule_starts = [i for i, line in enumerate(self.lines) if _RULE_HEADER.match(line)]

    def _span(self, index: int) -> tuple[int, int] | None:
        if index >= len(self.rule_starts):
            return None
        start = self.rule_starts[index]
        end = len(self.lines)
        for i in range(start + 1, len(self.lines)):
            header = _HEADER.match(self.lines[i])
            if header and not header.group(1).startswith("rule."):
                end = i
                break
        return start, end

    def _find(self, key: str, start: int, end: int) -> int | None:
        assignment = re.compile(r'(?:^|[{,\s])["\']?' + re.escape(key) + r'["\']?\s*=')
        table = re.compile(r"^\s*\[\s*rule(?:\.[\w.]+)*\." + re.escape(key) + r"\s*\]")
        for i in range(start, end):
            line = self.lines[i]
            if line.lstrip().startswith("#"):
                continue
            if assignment.search(line.split("#", 1)[0]) or table.match(line):
                return i + 1
        return None

    def rule_field(self, index: int, loc: tuple[Any, ...]) -> int | None:
        span = self._span(index)
        if span is None:
            return None
        for key in reversed([p for p in loc if isinstance(p, str) and not p.isdigit()]):
            line = self._find(key, *span)
            if line is not None:
                return line
        return self._find("name", *span) or span[0] + 1

    def table_key(self, table: str, key: str) -> int | None:
        header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
        for i, line in enumerate(self.lines):
            if header.match(line):
                end = next(
                    (j for j in range(i + 1, len(self.lines)) if _HEADER.match(self.lines[j])),
                    len(self.lines),
                )
                return (self._find(key, i + 1, end) if key else None) or i + 1
        return None

    def top_key(self, loc: tuple[Any, ...]) -> int | None:
        if not loc:
            return None
        if len(loc) >= 2 and isinstance(loc[1], str):
            return self.table_key(str(loc[0]), loc[1])
        first_rule = self.rule_starts[0] if self.rule_starts else len(self.lines)
        return self._find(str(loc[0]), 0, first_rule) or self.table_key(str(loc[0]), "")
