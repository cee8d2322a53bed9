"""SIP accounts (issue 6): the phones that register to callrec, and their recording policy.

The model shares :data:`callrec.catalog.models.Base` with the rest of the catalogue;
migration ``0004`` creates its table. Passwords are never stored: only HA1, the digest of
``username:realm:password`` per algorithm (MD5 and SHA-256), which is all digest
authentication needs and which is useless for any other realm.

:class:`SipAccountStore` holds the queries; it works on a :class:`Catalog`'s connections
(same package, same transaction discipline), so the SIP side needs no engine of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.models import Base, CleanText, UTCDateTime
from callrec.catalog.records import utcnow
from callrec.catalog.store import Catalog
from callrec.exceptions import CatalogError

#: Recording policies (see :mod:`callrec.sip.accounts` for what each means).
SIP_POLICIES: Final = ("never", "on_demand", "always")
#: SIP user names we accept for accounts: what phones put before the @ of their URI.
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_HEX = re.compile(r"[0-9a-f]+")


class SipAccount(Base):
    """One phone account of the SIP registrar."""

    __tablename__ = "sip_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The user part of the phone's SIP URI (its extension number, usually); unique.
    username: Mapped[str] = mapped_column(CleanText(), unique=True)
    #: The digest realm the HA1 values were computed for.
    realm: Mapped[str] = mapped_column(CleanText())
    ha1_md5: Mapped[str | None] = mapped_column(String(32))
    ha1_sha256: Mapped[str | None] = mapped_column(String(64))
    #: never, on_demand or always.
    policy: Mapped[str] = mapped_column(CleanText(), default="on_demand")
    display_name: Mapped[str] = mapped_column(CleanText(), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class SipAccountInfo:
    """One account row as plain values."""

    id: int
    username: str
    realm: str
    ha1_md5: str | None
    ha1_sha256: str | None
    policy: str
    display_name: str
    created_at: datetime
    updated_at: datetime

    @property
    def has_password(self) -> bool:
        return self.ha1_md5 is not None or self.ha1_sha256 is not None


def check_username(username: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise CatalogError(
            f"SIP user name must be 1-64 letters, digits or ._+- (not starting with one of "
            f"those signs), got {username!r}"
        )


def check_sip_policy(policy: str) -> None:
    if policy not in SIP_POLICIES:
        raise CatalogError(f"policy must be one of {', '.join(SIP_POLICIES)}, got {policy!r}")


def _check_hex(name: str, value: str | None, length: int) -> None:
    if value is not None and (len(value) != length or not _HEX.fullmatch(value)):
        raise CatalogError(f"{name} must be {length} lowercase hex digits")


class SipAccountStore:
    """Create, list, change and delete SIP accounts in a catalogue."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def add(
        self,
        username: str,
        *,
        realm: str,
        ha1_md5: str | None,
        ha1_sha256: str | None,
        policy: str = "on_demand",
        display_name: str = "",
    ) -> SipAccountInfo:
        check_username(username)
        check_sip_policy(policy)
        _check_hex("ha1_md5", ha1_md5, 32)
        _check_hex("ha1_sha256", ha1_sha256, 64)
        row = SipAccount(
            username=username,
            realm=realm,
            ha1_md5=ha1_md5,
            ha1_sha256=ha1_sha256,
            policy=policy,
            display_name=display_name,
        )
        with self._catalog.transaction(
            "add a SIP account", write=True, conflict=f"SIP account {username!r} already exists"
        ) as session:
            session.add(row)
            session.flush()
            return _info(row)

    def update(
        self,
        username: str,
        *,
        realm: str | None = None,
        ha1_md5: str | None = None,
        ha1_sha256: str | None = None,
        policy: str | None = None,
        display_name: str | None = None,
    ) -> SipAccountInfo:
        """Change the given fields; a new password comes as realm + both HA1 values."""
        if policy is not None:
            check_sip_policy(policy)
        _check_hex("ha1_md5", ha1_md5, 32)
        _check_hex("ha1_sha256", ha1_sha256, 64)
        with self._catalog.transaction("change a SIP account", write=True) as session:
            row = session.scalars(select(SipAccount).where(SipAccount.username == username)).first()
            if row is None:
                raise CatalogError(f"no SIP account {username!r}")
            if realm is not None:
                row.realm = realm
                row.ha1_md5 = ha1_md5
                row.ha1_sha256 = ha1_sha256
            if policy is not None:
                row.policy = policy
            if display_name is not None:
                row.display_name = display_name
            session.flush()
            return _info(row)

    def get(self, username: str) -> SipAccountInfo | None:
        with self._catalog.transaction("read a SIP account") as session:
            row = session.scalars(select(SipAccount).where(SipAccount.username == username)).first()
            return None if row is None else _info(row)

    def all(self) -> list[SipAccountInfo]:
        with self._catalog.transaction("list SIP accounts") as session:
            rows = session.scalars(select(SipAccount).order_by(SipAccount.username))
            return [_info(row) for row in rows]

    def delete(self, username: str) -> bool:
        """Remove an account; False when there was none."""
        with self._catalog.transaction("delete a SIP account", write=True) as session:
            result = session.execute(delete(SipAccount).where(SipAccount.username == username))
            return bool(getattr(result, "rowcount", 0))


def _info(row: SipAccount) -> SipAccountInfo:
    return SipAccountInfo(
        id=row.id,
        username=row.username,
        realm=row.realm,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        policy=row.policy,
        display_name=row.display_name,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
