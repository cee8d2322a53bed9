"""The job queue in the web UI and API of a real server: a real call's completion job and
webhook delivery (to a real receiver), their history, the retry of a dead job (API and admin
page, audited), admins only, and the job figures of /metrics."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

from callrec.catalog import JobStore
from callrec.catalog.jobs import OUTCOME_DEAD, Claim
from callrec.web.pages.admin import JOB_PAGE
from tests.jobs.test_webhooks import SECRET
from tests.support.receiver import webhook_receiver
from tests.support.web import USERS, start_site, stop_site
from tests.web.test_api import csrf_of, sign_in


async def test_jobs_api_page_and_metrics(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        site = await start_site(
            tmp_path,
            webhook_url=(receiver.url,),
            webhook_secret=SECRET,
            job_poll_interval=0.05,
        )
        try:
            rec_id = await site.record(codec="PCMA", seconds=1.0, session_id="jobs1")
            await asyncio.to_thread(receiver.wait_requests, 1)
            store = JobStore(site.catalog)
            # A dead job, as a runner leaves one after its last attempt.
            store.enqueue("test.dead", "k", {})
            (claimed,) = store.claim(
                "elsewhere:1:x", [Claim(kind="test.dead", limit=1, lease=timedelta(minutes=1))]
            )
            store.settle(
                claimed, outcome=OUTCOME_DEAD, started_at=claimed.run_after, detail="gave up"
            )

            async with site.client("admin") as admin:

                async def delivered() -> dict[str, object]:
                    for _ in range(500):
                        jobs = (
                            await admin.get("/api/v1/jobs", params={"kind": "webhook:*"})
                        ).json()
                        if jobs and jobs[0]["state"] == "done":
                            return jobs[0]  # type: ignore[no-any-return]
                        await asyncio.sleep(0.02)
                    raise AssertionError("the webhook job is not done")

                hook = await delivered()
                assert hook["url"] == receiver.url and hook["event"] == "recording.completed"
                detail = (await admin.get(f"/api/v1/jobs/{hook['id']}")).json()
                assert detail["payload"]["event"]["data"]["recording"]["id"] == rec_id
                (attempt,) = detail["history"]
                assert attempt["outcome"] == "done" and attempt["detail"].startswith("HTTP 200")
                done = (
                    await admin.get("/api/v1/jobs", params={"kind": "recording.completed"})
                ).json()
                assert [j["state"] for j in done] == ["done"]
                dead = (await admin.get("/api/v1/jobs", params={"state": "dead"})).json()
                assert [(j["kind"], j["last_error"]) for j in dead] == [("test.dead", "gave up")]
                r = await admin.post(f"/api/v1/jobs/{claimed.id}/retry")
                assert r.status_code == 200 and r.json()["state"] == "queued"
                assert r.json()["attempts"] == 0
                assert (await admin.post("/api/v1/jobs/999999/retry")).status_code == 404
                assert (await admin.get("/api/v1/jobs/999999")).status_code == 404
                assert (
                    await admin.get("/api/v1/jobs", params={"state": "lost"})
                ).status_code == 400
                audit = (await admin.get("/api/v1/audit", params={"action": "job_retry"})).json()
                assert len(audit) == 1

                metrics = (await admin.get("/metrics")).text
            assert 'callrec_jobs{kind="recording.completed",state="done"} 1.0' in metrics
            assert re.search(
                r'callrec_job_runs_total\{kind="webhook:[0-9a-f]{12}",outcome="done"\} 1\.0',
                metrics,
            )
            assert 'callrec_jobs{kind="test.dead",state="queued"} 1.0' in metrics
            assert 'callrec_jobs_oldest_queued_seconds{kind="test.dead"}' in metrics

            async with site.client() as anonymous:
                for method, path in (
                    ("GET", "/api/v1/jobs"),
                    ("GET", f"/api/v1/jobs/{claimed.id}"),
                    ("POST", f"/api/v1/jobs/{claimed.id}/retry"),
                ):
                    assert (await anonymous.request(method, path)).status_code == 401
                assert (await anonymous.get("/admin/jobs")).status_code == 303

            async with site.client("listener") as listener:
                assert (await listener.get("/api/v1/jobs")).status_code == 403
                assert (await listener.post(f"/api/v1/jobs/{claimed.id}/retry")).status_code == 403

            name, password = USERS["admin"][0], USERS["admin"][1]
            browser = await sign_in(site, name, password)
            try:
                page = await browser.get("/admin/jobs", params={"job": hook["id"]})
                assert page.status_code == 200
                assert receiver.url in page.text and "HTTP 200 in" in page.text
                csrf = await csrf_of(browser)
                r = await browser.post(f"/admin/jobs/{hook['id']}/retry", data={"csrf": csrf})
                assert (
                    r.status_code == 303
                    and r.headers["location"] == f"/admin/jobs?job={hook['id']}"
                )
                # The retried delivery goes out again, with the same event id.
                got = await asyncio.to_thread(receiver.wait_requests, 2)
                assert got[0].headers["Callrec-Event-Id"] == got[1].headers["Callrec-Event-Id"]
                # A session's API change needs its CSRF token.
                r = await browser.post(f"/api/v1/jobs/{hook['id']}/retry")
                assert r.status_code == 403
                r = await browser.post(f"/admin/jobs/{hook['id']}/retry", data={"csrf": "wrong"})
                assert r.status_code in (400, 403)
            finally:
                await browser.aclose()
        finally:
            await stop_site(site)


async def test_the_jobs_page_and_api_page_back_through_every_job(tmp_path: Path) -> None:
    site = await start_site(tmp_path, jobs_enabled=False)
    try:
        store = JobStore(site.catalog)
        for n in range(JOB_PAGE + 5):
            store.enqueue("test.many", f"k{n}", {})
        store.enqueue("test.other", "x", {})
        name, password = USERS["admin"][0], USERS["admin"][1]
        browser = await sign_in(site, name, password)
        try:
            first = await browser.get("/admin/jobs", params={"kind": "test.many"})
            assert first.status_code == 200
            rows = re.findall(r'<tr data-job="(\d+)">', first.text)
            assert len(rows) == JOB_PAGE
            older = re.search(r'href="(/admin/jobs\?[^"]+)">Older', first.text)
            assert older is not None and "kind=test.many" in older[1]
            second = await browser.get(older[1].replace("&amp;", "&"))
            rest = re.findall(r'<tr data-job="(\d+)">', second.text)
            assert len(rest) == 5 and "Older" not in second.text
            everything = sorted(int(i) for i in rows + rest)
            assert everything == sorted(j.id for j in store.list_jobs(kind="test.many", limit=500))
            bad = await browser.get("/admin/jobs", params={"before_id": "x"})
            assert "before_id must be a number" in bad.text
        finally:
            await browser.aclose()
        async with site.client("admin") as admin:
            page = (await admin.get("/api/v1/jobs", params={"kind": "test.many"})).json()
            after = (
                await admin.get(
                    "/api/v1/jobs", params={"kind": "test.many", "before_id": page[-1]["id"]}
                )
            ).json()
            assert len(page) == 100 and len(after) == 5
            assert after[0]["id"] < page[-1]["id"]
    finally:
        await stop_site(site)
