"""HTTPS for the web UI without a reverse proxy: a certificate the operator gives
(``web_tls_cert``/``web_tls_key``) or one callrec makes itself (``web_tls_self_signed``).

Both are checked before the port opens, so a missing, unreadable or mismatched file stops the
start with a ConfigError naming the setting, instead of a server that answers no browser. The
self-signed certificate is made once (ECDSA P-256) and kept under
``<recordings_dir>/.callrec/tls/`` (the key 0600), so browsers that were told to trust it keep
trusting it across restarts; its SHA-256 fingerprint is logged at each start so whoever accepts
it in a browser can compare.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from callrec import filemodes
from callrec.config import Settings
from callrec.engine.journalfile import STATE_DIR
from callrec.exceptions import ConfigError

logger = logging.getLogger(__name__)

#: Cipher suites of TLS 1.2 (1.3 has its own, all good): forward secrecy and AEAD only.
#: uvicorn's default, "TLSv1", would also allow CBC suites without forward secrecy.
CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: Days a self-signed certificate is valid: the most some browsers (Apple's) accept at all.
SELF_SIGNED_DAYS: Final = 825
#: A self-signed certificate this close to its end is replaced at start.
RENEW_DAYS: Final = 30
CERT_NAME: Final = "cert.pem"
KEY_NAME: Final = "key.pem"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files the web UI serves HTTPS with, and the certificate's fingerprint."""

    cert: Path
    key: Path
    fingerprint: str


def tls_dir(recordings_dir: Path) -> Path:
    return recordings_dir.resolve() / STATE_DIR / "tls"


def web_tls(settings: Settings) -> TlsFiles | None:
    """The certificate and key of the settings, checked (or made); None for plain HTTP."""
    if settings.web_tls_cert:
        files = check_pair(Path(settings.web_tls_cert), Path(settings.web_tls_key))
        logger.info("web UI certificate %s (SHA-256 %s)", files.cert, files.fingerprint)
        return files
    if settings.web_tls_self_signed:
        files = self_signed(tls_dir(settings.recordings_dir), server_names(settings.web_host))
        logger.warning(
            "web UI serves a self-signed certificate (%s): before accepting it in a browser, "
            "check that it shows SHA-256 fingerprint %s",
            files.cert,
            files.fingerprint,
        )
        return files
    return None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """What a TLS server with these files accepts: TLS 1.2 and newer, strong suites only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.load_cert_chain(files.cert, files.key)
    return context


def check_pair(cert: Path, key: Path) -> TlsFiles:
    """The files exist, are readable PEM, and the key belongs to the certificate."""
    from cryptography import x509  # not in media workers: only the web server needs it

    for name, path in (("web_tls_cert", cert), ("web_tls_key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name} {path}: cannot read it: {exc.strerror}") from exc
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"web_tls_cert {cert}: not a PEM certificate ({exc})") from exc
    files = TlsFiles(cert=cert, key=key, fingerprint=fingerprint(certificate))
    try:
        server_context(files)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"web_tls_key {key} is not the private key of web_tls_cert {cert}"
            ) from exc
        raise ConfigError(
            f"web_tls_key {key}: not a usable PEM private key for {cert} ({exc.reason or exc})"
        ) from exc
    return files


def fingerprint(certificate: object) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    assert isinstance(certificate, x509.Certificate)
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def server_names(host: str) -> list[str]:
    """Names and addresses a browser may reach the web UI by: the bound address (every one
    of this machine's when it binds them all), its host names and localhost."""
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    names += [hostname, socket.getfqdn()]
    if host in ("0.0.0.0", "::", ""):
        try:
            infos = socket.getaddrinfo(hostname, None)
        except OSError:
            infos = []
        names += [str(info[4][0]) for info in infos]
    else:
        names.append(host)
    unique: list[str] = []
    for name in names:
        if name and name not in unique:
            unique.append(name)
    return unique


def self_signed(directory: Path, names: list[str]) -> TlsFiles:
    """The certificate made before in ``directory`` while still good, else a new one for
    ``names``."""
    from cryptography import x509

    cert, key = directory / CERT_NAME, directory / KEY_NAME
    if cert.exists() and key.exists():
        try:
            files = check_pair(cert, key)
            current = x509.load_pem_x509_certificate(cert.read_bytes())
        except ConfigError as exc:
            logger.warning("making a new self-signed certificate: %s", exc)
        else:
            left = current.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
            if left > datetime.timedelta(days=RENEW_DAYS):
                return files
            logger.warning("the self-signed certificate %s ends soon: making a new one", cert)
    return _make_self_signed(directory, names)


def _make_self_signed(directory: Path, names: list[str]) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name.split("%")[0])))
        except ValueError:
            if name.isascii():
                alt.append(x509.DNSName(name))
    common = f"callrec on {socket.gethostname()}"[:64]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    filemodes.make_dirs(directory)
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    # The key first and private: a crash in between leaves a key without certificate,
    # which the next start replaces, never a certificate whose key anyone may read.
    for path, data, private_file in (
        (key, key_pem, True),
        (cert, certificate.public_bytes(serialization.Encoding.PEM), False),
    ):
        temporary = path.with_name(path.name + ".tmp")
        temporary.unlink(missing_ok=True)
        filemodes.write_new(temporary, data, private=private_file)
        temporary.replace(path)
    logger.info("made a self-signed certificate for %s in %s", ", ".join(names), directory)
    return TlsFiles(cert=cert, key=key, fingerprint=fingerprint(certificate))
