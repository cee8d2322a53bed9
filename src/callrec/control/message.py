"""The control channel's wire format: form-URL-encoded ``key=value`` pairs joined by ``&``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_to_bytes

from callrec.exceptions import ControlProtocolError

#: A message with more pairs than this is refused: no phone sends more than a dozen, and a
#: cap keeps a hostile peer from making us build huge dictionaries.
MAX_FIELDS = 64

#: Characters sent as they are; the phones' own parsers are naive, so nothing else is trusted.
_SAFE = "-_.~:@"


def decode_text(raw: bytes) -> str:
    """URL-decode one key or value: UTF-8 if it is UTF-8, else Latin-1 (never fails)."""
    data = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """One control message, its pairs in the order they came."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, data: bytes, *, max_fields: int = MAX_FIELDS) -> ControlMessage:
        """Parse a message body (no terminator). Raises ControlProtocolError on bad input."""
        body = data.strip(b" \t\r\n\0")
        if not body:
            raise ControlProtocolError("empty control message", reason="bad_request")
        parts = [p for p in body.split(b"&") if p]
        if not parts:
            raise ControlProtocolError("control message has no fields", reason="bad_request")
        if len(parts) > max_fields:
            raise ControlProtocolError(
                f"control message has {len(parts)} fields, more than {max_fields}",
                reason="too_many_fields",
            )
        # Liberal, as the public server and the phones' own parsers are: a piece without
        # ``=`` is the rest of the value before it, cut at an ``&`` the phone did not encode
        # (a phone book's "Tom & Jerry", "AT&T"); only a first piece without ``=`` is refused.
        raw_pairs: list[tuple[bytes, bytes]] = []
        for part in parts:
            raw_key, sep, raw_value = part.partition(b"=")
            if not sep:
                if not raw_pairs:
                    raise ControlProtocolError(
                        f"control message field {decode_text(part)[:40]!r} is not key=value",
                        reason="bad_request",
                    )
                key_before, value_before = raw_pairs[-1]
                raw_pairs[-1] = (key_before, value_before + b"&" + part)
                continue
            raw_pairs.append((raw_key, raw_value))
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw_key, raw_value in raw_pairs:
            key = decode_text(raw_key).strip()
            if not key:
                raise ControlProtocolError(
                    f"control message field {decode_text(raw_key + b'=' + raw_value)[:40]!r} "
                    "has no key",
                    reason="bad_request",
                )
            if key in seen:
                # The first value wins: a repeated key is most likely a phone bug or an attack,
                # and being deterministic matters more than which one we keep.
                continue
            seen.add(key)
            pairs.append((key, decode_text(raw_value)))
        return cls(tuple(pairs))

    @classmethod
    def build(cls, *pairs: tuple[str, str | int]) -> ControlMessage:
        return cls(tuple((k, str(v)) for k, v in pairs))

    def serialize(self) -> bytes:
        return "&".join(
            f"{quote_plus(k, safe=_SAFE)}={quote_plus(v, safe=_SAFE)}" for k, v in self.fields
        ).encode("ascii")

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self.fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    @property
    def cmd(self) -> str:
        return self.get("cmd")

    def as_dict(self) -> dict[str, str]:
        return dict(self.fields)


def message_from_mapping(values: Mapping[str, str | int]) -> ControlMessage:
    return ControlMessage(tuple((k, str(v)) for k, v in values.items()))
