"""A recording's tamper evidence: its place in the hash chain, the newest signature, its last
verification, and "verify now" (admins) that re-hashes its file (docs/integrity.md)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from callrec.integrity.keys import installation_public_key
from callrec.integrity.verify import Finding, RecordingState, check_one, save_check, state
from callrec.storage.files import remote_hasher
from callrec.web.api import Admin, User, bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of
from callrec.web.ids import Id
from callrec.web.recordings import visible_recording

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class IntegrityOut(BaseModel):
    recording_id: int
    in_chain: bool = Field(description="The recording has an entry in the hash chain.")
    seq: int | None = Field(description="Its last entry's sequence number.")
    kind: str | None = Field(description="That entry's kind: `recorded` or `updated`.")
    chained_at: str | None = Field(description="When that entry was appended (UTC).")
    signed_seq: int | None = Field(description="The entry the newest signature covers.")
    signed_at: datetime | None = Field(description="When the newest signature was made.")
    signed: bool = Field(description="The newest signature covers this recording's entry.")
    checked_at: datetime | None = Field(description="When its file was last verified.")
    result: str | None = Field(
        description="That verification's result: `ok`, or `altered`, `missing`, `truncated`, "
        "`swapped`, `chain`, `signature`, `unchained`."
    )
    detail: str = Field(description="What the verification found, in words.")


def _out(now: RecordingState) -> IntegrityOut:
    return IntegrityOut(
        recording_id=now.recording_id,
        in_chain=now.seq is not None,
        seq=now.seq,
        kind=now.kind,
        chained_at=now.chained_at,
        signed_seq=now.signed_seq,
        signed_at=now.signed_at,
        signed=now.covered,
        checked_at=now.checked_at,
        result=now.result,
        detail=now.detail,
    )


@router.get("/recordings/{rec_id:int}/integrity", tags=["recordings"])
async def recording_integrity(request: Request, principal: User, rec_id: Id) -> IntegrityOut:
    """The recording's place in the hash chain, the newest signature and its last check."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="integrity")
    return _out(await ctx.db(state, ctx.catalog, rec.id))


@router.post("/recordings/{rec_id:int}/integrity/verify", tags=["recordings"])
async def verify_recording(request: Request, principal: Admin, rec_id: Id) -> IntegrityOut:
    """Re-hash the recording's file now and check its chain entry and the newest signature
    (admin). Audited as `verify`; the answer holds the result."""
    await api_csrf(request, principal)
    await verify_now(request, principal, rec_id)
    ctx = ctx_of(request)
    return _out(await ctx.db(state, ctx.catalog, rec_id))


async def verify_now(request: Request, principal: Principal, rec_id: int) -> Finding | None:
    """The check behind "Verify now" (the API's and the page's): read and hashed on a worker
    thread, its result written through the catalogue writer."""
    ctx = ctx_of(request)
    rec = await visible_recording(request, principal, rec_id, asked="verify")
    settings = ctx.settings
    public = installation_public_key(settings.recordings_dir, settings.integrity_key_file)
    remote = None if ctx.store is None else remote_hasher(ctx.catalog, ctx.store)
    finding, detail = await ctx.db(check_one, ctx.catalog, ctx.root, rec.id, public, remote)
    await ctx.write(save_check, ctx.catalog, rec.id, finding, detail)
    await audit(
        request,
        "verify",
        principal,
        recording_id=rec.id,
        result="ok" if finding is None else finding.kind,
        detail=detail,
    )
    return finding
