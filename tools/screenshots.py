"""Screenshots of the web UI for the docs: the recordings list, a recording's page and the
live page, at a desktop's width (1280) and a phone's (390), into ``docs/screenshots/``.

Starts a recording server with the web UI on loopback in a temporary folder, records sample
calls with the phone simulator (and keeps one going for the live page), signs in as an
admin in headless Chromium (Debian's ``chromium``, driven by Playwright) and saves PNGs.
Not part of ``make test``; run it after changing a page:

    .venv/bin/python tools/screenshots.py [--out docs/screenshots] [--chromium PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callrec.codecs import get_codec
from callrec.config import Settings
from callrec.service import Service
from callrec.sim.call import record_call
from callrec.sim.phone import PhoneCall, build_packets
from callrec.web.security import hash_password

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "screenshot-password"
SIZES = {"desktop": (1280, 860), "phone": (390, 844)}
#: (codec, seconds, direction, local number, local name, remote number, remote name, device)
CALLS = [
    ("PCMA", 34.0, "in", "3001", "Reception", "+4930123456", "Anna Schmidt", "0c383e0e709a"),
    ("G722", 45.0, "out", "3002", "Sales", "0891234567", "Müller GmbH", "0c383e0e7000"),
    ("PCMU", 12.0, "in", "3001", "Reception", "2011", "", "0c383e0e709a"),
    ("PCMA", 21.0, "out", "3005", "Support", "+441632960123", "Jane Doe", "0c383e0e7abc"),
    ("PCMA", 48.0, "in", "3002", "Sales", "4000", "Иван Петров", "0c383e0e7000"),
    ("G722", 7.0, "out", "3003", "", "030987654", "Bob Builder", "0c383e0e709a"),
]


def voice(seconds: float, rate: int, seed: int) -> npt.NDArray[np.int16]:
    """Something that looks like speech on a waveform: tones in bursts, with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 930 * t)
    envelope = np.clip(np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6)), 0, None) ** 2
    noise = 0.05 * rng.standard_normal(t.size)
    return np.asarray(np.round(12000 * (tone * envelope + noise)), dtype=np.int16)


async def record_samples(server: Service) -> list[int]:
    ids = []
    for n, (codec, seconds, direction, local, local_name, remote, remote_name, device) in enumerate(
        CALLS
    ):
        rate = get_codec(codec).sample_rate
        result = await record_call(
            "127.0.0.1",
            server.control_port,
            codec=codec,
            pcm=voice(seconds, rate, n),
            realtime=False,
            session_id=f"7000{n}",
            direction=direction,
            local_number=local,
            local_name=local_name,
            remote_number=remote,
            remote_name=remote_name,
            device=device,
        )
        if not result.ok:
            raise SystemExit(f"the sample call {n} failed: {result.error}")
    for row in server.catalog.find(limit=100):
        ids.append(row.id)
    return ids


async def shoot(base: str, out: Path, chromium: str, rec_id: int) -> list[Path]:
    from playwright.async_api import async_playwright

    saved = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--mute-audio"],
        )
        try:
            for size, (width, height) in SIZES.items():
                page = await browser.new_page(
                    viewport={"width": width, "height": height},
                    timezone_id="Europe/Berlin",
                    locale="en-GB",
                )
                await page.goto(f"{base}/login")
                await page.fill("input[name=username]", "admin")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/recordings")
                await page.click(f"tr[data-id='{rec_id}'] a[data-play]")
                await page.wait_for_function(
                    "() => document.getElementById('list-audio').currentTime > 0.3"
                )
                await page.evaluate("document.getElementById('list-audio').pause()")
                await page.evaluate("window.scrollTo(0, 0)")
                saved.append(out / f"list-{size}.png")
                await page.screenshot(path=str(saved[-1]))
                await page.goto(f"{base}/recordings/{rec_id}")
                await page.wait_for_selector("#player[data-ready='1']")
                saved.append(out / f"call-{size}.png")
                await page.screenshot(path=str(saved[-1]), full_page=size == "desktop")
                await page.goto(f"{base}/live")
                await page.wait_for_selector("#live tr[data-session='79999']")
                await page.wait_for_timeout(1500)  # a second of counters moving
                saved.append(out / f"live-{size}.png")
                await page.screenshot(path=str(saved[-1]))
                await page.close()
        finally:
            await browser.close()
    return saved


async def run(out: Path, chromium: str) -> None:
    with tempfile.TemporaryDirectory(prefix="callrec-screenshots-") as tmp:
        settings = Settings(
            control_host="127.0.0.1",
            control_port=0,
            media_host="127.0.0.1",
            media_port_min=0,
            media_port_max=0,
            recordings_dir=Path(tmp) / "recordings",
            database_url=f"sqlite:///{Path(tmp) / 'catalog.db'}",
            web_enabled=True,
            web_host="127.0.0.1",
            web_port=0,
            sip_enabled=False,
        )
        server = Service(settings)
        server.catalog.migrate()
        server.catalog.create_user("admin", password_hash=hash_password(PASSWORD), role="admin")
        await server.start()
        try:
            assert server.web is not None
            ids = await record_samples(server)
            codec = get_codec("PCMA")
            call = PhoneCall(
                "127.0.0.1",
                server.control_port,
                session_id="79999",
                codec="PCMA",
                local_number="3001",
                local_name="Reception",
                remote_number="+4969555010",
                remote_name="Live Caller",
            )
            packets = build_packets(voice(60.0, 8000, 99), codec, ssrc=call.ssrc)
            await call.start()
            streaming = asyncio.create_task(call.send_packets(packets, realtime=True))
            try:
                out.mkdir(parents=True, exist_ok=True)
                # The second newest: a call with names on both sides.
                for path in await shoot(server.web.url, out, chromium, sorted(ids)[1]):
                    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            finally:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
                await call.stop("hangup")
                await call.close()
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="browser"
    )
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        sys.exit(f"no chromium at {args.chromium}: install Debian's chromium or give --chromium")
    asyncio.run(run(args.out.resolve(), args.chromium))


if __name__ == "__main__":
    main()
