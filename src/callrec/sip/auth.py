"""HTTP digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 8760), both sides, no I/O.

The server side stores no nonces: a nonce is a timestamp and an HMAC of it under a secret of
the running server, so any nonce we issued can be checked, and is refused once older than
``nonce_lifetime`` (then the challenge says ``stale=true`` and the phone retries without
asking its user). Accounts keep only HA1 = H(username:realm:password) for each algorithm, never
the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from callrec.sip.errors import SipProtocolError
from callrec.sip.headers import parse_auth, quote

#: Algorithms we verify, by their name in the challenge. MD5 first: what every phone speaks.
ALGORITHMS: Final = {"MD5": "md5", "SHA-256": "sha256"}
DEFAULT_NONCE_LIFETIME: Final = 300.0


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password): what an account stores instead of its password."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    ha1_hex: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` header (Digest only)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> Credentials:
        scheme = text.strip().split(" ", 1)[0]
        if scheme.lower() != "digest":
            raise SipProtocolError(f"unsupported authentication scheme {scheme[:20]!r}")
        _, values = parse_auth(text)
        try:
            return cls(
                username=values["username"],
                realm=values["realm"],
                nonce=values["nonce"],
                uri=values["uri"],
                response=values["response"].lower(),
                algorithm=values.get("algorithm", "MD5").upper(),
                qop=values.get("qop"),
                nc=values.get("nc", ""),
                cnonce=values.get("cnonce", ""),
                opaque=values.get("opaque"),
            )
        except KeyError as exc:
            raise SipProtocolError(f"digest credentials without {exc.args[0]}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` header, as a client sees it."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, text: str) -> Challenge:
        scheme, values = parse_auth(text)
        if scheme.lower() != "digest" or "nonce" not in values:
            raise SipProtocolError("not a digest challenge")
        return cls(
            realm=values.get("realm", ""),
            nonce=values["nonce"],
            algorithm=values.get("algorithm", "MD5").upper(),
            qop=tuple(q.strip() for q in values.get("qop", "").split(",") if q.strip()),
            opaque=values.get("opaque"),
            stale=values.get("stale", "").lower() == "true",
        )

    def authorize(self, *, username: str, password: str, method: str, uri: str, nc: int = 1) -> str:
        """The header value answering this challenge (client side: our test phones)."""
        if self.algorithm not in ALGORITHMS:
            raise SipProtocolError(f"unsupported digest algorithm {self.algorithm}")
        key = ha1(self.algorithm, username, self.realm, password)
        qop = "auth" if "auth" in self.qop else None
        cnonce = secrets.token_hex(8) if qop else ""
        nc_text = f"{nc:08x}" if qop else ""
        response = digest_response(
            algorithm=self.algorithm,
            ha1_hex=key,
            method=method,
            uri=uri,
            nonce=self.nonce,
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
        )
        parts = [
            f"username={quote(username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(uri)}",
            f"response={quote(response)}",
            f"algorithm={self.algorithm}",
        ]
        if qop:
            parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={quote(cnonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What :meth:`DigestAuthenticator.verify` concluded."""

    ok: bool
    #: The nonce was ours and the response right, but the nonce is too old: challenge again
    #: with ``stale=true``.
    stale: bool = False
    username: str = ""
    reason: str = ""


class DigestAuthenticator:
    """Issues challenges and verifies credentials for one realm."""

    def __init__(
        self,
        realm: str,
        *,
        secret: bytes | None = None,
        nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
    ) -> None:
        self.realm = realm
        self._secret = secret or secrets.token_bytes(32)
        self.nonce_lifetime = nonce_lifetime

    def nonce(self, now: float) -> str:
        stamp = struct.pack("!d", now)
        mac = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp + mac).decode("ascii").rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 24:
            return None
        stamp, mac = raw[:8], raw[8:]
        expected = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        value: float = struct.unpack("!d", stamp)[0]
        return value

    def challenge(self, now: float, *, stale: bool = False, algorithm: str = "MD5") -> str:
        """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value."""
        parts = [
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce(now))}",
            f"algorithm={algorithm}",
            'qop="auth"',
        ]
        if stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    def verify(
        self,
        header: str | None,
        *,
        method: str,
        now: float,
        lookup: Callable[[str, str], str | None],
    ) -> Verdict:
        """Check credentials; ``lookup(username, algorithm)`` returns the account's HA1."""
        if header is None:
            return Verdict(ok=False, reason="no credentials")
        try:
            cred = Credentials.parse(header)
        except SipProtocolError as exc:
            return Verdict(ok=False, reason=str(exc))
        if cred.realm != self.realm:
            return Verdict(ok=False, username=cred.username, reason="credentials for another realm")
        if cred.algorithm not in ALGORITHMS:
            return Verdict(ok=False, username=cred.username, reason="unsupported algorithm")
        issued = self._nonce_time(cred.nonce)
        if issued is None or issued > now + 1:
            return Verdict(ok=False, username=cred.username, reason="not our nonce")
        if cred.qop not in (None, "auth"):
            return Verdict(ok=False, username=cred.username, reason="unsupported qop")
        key = lookup(cred.username, cred.algorithm)
        if key is None:
            return Verdict(ok=False, username=cred.username, reason="unknown user")
        expected = digest_response(
            algorithm=cred.algorithm,
            ha1_hex=key,
            method=method,
            uri=cred.uri,
            nonce=cred.nonce,
            qop=cred.qop,
            nc=cred.nc,
            cnonce=cred.cnonce,
        )
        if not hmac.compare_digest(expected, cred.response):
            return Verdict(ok=False, username=cred.username, reason="wrong password")
        if now - issued > self.nonce_lifetime:
            return Verdict(ok=False, stale=True, username=cred.username, reason="stale nonce")
        return Verdict(ok=True, username=cred.username)
