"""``POST /api/v1/recordings/import``: the web upload of phone-local (USB) files (issue 3)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from callrec.catalog import ROLE_ADMIN, ROLE_LISTENER, Catalog
from callrec.config import Settings
from callrec.service import standalone_engine
from callrec.usb.importer import Importer
from callrec.web.app import create_app
from callrec.web.security import new_api_token
from tests.support.data import LOCALFILE_DATA

URL = "/api/v1/recordings/import"


@dataclass
class Web:
    client: httpx.AsyncClient
    catalog: Catalog
    root: Path
    admin: dict[str, str]
    listener: dict[str, str]


def _token(catalog: Catalog, name: str, role: str) -> dict[str, str]:
    user = catalog.create_user(name, password_hash="x", role=role)
    token, token_hash, prefix = new_api_token()
    catalog.create_token(user.id, name="test", token_hash=token_hash, prefix=prefix)
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'callrec.db'}") as cat:
        cat.migrate()
        yield cat


@pytest.fixture
async def web(tmp_path: Path, catalog: Catalog) -> AsyncIterator[Web]:
    settings = Settings(
        recordings_dir=tmp_path / "recordings",
        database_url=f"sqlite:///{tmp_path / 'callrec.db'}",
        usb_import_max_bytes=20_000,
    )
    # The parts `callrec serve` gives the web app for uploads: the catalogue writer and an
    # importer on a recording engine.
    async with standalone_engine(settings, catalog, name="test") as engine:
        importer = Importer(engine, catalog, max_bytes=settings.usb_import_max_bytes)
        app = create_app(settings, catalog, writer=engine.journal.writer, importer=importer)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://callrec.test") as client:
            yield Web(
                client=client,
                catalog=catalog,
                root=settings.recordings_dir,
                admin=_token(catalog, "admin", ROLE_ADMIN),
                listener=_token(catalog, "listener", ROLE_LISTENER),
            )


def _file(name: str, upload_name: str | None = None) -> dict[str, tuple[str, bytes, str]]:
    data = (LOCALFILE_DATA / name).read_bytes()
    return {"file": (upload_name or name, data, "audio/wav")}


async def test_upload_imports_then_recognises_the_file(web: Web) -> None:
    first = await web.client.post(
        URL,
        headers=web.admin,
        files=_file("g722-bare.wav", "Record_20261126161130.wav"),
        data={"device": "0c383e0e709a"},
    )
    assert first.status_code == 201, first.text
    body = first.json()
    rec = body["recording"]
    assert body["duplicate"] is False and body["problems"] == []
    original = (LOCALFILE_DATA / "g722-bare.wav").read_bytes()
    assert body["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert (rec["source"], rec["codec"], rec["sample_rate"]) == ("usb", "G722", 16000)
    assert (rec["device"], rec["duration"], rec["status"]) == ("0c383e0e709a", 1.0, "complete")
    assert rec["file_name"] == "Record_20261126161130.wav"
    assert (web.root / rec["path"]).read_bytes()[:4] == b"RIFF"
    assert (web.root / rec["original_path"]).read_bytes() == original

    again = await web.client.post(URL, headers=web.admin, files=_file("g722-bare.wav", "x.wav"))
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["recording"]["id"] == rec["id"]
    assert web.catalog.count() == 1
    imports = web.catalog.audit_entries(action="import")
    assert [(e.username, e.recording_id) for e in imports] == [("admin", rec["id"])] * 2


async def test_damaged_upload_is_imported_as_recovered(web: Web) -> None:
    answer = await web.client.post(URL, headers=web.admin, files=_file("truncated.wav"))
    assert answer.status_code == 201
    assert answer.json()["recording"]["status"] == "recovered"
    assert answer.json()["problems"][0].startswith("file cut short")


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("not-this-format.wav", "not-this-format.wav: the 64-byte codec field has no NUL"),
        ("unknown-codec.wav", "unknown-codec.wav: codec 'iLBC' is not supported"),
        ("zero-length.wav", "zero-length.wav: file is empty (0 bytes): not a phone recording"),
    ],
)
async def test_unreadable_upload_is_422_with_the_reason(web: Web, name: str, detail: str) -> None:
    answer = await web.client.post(URL, headers=web.admin, files=_file(name))
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(detail)
    assert web.catalog.count() == 0


async def test_upload_size_limit(web: Web) -> None:
    big = {"file": ("Record_1.wav", b"\0" * 200_000, "audio/wav")}
    answer = await web.client.post(URL, headers=web.admin, files=big)
    assert answer.status_code == 413
    assert "over the import limit of 20000 bytes" in answer.json()["detail"]
    # Within the framing allowance but over the limit: refused on the file itself.
    just_over = {"file": ("Record_1.wav", b"\0" * 20_001, "audio/wav")}
    answer = await web.client.post(URL, headers=web.admin, files=just_over)
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("file is 20001 bytes, over the import limit")


async def test_upload_needs_a_file_field(web: Web) -> None:
    answer = await web.client.post(URL, headers=web.admin, data={"device": "x"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "send the recording as the multipart file field 'file'"


async def test_upload_is_for_admins(web: Web) -> None:
    nobody = await web.client.post(URL, files=_file("pcma-rtp.wav"))
    assert nobody.status_code == 401
    listener = await web.client.post(URL, headers=web.listener, files=_file("pcma-rtp.wav"))
    assert listener.status_code == 403
    assert web.catalog.count() == 0


async def test_upload_without_content_length_is_refused(web: Web) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\n"
        yield (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes() + b"\r\n--b--\r\n"

    headers = {**web.admin, "content-type": "multipart/form-data; boundary=b"}
    answer = await web.client.post(URL, headers=headers, content=chunks())
    assert answer.status_code == 411
    assert web.catalog.count() == 0
