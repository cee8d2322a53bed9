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
#: The longest expiry one may ask for, in days (a hundred years: "never" is asked by leaving
#: the expiry out).
MAX_TOKEN_DAYS: Final = 36_500


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
    """Failed sign-ins (and failed password re-entries), counted in a sliding ``window`` of
    seconds; in memory, so it resets on restart (the audit log keeps every failure).

    Three counts, so that one noisy address cannot lock everybody else out:

    * per (client address, user name): ``limit`` failures block that name from that address,
      right password or not, until the oldest of them leaves the window;
    * per existing user name, from any address: ``name_limit`` failures block that name
      everywhere (a guess spread over many addresses);
    * per client address: past ``address_limit`` failures (made-up names, wrong passwords),
      every further *failure* from it is answered 429, but a right password for a name that
      is not itself blocked still signs in. Offices behind one NAT share an address; a
      script spraying made-up names from it must not lock out their users.

    Every wait is in seconds, for a ``Retry-After``; 0 when not blocked.
    """

    limit: int = 10
    name_limit: int = 100
    address_limit: int = 100
    window: float = 300.0

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def _wait(self, key: str, limit: int, now: float) -> float:
        stamps = self._recent(key, now)
        if len(stamps) < limit:
            return 0.0
        # Unblocked when all but limit - 1 of the failures have left the window.
        return max(0.0, stamps[len(stamps) - limit] + self.window - now)

    def wait(self, username: str, client: str, now: float | None = None) -> float:
        """Seconds until ``username`` may try again from ``client`` (0: now); asked before
        the password is checked."""
        t = time.monotonic() if now is None else now
        return max(
            self._wait(f"p:{client}|{username}", self.limit, t),
            self._wait(f"u:{username}", self.name_limit, t),
        )

    def address_wait(self, client: str, now: float | None = None) -> float:
        """Seconds until failures from ``client`` are answered 401 again, not 429; asked
        after a failure, never to refuse a right password."""
        t = time.monotonic() if now is None else now
        return self._wait(f"c:{client}", self.address_limit, t)

    def failed(self, username: str, client: str, *, known: bool, now: float | None = None) -> None:
        """A failure; ``known``: the name exists (only those count towards ``name_limit``,
        so made-up names cost nobody anything)."""
        t = time.monotonic() if now is None else now
        keys = [f"p:{client}|{username}", f"c:{client}"] + ([f"u:{username}"] if known else [])
        for key in keys:
            self._recent(key, t).append(t)
        if len(self._failures) > 10_000:  # bound memory under a spray of names
            for key in [k for k, v in self._failures.items() if not self._recent(k, t)]:
                del self._failures[key]

    def succeeded(self, username: str, client: str) -> None:
        """A right password: that name's failures from that address are forgotten."""
        self._failures.pop(f"p:{client}|{username}", None)
