"""Retention policies and legal holds as values: what crosses the catalogue's boundary for
issue 16 part R. Plain, frozen, validated; no SQL (the queries are in
:mod:`callrec.catalog.retirement` and :mod:`callrec.catalog.holds`).

**Precedence.** A recording is kept for the *longest* retention among the rules that match
it; the default (``retention_days``) applies only to recordings that no rule matches. So a
rule can only ever protect a recording for longer than another matching rule, never shorten
it, whatever order the rules are written in: retention rules are mostly legal obligations
("keep complaints 7 years"), deleting too early cannot be undone while keeping too long can,
and two overlapping rules (extension 3001 ten years, source usb 30 days, for a USB import of
a 3001 call) must not depend on which was written first. ``days = 0`` means forever, so it
wins over every other matching rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from callrec.catalog.records import SOURCES
from callrec.exceptions import CatalogError

#: What a retention rule can match on.
RULE_KINDS: Final = ("source", "extension", "device", "tag")
#: ``phone`` is what people call the phones' network recordings; the catalogue says ``server``.
SOURCE_ALIASES: Final = {"phone": "server"}

#: The kinds of legal hold.
HOLD_RECORDING: Final = "recording"
HOLD_SEARCH: Final = "search"
HOLD_NUMBER: Final = "number"
HOLD_TAG: Final = "tag"
HOLD_KINDS: Final = frozenset({HOLD_RECORDING, HOLD_SEARCH, HOLD_NUMBER, HOLD_TAG})
MAX_REASON: Final = 1000

_RULE_TEXT = re.compile(r"\s*(\w+)\s*=\s*([^:\s]+)\s*:\s*(\d+)\s*")
_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
_TAG = re.compile(r"[^\W_][\w-]{0,31}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionRule:
    """Keep recordings matching ``kind = value`` for ``days`` days (0: forever).

    ``extension`` matches the local or the remote number, ``device`` the MAC in any case,
    ``tag`` a tag on the recording, ``source`` one of ``phone`` (``server``), ``sip``,
    ``usb``."""

    kind: str
    value: str
    days: int

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise CatalogError(
                f"retention rule: kind must be one of {', '.join(RULE_KINDS)}, got {self.kind!r}"
            )
        value = self.value.strip()
        if self.kind == "source":
            value = SOURCE_ALIASES.get(value.lower(), value.lower())
            if value not in SOURCES:
                raise CatalogError(
                    f"retention rule: source must be phone, sip or usb, got {self.value!r}"
                )
        elif self.kind in ("device", "tag"):
            value = value.lower()
            if self.kind == "device":
                value = value.replace(":", "").replace("-", "").replace(".", "")
        if not value:
            raise CatalogError(f"retention rule: {self.kind} must not be empty")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 0:
            raise CatalogError(
                f"retention rule {self.kind}={value}: days must be a whole number >= 0 "
                f"(0: forever), got {self.days!r}"
            )
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: str) -> RetentionRule:
        """``kind=value:days``, e.g. ``extension=3001:3650`` (the settings' string form)."""
        match = _RULE_TEXT.fullmatch(text)
        if match is None:
            raise CatalogError(
                f"retention rule {text!r} must look like kind=value:days, "
                "e.g. extension=3001:3650 or tag=complaint:2555"
            )
        return cls(kind=match[1], value=match[2], days=int(match[3]))

    def __str__(self) -> str:
        return f"{self.kind}={self.value}:{self.days}"

    @property
    def label(self) -> str:
        """What tombstones and reports say: ``tag=complaint 2555 days``."""
        return f"{self.kind}={self.value} {_days(self.days)}"

    def matches(
        self, *, source: str, local: str, remote: str, device: str, tags: Iterable[str]
    ) -> bool:
        if self.kind == "source":
            return source == self.value
        if self.kind == "extension":
            return self.value in (local, remote)
        if self.kind == "device":
            return device.lower() == self.value
        return self.value in tags


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """The default retention and the rules (see the module docstring for precedence)."""

    default_days: int = 0
    rules: tuple[RetentionRule, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.default_days, bool) or self.default_days < 0:
            raise CatalogError(f"retention_days must be >= 0 (0: forever), got {self.default_days}")
        object.__setattr__(self, "rules", tuple(self.rules))

    @property
    def deletes_anything(self) -> bool:
        return self.default_days > 0 or any(r.days > 0 for r in self.rules)

    @property
    def default_label(self) -> str:
        return f"default {_days(self.default_days)}"

    def decide(
        self, *, source: str, local: str, remote: str, device: str, tags: Iterable[str]
    ) -> tuple[int, str]:
        """(days this recording is kept, 0 forever; the label of the rule that decided)."""
        tag_set = set(tags)
        matching = [
            r
            for r in self.rules
            if r.matches(source=source, local=local, remote=remote, device=device, tags=tag_set)
        ]
        if not matching:
            return self.default_days, self.default_label
        forever = next((r for r in matching if r.days == 0), None)
        if forever is not None:
            return 0, forever.label
        winner = max(matching, key=lambda r: r.days)
        return winner.days, winner.label

    def cutoffs(self, now: datetime) -> dict[int, datetime]:
        """days -> the start time before which a recording kept that long has expired."""
        days = {self.default_days, *(r.days for r in self.rules)} - {0}
        return {d: now - timedelta(days=d) for d in days}


def _days(days: int) -> str:
    return "forever" if days == 0 else f"{days} days"


def check_hold_value(kind: str, value: str) -> str:
    """A number or tag hold's value, cleaned; refused when it could never match."""
    text = value.strip()
    if kind == HOLD_NUMBER:
        if not _NUMBER.fullmatch(text):
            raise CatalogError(f"a number hold needs a number (digits, + * #), got {value!r}")
        return text
    if kind == HOLD_TAG:
        tag = text.lower()
        if not _TAG.fullmatch(tag):
            raise CatalogError(
                f"a tag hold needs a tag (one word of 1-32 characters), got {value!r}"
            )
        return tag
    return ""


def check_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise CatalogError("a legal hold needs a reason")
    if len(text) > MAX_REASON:
        raise CatalogError(f"a hold's reason must be at most {MAX_REASON} characters")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldInfo:
    """A legal hold as the catalogue hands it out."""

    id: int
    kind: str
    value: str
    query: dict[str, Any]
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None
    #: Recordings it names (recording and search holds); 0 for rule holds.
    recordings: int

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def target(self) -> str:
        """What it holds, in words: ``number 3001``, ``tag complaint``, ``3 recordings``."""
        if self.kind in (HOLD_NUMBER, HOLD_TAG):
            return f"{self.kind} {self.value}"
        noun = "recording" if self.recordings == 1 else "recordings"
        what = f"{self.recordings} {noun}"
        return f"{what} (search)" if self.kind == HOLD_SEARCH else what


@dataclass(frozen=True, slots=True, kw_only=True)
class TombstoneInfo:
    """What is left of a deleted recording (see :mod:`callrec.catalog.retention`)."""

    id: int
    recording_id: int
    uid: str | None
    path: str
    files: tuple[str, ...]
    sha256: str | None
    size_bytes: int | None
    source: str
    device: str
    local_number: str
    remote_number: str
    start_time: datetime
    deleted_at: datetime
    deleted_by: str
    reason: str
    files_removed_at: datetime | None
    #: The node whose recordings directory held the files (None: from before nodes).
    node: str | None = None


#: The transcription policy that matches every recording.
TRANSCRIBE_ALL: Final = "all"
_TRANSCRIBE_RULE = re.compile(r"\s*(\w+)\s*=\s*(\S+)\s*")


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscribePolicy:
    """Which finished recordings are transcribed without being asked (issue 18):
    ``transcribe_policy`` as a value. No rules: none (on demand only); ``all``: every one;
    else a recording matching any rule, with the kinds and matching of
    :class:`RetentionRule` (``extension=3001``, ``tag=support``, ``source=sip``,
    ``device=...``)."""

    all: bool = False
    rules: tuple[RetentionRule, ...] = field(default=())

    @classmethod
    def parse(cls, items: Iterable[str]) -> TranscribePolicy:
        rules: list[RetentionRule] = []
        every = False
        for item in items:
            if item.strip().lower() == TRANSCRIBE_ALL:
                every = True
                continue
            match = _TRANSCRIBE_RULE.fullmatch(item)
            if match is None:
                raise CatalogError(
                    f"rule {item!r} must be all or look like kind=value, "
                    "e.g. extension=3001 or tag=support"
                )
            try:
                rules.append(RetentionRule(kind=match[1], value=match[2], days=0))
            except CatalogError as exc:
                raise CatalogError(str(exc).replace("retention rule: ", "", 1)) from None
        return cls(all=every, rules=tuple(rules))

    @property
    def anything(self) -> bool:
        return self.all or bool(self.rules)

    def matches(
        self, *, source: str, local: str, remote: str, device: str, tags: Iterable[str]
    ) -> bool:
        if self.all:
            return True
        tag_set = set(tags)
        return any(
            r.matches(source=source, local=local, remote=remote, device=device, tags=tag_set)
            for r in self.rules
        )
