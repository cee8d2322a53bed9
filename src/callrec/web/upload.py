"""``POST /api/v1/recordings/import``: upload a phone-local (USB) recording (issue 3).

The body is ``multipart/form-data`` with the file in the field ``file`` (its file name is the
recording's, ``Record_[SystemTime].wav``) and optionally the phone's MAC in ``device``. The
import is :meth:`callrec.usb.importer.Importer.import_bytes` on the server's recording engine,
as ``callrec file import`` does it: a playable WAV beside the kept original, source ``usb``,
duplicates recognised by SHA-256.

Answers: 201 and the new recording; 200 and the existing one when the file was imported
before (``duplicate: true``); 411 without a Content-Length; 413 over ``usb_import_max_bytes``
(checked on the Content-Length before the body is read, and on the file); 422 when the file
is not a phone recording callrec can decode, or holds no audio (a header alone): the detail
says why, and nothing is stored or catalogued; 503 when the catalogue
does not answer (the detail says whether the file was stored: it is catalogued when the
catalogue is back); 507 when the disk is full (under the reserve). Admins only.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.datastructures import UploadFile

from callrec.exceptions import CatalogError, LocalFileError
from callrec.usb.importer import ImportFailedError, ImportResult, ImportTooLargeError
from callrec.web.api import bearer
from callrec.web.auth import Principal, api_csrf, audit, ctx_of, require_admin
from callrec.web.recordings import recording_dict

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])

#: Room for the multipart framing and the small fields around the file.
MULTIPART_OVERHEAD: Final = 64 * 1024
#: Name given to a file uploaded without one.
DEFAULT_NAME: Final = "upload.wav"

Admin = Annotated[Principal, Depends(require_admin)]


@router.post(
    "/recordings/import",
    status_code=201,
    tags=["recordings"],
    responses={
        200: {"description": "Imported before: the existing recording."},
        411: {"description": "No Content-Length."},
        413: {"description": "Over usb_import_max_bytes."},
        422: {
            "description": "Not a phone recording callrec can decode, or no audio in it "
            "(a header alone); nothing is stored."
        },
        503: {"description": "The catalogue does not answer (the file may be stored)."},
        507: {"description": "The disk is full (under the reserve)."},
    },
)
async def import_upload(request: Request, principal: Admin, response: Response) -> dict[str, Any]:
    """Import an uploaded phone-local (USB) recording, `Record_*.wav` (admin)."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    limit = ctx.settings.usb_import_max_bytes
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "send the upload with a Content-Length")
    if int(length) > limit + MULTIPART_OVERHEAD:
        raise HTTPException(
            413, f"upload is {length} bytes, over the import limit of {limit} bytes"
        )
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "send the recording as the multipart file field 'file'")
        data = await upload.read()
        device = form.get("device")
        name = upload.filename or DEFAULT_NAME
    finally:
        await form.close()
    if ctx.importer is None:
        raise HTTPException(503, "this server does not record: nothing can be imported")
    try:
        result: ImportResult = await ctx.importer.import_bytes(
            data, name=name, device=device if isinstance(device, str) else ""
        )
    except ImportTooLargeError as exc:
        raise HTTPException(413, str(exc)) from exc
    except LocalFileError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc
    except ImportFailedError as exc:
        raise HTTPException(507 if exc.reason == "disk_full" else 500, str(exc)) from exc
    except CatalogError as exc:
        # The catalogue is down or slow: said as such (the file may be stored already, and
        # is catalogued when the catalogue is back; the message says which).
        raise HTTPException(503, str(exc)) from exc
    await audit(
        request,
        "import",
        principal,
        recording_id=result.recording.id,
        name=name,
        duplicate=result.duplicate,
    )
    if result.duplicate:
        response.status_code = 200
    return {
        "duplicate": result.duplicate,
        "original_sha256": result.original_sha256,
        "problems": list(result.problems),
        "recording": recording_dict(result.recording),
    }
