"""HTTP byte ranges (RFC 9110, section 14), sans I/O: a header and a size in, a decision out.

One range is served as ``206 Partial Content``; a range that cannot be satisfied is
``416`` with ``Content-Range: bytes */size``. Anything else is ignored, which the RFC allows,
and the whole file is served (``200``): a header we cannot parse, another unit, several
ranges (players never ask for those), or an ``If-Range`` that no longer matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

_SPEC = re.compile(r"(?P<first>\d*)\s*-\s*(?P<last>\d*)")


class RangeNotSatisfiable(Exception):
    """The range lies wholly outside the file (or the file is empty)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks for in a file of ``size`` bytes; None to serve it whole.

    Raises :class:`RangeNotSatisfiable` for a well-formed range that selects nothing.
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip() for p in specs.split(",") if p.strip()]
    if len(parts) != 1:
        return None
    match = _SPEC.fullmatch(parts[0])
    if match is None:
        return None
    first, last = match["first"], match["last"]
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # invalid: ignored, as the RFC says
        if start >= size:
            raise RangeNotSatisfiable(size)
        end = min(int(last), size - 1) if last else size - 1
        return ByteRange(start, end, size)
    if not last:
        return None  # "bytes=-" says nothing
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(size)
    return ByteRange(max(0, size - suffix), size - 1, size)


def etag_for(size: int, mtime_ns: int) -> str:
    """A strong validator of a file's current content (size and modification time)."""
    return f'"{size:x}-{mtime_ns:x}"'


def last_modified(mtime: float) -> str:
    return formatdate(mtime, usegmt=True)


def if_range_matches(if_range: str | None, *, etag: str, last_modified: str) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (always, when it is absent)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag  # strong comparison; a weak tag never matches
    return value == last_modified


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer a GET/HEAD of ``size`` bytes: the status, the headers, and the slice
    of the content to send (none for 304 and 416)."""

    status: int
    headers: dict[str, str]
    start: int = 0
    length: int = 0

    @property
    def has_body(self) -> bool:
        return self.status in (200, 206) and self.length > 0


def reply_for(
    request_headers: Mapping[str, str],
    *,
    size: int,
    etag: str,
    last_modified: str,
    disposition: str,
) -> Reply:
    """The answer to a request for a whole file or one range of it, under its validators
    (``If-None-Match``, ``If-Range``): the same decision for a local file and an object."""
    headers = {
        "accept-ranges": "bytes",
        "etag": etag,
        "last-modified": last_modified,
        "content-disposition": disposition,
        "cache-control": "private, no-cache",
    }
    if request_headers.get("if-none-match") == etag:
        return Reply(304, headers)
    byte_range = None
    if if_range_matches(request_headers.get("if-range"), etag=etag, last_modified=last_modified):
        try:
            byte_range = parse_range(request_headers.get("range"), size)
        except RangeNotSatisfiable as exc:
            return Reply(416, {**headers, "content-range": exc.content_range})
    if byte_range is None:
        return Reply(200, {**headers, "content-length": str(size)}, 0, size)
    headers["content-range"] = byte_range.content_range
    headers["content-length"] = str(byte_range.length)
    return Reply(206, headers, byte_range.start, byte_range.length)
