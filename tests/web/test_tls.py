"""The web UI over HTTPS of its own (issue 14 item 5): a given certificate, a self-signed one
made once and kept, and clear errors for files that cannot serve."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import shutil
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callrec.config import Settings
from callrec.exceptions import ConfigError
from callrec.web.tls import check_pair, tls_dir
from tests.support.web import USERS, start_site, stop_site


def make_certificate(directory: Path, name: str = "test") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callrec test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def trusting(cert: Path) -> ssl.SSLContext:
    """A client that trusts only ``cert`` and checks the host name against it."""
    return ssl.create_default_context(cafile=str(cert))


async def sign_in(client: httpx.AsyncClient) -> httpx.Response:
    name, password, *_ = USERS["admin"]
    form = await client.get("/login")
    assert form.status_code == 200
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return await client.post("/login", data={"username": name, "password": password, "csrf": csrf})


async def test_the_web_ui_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    site = await start_site(tmp_path, web_tls_cert=str(cert), web_tls_key=str(key))
    try:
        assert site.base.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=site.base, verify=trusting(cert)) as client:
            r = await sign_in(client)
            assert r.status_code == 303
            # Over HTTPS the session cookie is never sent in clear.
            assert "secure" in r.headers["set-cookie"].lower()
            me = await client.get("/api/v1/me")
            assert me.status_code == 200 and me.json()["username"] == "admin"
            assert me.extensions["network_stream"].get_extra_info("ssl_object").version() in (
                "TLSv1.2",
                "TLSv1.3",
            )
        # Plain HTTP on the same port gets no page.
        plain = site.base.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain) as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/login")
        # A client that trusts something else refuses the server.
        other, _ = make_certificate(tmp_path, "other")
        async with httpx.AsyncClient(base_url=site.base, verify=trusting(other)) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get("/login")
    finally:
        await stop_site(site)


async def test_a_self_signed_certificate_is_made_once_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrec.web")
    site = await start_site(tmp_path, web_tls_self_signed=True)
    directory = tls_dir(site.server.settings.recordings_dir)
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(cert.stat().st_mode) == 0o640
        made = x509.load_pem_x509_certificate(cert.read_bytes())
        fingerprint = made.fingerprint(hashes.SHA256()).hex(":").upper()
        assert fingerprint in caplog.text
        sans = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        # A browser told to trust it reaches the server by its address, host name checked.
        async with httpx.AsyncClient(base_url=site.base, verify=trusting(cert)) as client:
            assert (await sign_in(client)).status_code == 303
    finally:
        await stop_site(site)
    pem = cert.read_bytes(), key.read_bytes()
    caplog.clear()
    again = await start_site(tmp_path, users=False, web_tls_self_signed=True)
    try:
        # The same certificate after a restart: what browsers accepted stays accepted.
        assert (cert.read_bytes(), key.read_bytes()) == pem
        assert fingerprint in caplog.text
        async with httpx.AsyncClient(base_url=again.base, verify=trusting(cert)) as client:
            assert (await client.get("/login")).status_code == 200
    finally:
        await stop_site(again)


def test_a_self_signed_certificate_whose_key_is_lost_is_made_anew(tmp_path: Path) -> None:
    from callrec.web.tls import self_signed

    first = self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])
    first.key.unlink()
    second = self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])
    assert second.fingerprint != first.fingerprint
    assert check_pair(second.cert, second.key).fingerprint == second.fingerprint


def test_certificates_that_cannot_serve_stop_the_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path)
    other_cert, other_key = make_certificate(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.crt", key, r"web_tls_cert .*missing.crt: cannot read it: No such"),
        (cert, tmp_path / "missing.key", r"web_tls_key .*missing.key: cannot read it: No such"),
        (garbage, key, r"web_tls_cert .*garbage.pem: not a PEM certificate"),
        (cert, other_key, r"web_tls_key .*other.key is not the private key of web_tls_cert"),
        (cert, garbage, r"web_tls_key .*garbage.pem: not a usable PEM private key"),
    ]
    for cert_path, key_path, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_pair(cert_path, key_path)
    assert check_pair(other_cert, other_key).cert == other_cert
    with pytest.raises(ConfigError, match="web_tls_cert and web_tls_key must be given together"):
        Settings(web_tls_cert=str(cert))


async def test_a_bad_certificate_stops_serve_before_any_port_opens(tmp_path: Path) -> None:
    from callrec.service import Service
    from tests.support.settings import web_settings

    cert, _ = make_certificate(tmp_path)
    _, other_key = make_certificate(tmp_path, "other")
    settings = web_settings(tmp_path, web_tls_cert=str(cert), web_tls_key=str(other_key))
    with pytest.raises(ConfigError, match="is not the private key"):
        Service(settings)


def test_callrec_serve_names_the_bad_setting_and_exits(tmp_path: Path) -> None:
    from tests.support.serve import spawn_serve

    cert, _ = make_certificate(tmp_path)
    log = tmp_path / "serve.log"
    proc = spawn_serve(
        tmp_path,
        log=log,
        web_enabled=True,
        web_host="127.0.0.1",
        web_port=0,
        web_tls_cert=cert,
        web_tls_key=tmp_path / "nowhere.key",
    )
    assert proc.wait(timeout=60) == 2
    text = " ".join(log.read_text().split())
    assert "configuration error: web_tls_key" in text and "cannot read it" in text
    assert "Traceback" not in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
async def test_a_browser_signs_in_over_https(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    site = await start_site(tmp_path, web_tls_self_signed=True)
    try:
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            try:
                # As a user who accepted the self-signed certificate.
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                page.set_default_timeout(15_000)
                await page.goto(f"{site.base}/login")
                name, password, *_ = USERS["admin"]
                await page.fill("input[name=username]", name)
                await page.fill("input[name=password]", password)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{site.base}/recordings**")
                cookies = await context.cookies(site.base)
                assert cookies and all(c["secure"] for c in cookies)
            finally:
                await browser.close()
    finally:
        await stop_site(site)
