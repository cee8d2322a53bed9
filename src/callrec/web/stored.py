"""Recordings whose local copy is gone, served from the object store (issue 17 part 1).

A recording's audio is read from this node's disk when it is there (the local cache: its
access time is set, so the cache keeps what is played) and otherwise from the store, through
this server: the player's ``Range`` becomes the ranged GET of the object (only the bytes
asked for cross the network, streamed as they come), ZIP members are streamed from their
objects, and what must be decoded whole (another download format, the waveform) is fetched
to a temporary file first, its SHA-256 checked, and removed once sent.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi import HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from callrec.catalog import ObjectInfo, ObjectQueries, RecordingInfo
from callrec.storage.client import ObjectMissing, ObjectStore, StorageError
from callrec.storage.files import touch
from callrec.web.auth import WebContext
from callrec.web.ranges import last_modified, reply_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Located:
    """Where a recording's file is: on this disk (``remote`` None) or in the store."""

    path: Path
    remote: ObjectInfo | None


async def locate(ctx: WebContext, rec: RecordingInfo, path: Path) -> Located:
    """``path`` (the recording's local file) when it exists, else its verified object; a
    file in neither place is answered 404 by the caller (``path`` missing)."""
    if ctx.store is None:
        return Located(path, None)
    if await run_in_threadpool(path.is_file):
        await run_in_threadpool(touch, path)  # the cache keeps what is listened to
        return Located(path, None)
    obj = await ctx.db(ObjectQueries(ctx.catalog).object_for, rec.id, rec.path)
    return Located(path, obj)


def object_etag(obj: ObjectInfo) -> str:
    """A strong validator of the object: its content's hash."""
    return f'"{obj.sha256[:32]}"'


async def remote_file_response(
    request: Request, store: ObjectStore, obj: ObjectInfo, *, media_type: str, disposition: str
) -> Response:
    """:func:`callrec.web.recordings.file_response` of an object: 206 for one satisfiable
    range (read with a ranged GET), 416 for an unsatisfiable one, 200 otherwise."""
    reply = reply_for(
        request.headers,
        size=obj.size,
        etag=object_etag(obj),
        last_modified=last_modified(obj.uploaded_at.timestamp()),
        disposition=disposition,
    )
    if reply.status not in (200, 206):
        return Response(status_code=reply.status, headers=reply.headers)
    if request.method == "HEAD" or not reply.has_body:
        return Response(status_code=reply.status, headers=reply.headers, media_type=media_type)
    start, length, status, headers = reply.start, reply.length, reply.status, reply.headers
    try:
        if status == 200:
            got = await run_in_threadpool(store.read, obj.key)
        else:
            got = await run_in_threadpool(store.read, obj.key, start, start + length - 1)
    except ObjectMissing as exc:
        raise HTTPException(404, "the recording's file is missing from the store") from exc
    except StorageError as exc:
        raise HTTPException(502, f"the object store failed: {exc}") from exc
    return StreamingResponse(got.body, status_code=status, headers=headers, media_type=media_type)


async def fetch(ctx: WebContext, obj: ObjectInfo) -> Path:
    """The object copied to a temporary file (its suffix the recording's, its SHA-256
    checked); the caller removes it (:func:`removed_after`)."""
    store = ctx.store
    assert store is not None
    directory = ctx.root / ".callrec" / "fetch"

    def copy() -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="fetch-", suffix=Path(obj.path).suffix, dir=directory)
        os.close(fd)
        target = Path(name)
        target.unlink()
        try:
            sha = store.download(obj.key, target)
            if sha != obj.sha256:
                raise StorageError(f"{obj.key}: the store returned SHA-256 {sha}, not {obj.sha256}")
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    try:
        return await run_in_threadpool(copy)
    except ObjectMissing as exc:
        raise HTTPException(404, "the recording's file is missing from the store") from exc
    except StorageError as exc:
        raise HTTPException(502, f"the object store failed: {exc}") from exc


def removed_after(body: Iterator[bytes], path: Path) -> Iterator[bytes]:
    """``body``, then ``path`` removed (also when the client goes away mid-way)."""
    try:
        yield from body
    finally:
        path.unlink(missing_ok=True)


def zip_source(store: ObjectStore, obj: ObjectInfo) -> Callable[[], tuple[int, Iterator[bytes]]]:
    """What a ZIP member streamed from the store reads: its size and its bytes."""

    def open_object() -> tuple[int, Iterator[bytes]]:
        got = store.read(obj.key)
        return got.size, got.body

    return open_object


def modified_of(obj: ObjectInfo) -> datetime:
    return obj.uploaded_at
