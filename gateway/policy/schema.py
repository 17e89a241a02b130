"""The policy file's shape, validated by pydantic with unknown keys refused.

A policy file looks like this (see ``gateway/defaults/default.toml`` for a commented one)::

    [lists]
    internal = "lists/internal.txt"          # relative to the policy file

    [tags]                                   # optional: the subject tags' names
    notify = "avis"

    [[rule]]
    name = "colleagues-pass"
    when = { recipient_in = ["internal"] }
    action = "pass"

    [[rule]]
    name = "everyone-else"
    default = true                           # the last rule: no `when`, always applies
    action = "protect"
    [rule.protect]
    expiry_days = 14

Each rule is validated on its own so that every mistake is reported, not only the first;
cross-rule checks (names, order, list references) live in :mod:`gateway.policy.loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.policy.domains import DomainPattern
from gateway.policy.patterns import TAG_NAME, fold

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MIME_GLOB = re.compile(r"^[a-z0-9*][a-z0-9.+*_-]*/[a-z0-9*][a-z0-9.+*_-]*$|^\*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# Condition keys that look at the recipient, and those that look at the sender.
RECIPIENT_KEYS = ("recipient_in", "recipient_is")
SENDER_KEYS = ("sender_in", "sender_is")
LIST_KEYS = ("recipient_in", "sender_in")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def parse_size(value: Any) -> Any:
    """Bytes from an int or a string such as "10MB", "512 KiB" (K, M, G count in 1024s)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as \"10MB\"")
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size; write bytes or e.g. \"10MB\", \"500KB\"")
        unit = match.group(2).lower()[:1] if match.group(2) else ""
        return int(float(match.group(1)) * _UNITS[unit])
    return value


class Condition(_Strict):
    """One ``when`` table: every key given must hold (keys are joined by "and")."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")
    recipient_in: list[str] | None = Field(default=None, min_length=1)
    recipient_is: list[str] | None = Field(default=None, min_length=1)
    sender_in: list[str] | None = Field(default=None, min_length=1)
    sender_is: list[str] | None = Field(default=None, min_length=1)
    has_attachments: bool | None = None
    attachment_type: list[str] | None = Field(default=None, min_length=1)
    size_over: Annotated[int, Field(ge=0)] | None = None
    subject_tag: str | None = None
    keywords: list[str] | None = Field(default=None, min_length=1)
    pattern: list[str] | None = Field(default=None, min_length=1)
    nir: bool | None = None
    date_of_birth: bool | None = None

    _to_list = field_validator(
        "recipient_in", "recipient_is", "sender_in", "sender_is", "attachment_type",
        "keywords", "pattern", mode="before",
    )(_as_list)  # fmt: skip

    @field_validator("size_over", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("recipient_is", "sender_is")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            if DomainPattern.parse(entry) is None:
                raise ValueError(
                    f"{entry!r} is not an address, a domain or a wildcard such as *.example.fr"
                )
        return value

    @field_validator("attachment_type")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        cleaned = [v.strip().lower() for v in value or ()]
        for entry in cleaned:
            if not _MIME_GLOB.match(entry):
                raise ValueError(
                    f"{entry!r} is not a type such as \"application/pdf\" or \"image/*\""
                )
        return cleaned if value is not None else None

    @field_validator("subject_tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tag = value.strip().strip("[]").strip()
        if not TAG_NAME.match(tag):
            raise ValueError(
                f"{value!r} is not a tag name; write the word inside the brackets, e.g. \"clair\""
            )
        return tag

    @field_validator("pattern")
    @classmethod
    def _regexes(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            try:
                re.compile(entry)
            except re.error as exc:
                raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not k.strip() for k in value):
            raise ValueError("a keyword is empty")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("an empty condition; give at least one test, e.g. recipient_in")
        return self

    def keys(self) -> list[str]:
        """The tests given in this table, in schema order, as written in the file."""
        return [
            "not" if name == "not_" else name
            for name in type(self).model_fields
            if name in self.model_fields_set
        ]


Days = Annotated[int, Field(ge=1, le=365)]
Downloads = Annotated[int, Field(ge=1, le=1000)]


class ProtectOptions(_Strict):
    attachments: Literal["link", "keep"] = "link"
    body: Literal["minimal", "keep"] = "minimal"
    subject: Literal["neutral", "keep"] = "neutral"
    expiry_days: Days = 14
    download_limit: Downloads = 5
    # What the sender's [expire:…] and [telechargements:…] tags, and the sender's page,
    # may raise them to (by default, no more than expiry_days and download_limit).
    max_expiry_days: Days | None = None
    max_download_limit: Downloads | None = None
    access_code: Literal["none", "sender-tag", "generated", "sender-tag-or-generated"] = (
        "sender-tag-or-generated"
    )
    language: Literal["fr", "en"] = "fr"
    template: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "default"
    keep_inline_images: bool = False
    # Notices to the sender ([avis] asks for all three, [sans-avis] for none).
    notify: list[Literal["opened", "downloaded", "expired"]] = Field(default_factory=list)
    # The patient's secure reply: at most this many documents and this size in all.
    reply: bool = True
    reply_max_files: Annotated[int, Field(ge=0, le=20)] = 5
    reply_max_size: Annotated[int, Field(ge=0, le=100 * 1024 * 1024)] = 20 * 1024 * 1024
    # A receipt to the sender with the link to revoke, extend or give more downloads.
    manage_link: bool = True

    @field_validator("reply_max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @model_validator(mode="after")
    def _maxima(self) -> ProtectOptions:
        if self.max_expiry_days is not None and self.max_expiry_days < self.expiry_days:
            raise ValueError(f"max_expiry_days ({self.max_expiry_days}) is below expiry_days "
                             f"({self.expiry_days}): the most a sender may ask for")
        if (self.max_download_limit is not None
                and self.max_download_limit < self.download_limit):
            raise ValueError(f"max_download_limit ({self.max_download_limit}) is below "
                             f"download_limit ({self.download_limit}): the most a sender may "
                             "ask for")
        return self


class TagOptions(_Strict):
    """The names of the subject tags a sender may write for one message, in ``[tags]``."""

    notify: str = "avis"
    no_notify: str = "sans-avis"
    expiry: str = "expire"
    downloads: str = "telechargements"

    @field_validator("notify", "no_notify", "expiry", "downloads")
    @classmethod
    def _word(cls, value: str) -> str:
        tag = value.strip().strip("[]").strip()
        if not TAG_NAME.match(tag) or fold(tag) == "code":
            raise ValueError(f"{value!r} is not a tag name; write the word inside the "
                             "brackets, e.g. \"avis\" (and not \"code\", the access code's)")
        return tag

    @model_validator(mode="after")
    def _distinct(self) -> TagOptions:
        names = [fold(n) for n in (self.notify, self.no_notify, self.expiry, self.downloads)]
        if len(set(names)) != len(names):
            raise ValueError("two tags share a name: give each its own")
        return self


class BlockOptions(_Strict):
    message_fr: Annotated[str, Field(min_length=1)]
    message_en: Annotated[str, Field(min_length=1)]


class Rule(_Strict):
    name: str
    description: str | None = None
    when: Condition | None = None
    default: bool = False
    action: Literal["pass", "protect", "block"]
    protect: ProtectOptions | None = None
    block: BlockOptions | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r}: a rule name uses letters, digits, '-', '_' or '.', no spaces"
            )
        return value


class PolicyFile(_Strict):
    """The top level; rules are checked one by one by the caller."""

    description: str | None = None
    lists: dict[str, str] = Field(default_factory=dict)
    tags: TagOptions = TagOptions()
    rule: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("lists")
    @classmethod
    def _list_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r}: a list name uses letters, digits, '-', '_' or '.'")
        return value
