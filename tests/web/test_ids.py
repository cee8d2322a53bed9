"""Integers past a signed 64-bit integer, in every place a request carries one: 404 for an id
in the path, 400 for one in the query or a form (a page with filters shows it, as it shows any bad
filter), 422 in a JSON body; never a 500 (issue 15).

``CASES`` names every route that takes an integer; :func:`test_every_integer_route_is_listed`
walks the app's routes so that a new one cannot be left out.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from callrec.catalog import MAX_ID
from tests.support.web import Site

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUGE = 2**64
#: The largest id a row can have is fine: no such row.
TOP = MAX_ID

#: (method, path template, where the integer is) for every route that takes one.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/api/v1/recordings/{rec_id:int}", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/audio", "path"),
    ("HEAD", "/api/v1/recordings/{rec_id:int}/audio", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/download", "path"),
    ("HEAD", "/api/v1/recordings/{rec_id:int}/download", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/peaks", "path"),
    ("DELETE", "/api/v1/recordings/{rec_id:int}", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/integrity", "path"),
    ("POST", "/api/v1/recordings/{rec_id:int}/integrity/verify", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/notes", "path"),
    ("POST", "/api/v1/recordings/{rec_id:int}/notes", "path"),
    ("DELETE", "/api/v1/notes/{note_id:int}", "path"),
    ("PUT", "/api/v1/recordings/{rec_id:int}/tags/{tag}", "path"),
    ("DELETE", "/api/v1/recordings/{rec_id:int}/tags/{tag}", "path"),
    ("PATCH", "/api/v1/users/{user_id:int}", "path"),
    ("DELETE", "/api/v1/users/{user_id:int}", "path"),
    ("DELETE", "/api/v1/tokens/{token_id:int}", "path"),
    ("GET", "/recordings/{rec_id:int}", "path"),
    ("POST", "/recordings/{rec_id:int}/notes", "path"),
    ("POST", "/recordings/{rec_id:int}/notes/{note_id:int}/delete", "path"),
    ("POST", "/recordings/{rec_id:int}/tags", "path"),
    ("POST", "/recordings/{rec_id:int}/tags/remove", "path"),
    ("POST", "/recordings/{rec_id:int}/delete", "path"),
    ("POST", "/recordings/{rec_id:int}/verify", "path"),
    ("POST", "/account/tokens/{token_id:int}/revoke", "path"),
    ("POST", "/admin/users/{user_id:int}", "path"),
    ("POST", "/admin/users/{user_id:int}/password", "path"),
    ("POST", "/admin/users/{user_id:int}/delete", "path"),
    ("POST", "/admin/tokens/{token_id:int}/revoke", "path"),
    ("GET", "/api/v1/recordings?page=", "query"),
    ("GET", "/api/v1/recordings?limit=", "query"),
    ("GET", "/api/v1/recordings/{rec_id:int}/peaks?buckets=", "query"),
    ("GET", "/api/v1/audit?before_id=", "query"),
    ("GET", "/api/v1/audit?limit=", "query"),
    ("POST", "/api/v1/recordings/bulk-download", "body"),
    ("POST", "/api/v1/recordings/bulk-delete", "body"),
    # Read by hand, not by FastAPI:
    ("GET", "/api/v1/audit?recording_id=", "query"),
    ("GET", "/api/v1/audit.csv?recording_id=", "query"),
    ("GET", "/admin/audit?before_id=", "page"),
    ("GET", "/admin/audit?recording_id=", "page"),
    ("POST", "/recordings/zip", "form"),
    ("GET", "/api/v1/recordings?cursor=", "query"),
    # The job queue (issue 16 part J):
    ("GET", "/api/v1/jobs/{job_id:int}", "path"),
    ("POST", "/api/v1/jobs/{job_id:int}/retry", "path"),
    ("POST", "/admin/jobs/{job_id:int}/retry", "path"),
    ("GET", "/api/v1/jobs?limit=", "query"),
    ("GET", "/api/v1/jobs?offset=", "query"),
    ("GET", "/admin/jobs?job=", "page"),
    ("GET", "/api/v1/jobs?before_id=", "query"),
    ("GET", "/admin/jobs?before_id=", "page"),
    # Legal holds (issue 16 R):
    ("DELETE", "/api/v1/holds/{hold_id:int}", "path"),
    ("POST", "/api/v1/holds", "body"),
    ("POST", "/recordings/{rec_id:int}/hold", "path"),
    ("POST", "/recordings/{rec_id:int}/holds/{hold_id:int}/release", "path"),
    ("POST", "/recordings/hold", "form"),
    # Transcripts (issue 18):
    ("GET", "/api/v1/recordings/{rec_id:int}/transcript", "path"),
    ("GET", "/api/v1/recordings/{rec_id:int}/transcript.{suffix}", "path"),
    ("POST", "/api/v1/recordings/{rec_id:int}/transcribe", "path"),
    ("POST", "/recordings/{rec_id:int}/transcribe", "path"),
]


def fill(template: str, value: int, *, in_path: bool) -> str:
    """``template`` with ``value`` in its path ids (``in_path``; else ids of rows that
    exist) or at its end (a query parameter)."""
    path = template
    for name in ("rec_id", "note_id", "user_id", "token_id", "job_id", "hold_id"):
        path = path.replace(f"{{{name}:int}}", str(value if in_path else 1))
    path = path.replace("{tag}", "x").replace("{suffix}", "vtt")
    if path.endswith("cursor="):
        raw = json.dumps({"s": "-start_time", "v": "2026-01-01T00:00:00+00:00", "i": value})
        return path + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    if path.endswith("="):
        return path + str(value)
    return path


def request_args(method: str, template: str, where: str, value: int) -> dict[str, Any]:
    url = fill(template, value, in_path=where == "path")
    args: dict[str, Any] = {"method": method, "url": url}
    if where == "body":
        args["json"] = {"ids": [value]}
    elif where == "form":
        args["data"] = {"id": str(value)}
    elif method in ("POST", "PUT", "PATCH"):
        if template.startswith("/api/"):
            args["json"] = {"text": "x"} if template.endswith("notes") else {}
        else:
            args["data"] = {"text": "x", "tag": "x"}
    return args


#: A page with filters shows a bad one on the page, as the list page does (200).
EXPECTED = {"path": 404, "query": 400, "page": 200, "form": 400, "body": 422}


@pytest.mark.parametrize(("method", "template", "where"), ROUTES)
async def test_an_integer_past_64_bits_is_refused_not_a_500(
    site: Site, method: str, template: str, where: str
) -> None:
    async with site.client("admin") as c:
        r = await c.request(**request_args(method, template, where, HUGE))
        assert r.status_code == EXPECTED[where], (method, template, r.text[:300])
        if where == "page":
            assert f"must be a number from 1 to {MAX_ID}" in r.text
        # The largest id there can be is asked like any other: no such row, or a fine answer.
        r = await c.request(**request_args(method, template, where, TOP))
        assert r.status_code < 500, (method, template, r.text[:300])


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from _routes(original.routes)
        else:
            yield route


async def test_every_integer_route_is_listed(site: Site) -> None:
    listed = {(m, t.split("?")[0]) for m, t, _ in ROUTES}
    listed_queries = {(m, t) for m, t, w in ROUTES if "?" in t}
    found = 0
    for route in _routes(site.web.app.routes):
        if not isinstance(route, APIRoute):
            continue
        dependant = route.dependant
        int_queries = [
            p.name for p in dependant.query_params if "int" in str(p.field_info.annotation)
        ]
        for method in route.methods:
            if ":int}" in route.path:
                found += 1
                assert (method, route.path) in listed, (method, route.path)
            for name in int_queries:
                assert (method, f"{route.path}?{name}=") in listed_queries, (route.path, name)
            if any(p.name == "body" for p in dependant.body_params) and "ids" in str(
                dependant.body_params[0].field_info.annotation.model_fields  # type: ignore[union-attr]
            ):
                assert (method, route.path) in listed
    assert found >= 26
