"""Notes and tags on recordings, and the tags in use."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from callrec.catalog import NoteInfo
from callrec.exceptions import CatalogError
from callrec.web.api import User, bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of
from callrec.web.ids import Id
from callrec.web.recordings import BadRequest, visible_recording

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class NoteOut(BaseModel):
    id: int
    recording_id: int
    username: str
    text: str
    created_at: datetime


class TagCount(BaseModel):
    tag: str
    count: int


def note_out(note: NoteInfo) -> dict[str, Any]:
    return {
        "id": note.id,
        "recording_id": note.recording_id,
        "username": note.username,
        "text": note.text,
        "created_at": note.created_at,
    }


@router.get("/recordings/{rec_id:int}/notes", response_model=list[NoteOut], tags=["notes"])
async def list_notes(request: Request, principal: User, rec_id: Id) -> list[dict[str, Any]]:
    ctx = ctx_of(request)
    await visible_recording(request, principal, rec_id, asked="notes")
    return [note_out(n) for n in await ctx.db(ctx.catalog.notes, rec_id)]


@router.post(
    "/recordings/{rec_id:int}/notes", response_model=NoteOut, status_code=201, tags=["notes"]
)
async def add_note(request: Request, principal: User, rec_id: Id, body: NoteIn) -> dict[str, Any]:
    """Add a note. Audited as `note_add`."""
    await api_csrf(request, principal)
    return note_out(await create_note(request, principal, rec_id, body.text))


async def create_note(request: Request, principal: Principal, rec_id: Id, text: str) -> NoteInfo:
    ctx = ctx_of(request)
    await visible_recording(request, principal, rec_id, asked="note_add")
    try:
        note = await ctx.write(ctx.catalog.add_note, rec_id, user=principal.user, text=text)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "note_add", principal, recording_id=rec_id, note_id=note.id, text=text)
    return note


@router.delete("/notes/{note_id:int}", status_code=204, tags=["notes"])
async def delete_note(request: Request, principal: User, note_id: Id) -> Response:
    """Delete a note: its author or an admin. Audited as `note_delete`."""
    await api_csrf(request, principal)
    await remove_note(request, principal, note_id)
    return Response(status_code=204)


async def remove_note(request: Request, principal: Principal, note_id: Id) -> int:
    ctx = ctx_of(request)
    note = await ctx.db(ctx.catalog.get_note, note_id)
    if note is None:
        raise HTTPException(404, f"no note {note_id}")
    await visible_recording(request, principal, note.recording_id, asked="note_delete")
    if not principal.is_admin and note.user_id != principal.user.id:
        raise HTTPException(403, "only its author or an admin may delete a note")
    await ctx.write(ctx.catalog.delete_note, note_id)
    await audit(
        request,
        "note_delete",
        principal,
        recording_id=note.recording_id,
        note_id=note_id,
        text=note.text,
    )
    return note.recording_id


@router.put("/recordings/{rec_id:int}/tags/{tag}", status_code=204, tags=["tags"])
async def put_tag(request: Request, principal: User, rec_id: Id, tag: str) -> Response:
    """Tag a recording (idempotent). Audited as `tag_add`."""
    await api_csrf(request, principal)
    await change_tag(request, principal, rec_id, tag, add=True)
    return Response(status_code=204)


@router.delete("/recordings/{rec_id:int}/tags/{tag}", status_code=204, tags=["tags"])
async def delete_tag(request: Request, principal: User, rec_id: Id, tag: str) -> Response:
    """Remove a tag. Audited as `tag_remove`."""
    await api_csrf(request, principal)
    await change_tag(request, principal, rec_id, tag, add=False)
    return Response(status_code=204)


async def change_tag(
    request: Request, principal: Principal, rec_id: Id, tag: str, *, add: bool
) -> None:
    ctx = ctx_of(request)
    await visible_recording(request, principal, rec_id, asked="tag_add" if add else "tag_remove")
    try:
        if add:
            changed = await ctx.write(ctx.catalog.add_tag, rec_id, tag)
        else:
            changed = await ctx.write(ctx.catalog.remove_tag, rec_id, tag)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    if changed:
        action = "tag_add" if add else "tag_remove"
        await audit(request, action, principal, recording_id=rec_id, tag=tag.strip().lower())


@router.get("/tags", response_model=list[TagCount], tags=["tags"])
async def list_tags(request: Request, principal: User) -> list[dict[str, Any]]:
    """Every tag on a recording the caller may see, most used first."""
    ctx = ctx_of(request)
    counts = await ctx.db(ctx.catalog.tag_counts, principal.scope)
    return [{"tag": t, "count": n} for t, n in counts]
