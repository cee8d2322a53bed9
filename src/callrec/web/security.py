"""Secrets: Argon2 password hashes, random tokens stored as SHA-256, a sign-in throttle.

No I/O here: the caller runs :func:`hash_password` and :func:`verify_password` (tens of
milliseconds of CPU by design) off the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: argon2-cffi's defaults (Argon2id, RFC 9106 low-memory profile: t=3, m=64 MiB, p=4).
_HASHER: Final = PasswordHasher()
#: A hash of a password nobody has, verified for unknown user names so that a failed sign-in
#: takes as long whether or not the name exists.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_urlsafe(16))

MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 1024
#: API tokens start with this, so secret scanners and people can recognise them.
TOKEN_PREFIX: Final = "crt_"


class PasswordPolicyError(ValueError):
    """A password that is too short or too long."""


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """An Argon2id hash (PHC string) of ``password``; checks the length policy first."""
    check_password_policy(password)
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a None hash (unknown user) costs the same and fails."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored for a token or session cookie: SHA-256, hex. (Random 256-bit values
    need no slow hash: there is nothing to guess.)"""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_token() -> tuple[str, str, str]:
    """(token to show once, its digest to store, a short prefix to display)."""
    token = TOKEN_PREFIX + new_secret()
    return token, digest(token), token[: len(TOKEN_PREFIX) + 6]


def new_one_time_password() -> str:
    return secrets.token_urlsafe(12)


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class LoginThrottle:
    """Refuses sign-in attempts after ``limit`` failures within ``window`` seconds for the same
    user name or client address; in memory, so it resets on restart (the audit log keeps
    every failure)."""

    limit: int = 10
    window: float = 300.0

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def blocked(self, username: str, client: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        return any(
            len(self._recent(key, t)) >= self.limit for key in (f"u:{username}", f"c:{client}")
        )

    def failed(self, username: str, client: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        for key in (f"u:{username}", f"c:{client}"):
            self._recent(key, t).append(t)
        if len(self._failures) > 10_000:  # bound memory under a spray of names
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"u:{username}", None)
