"""HTTP byte ranges, sans I/O."""

from __future__ import annotations

import pytest

from callrec.web.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    etag_for,
    if_range_matches,
    parse_range,
    reply_for,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=0-", (0, 999)),
        ("bytes=500-", (500, 999)),
        ("bytes=990-2000", (990, 999)),
        ("bytes=-1", (999, 999)),
        ("bytes=-1000", (0, 999)),
        ("bytes=-5000", (0, 999)),
        ("BYTES = 10 - 19", (10, 19)),
        ("bytes=10-19,", (10, 19)),
    ],
)
def test_one_range(header: str, expected: tuple[int, int]) -> None:
    found = parse_range(header, 1000)
    assert found == ByteRange(*expected, 1000)
    assert found.content_range == f"bytes {expected[0]}-{expected[1]}/1000"
    assert found.length == expected[1] - expected[0] + 1


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "items=0-1",
        "bytes=9-5",
        "bytes=0-1,3-4",
    ],
)
def test_ignored_ranges_serve_everything(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=1000-1001", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.content_range == f"bytes */{size}"


def test_if_range() -> None:
    tag = etag_for(1000, 123456789)
    assert tag == '"3e8-75bcd15"'
    modified = "Thu, 26 Nov 2026 12:00:00 GMT"
    assert if_range_matches(None, etag=tag, last_modified=modified)
    assert if_range_matches(tag, etag=tag, last_modified=modified)
    assert not if_range_matches('"other"', etag=tag, last_modified=modified)
    assert not if_range_matches("W/" + tag, etag=tag, last_modified=modified)
    assert if_range_matches(modified, etag=tag, last_modified=modified)
    assert not if_range_matches("Wed, 25 Nov 2026 12:00:00 GMT", etag=tag, last_modified=modified)


def test_one_reply_for_files_and_objects() -> None:
    """reply_for: the decision both the disk and the object store answer with."""
    common = {"size": 1000, "etag": '"e1"', "last_modified": "Tue, 01 Dec 2026 00:00:00 GMT"}
    whole = reply_for({}, disposition="inline", **common)
    assert (whole.status, whole.start, whole.length) == (200, 0, 1000)
    assert whole.headers["content-length"] == "1000" and whole.has_body
    part = reply_for({"range": "bytes=-100"}, disposition="inline", **common)
    assert (part.status, part.start, part.length) == (206, 900, 100)
    assert part.headers["content-range"] == "bytes 900-999/1000"
    assert reply_for({"if-none-match": '"e1"'}, disposition="x", **common).status == 304
    bad = reply_for({"range": "bytes=5000-"}, disposition="x", **common)
    assert (bad.status, bad.headers["content-range"], bad.has_body) == (416, "bytes */1000", False)
    stale = reply_for({"range": "bytes=0-1", "if-range": '"old"'}, disposition="x", **common)
    assert stale.status == 200
