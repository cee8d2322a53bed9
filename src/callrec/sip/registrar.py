"""The location service: which contacts each account registered (RFC 3261 section 10.3).

Bindings live in memory only: registrations are soft state that phones refresh every few
minutes, so after a restart a phone is reachable again at its next REGISTER. Each binding
remembers the address its REGISTER came from, and calls to the phone are sent there (the
phone's NAT binding), with the registered contact as Request-URI.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final

from callrec.sip.errors import SipProtocolError
from callrec.sip.headers import NameAddr, SipUri, drop_param
from callrec.sip.message import SipRequest
from callrec.sip.peer import Peer

DEFAULT_EXPIRES: Final = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    aor: str
    #: The Contact URI as the phone registered it.
    contact: str
    peer: Peer
    expires_at: float
    call_id: str
    cseq: int
    #: The user part of the contact callrec registers upstream for it (proxy mode).
    token: str
    user_agent: str = ""

    def expires_in(self, now: float) -> int:
        return max(0, round(self.expires_at - now))


class IntervalTooBrief(SipProtocolError):
    """423: the phone asked for a shorter registration than we keep."""

    def __init__(self, min_expires: int) -> None:
        super().__init__(f"registration shorter than {min_expires} s", status=423)
        self.min_expires = min_expires


def contact_token(aor: str, contact: str) -> str:
    """A stable, opaque user part standing for one phone's contact (proxy mode)."""
    return "cr-" + hashlib.sha256(f"{aor}\n{contact}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactRequest:
    """One Contact of a REGISTER with the expiry it asks for."""

    contact: str
    expires: int


def requested_contacts(
    request: SipRequest, *, default_expires: int = DEFAULT_EXPIRES
) -> tuple[bool, list[ContactRequest]]:
    """(wildcard, contacts) of a REGISTER; a ``*`` needs ``Expires: 0`` and nothing else."""
    values = request.header_values("Contact")
    header_expires = _expires(request.header("Expires"), default_expires)
    if "*" in values:
        if len(values) != 1 or request.header("Expires") is None or header_expires != 0:
            raise SipProtocolError("Contact: * needs Expires: 0 and no other contact")
        return True, []
    out: list[ContactRequest] = []
    for value in values:
        addr = NameAddr.parse(value)
        _check_contact_uri(addr.uri)
        expires = _expires(addr.param("expires"), header_expires)
        out.append(ContactRequest(contact=addr.uri, expires=expires))
    return False, out


def _check_contact_uri(uri: str) -> None:
    """A binding is where calls are sent: it must be a SIP or SIPS URI we can reach (RFC
    4475 unksm2 registers ``<name:John_Smith>``). URI headers are allowed in <> (regescrt)."""
    scheme = uri.partition(":")[0].lower()
    if scheme not in ("sip", "sips"):
        raise SipProtocolError(f"Contact {uri[:40]!r} is not a SIP or SIPS URI")
    parsed = SipUri.parse(uri)
    if not parsed.host:
        raise SipProtocolError(f"Contact {uri[:40]!r} has no host")


def check_register(request: SipRequest) -> None:
    """What a REGISTER must get right before anything else (its credentials included) is
    looked at: a SIP or SIPS address-of-record in To, valid Contacts and expiry values.
    Raises :class:`SipProtocolError` (400)."""
    scheme = request.to.uri.partition(":")[0].lower()
    if scheme not in ("sip", "sips"):
        raise SipProtocolError(f"To {request.to.uri[:40]!r} is not a SIP or SIPS URI")
    requested_contacts(request)


def _expires(text: str | None, default: int) -> int:
    if text is None:
        return default
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise SipProtocolError(f"invalid expires value {text[:20]!r}")
    return int(text)


class Registrar:
    """Bindings by account name, with the expiry rules of one configuration."""

    def __init__(
        self,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = DEFAULT_EXPIRES,
    ) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._bindings: dict[str, list[Binding]] = {}

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, the one expiring last first (a call forks to all)."""
        live = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        if live:
            self._bindings[aor] = live
        else:
            self._bindings.pop(aor, None)
        return sorted(live, key=lambda b: b.expires_at, reverse=True)

    def by_token(self, token: str, now: float) -> Binding | None:
        for aor in list(self._bindings):
            for binding in self.lookup(aor, now):
                if binding.token == token:
                    return binding
        return None

    def has_peer(self, peer: Peer, now: float) -> bool:
        """Is a live binding reached through ``peer`` (a phone's TCP connection)?"""
        return any(
            b.peer == peer and b.expires_at > now for bs in self._bindings.values() for b in bs
        )

    def count(self, now: float) -> int:
        return sum(len(self.lookup(aor, now)) for aor in list(self._bindings))

    def register(self, request: SipRequest, *, aor: str, peer: Peer, now: float) -> list[Binding]:
        """Apply a REGISTER for ``aor`` (already authenticated); return the bindings now.

        Raises :class:`IntervalTooBrief` (423) or :class:`SipProtocolError` (400, or 500
        for a request older than what we hold, RFC 3261 10.3 step 7).
        """
        wildcard, wanted = requested_contacts(request, default_expires=self.default_expires)
        call_id = request.call_id
        cseq = request.cseq.number
        current = self.lookup(aor, now)
        if wildcard:
            for binding in current:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise SipProtocolError("REGISTER out of order", status=500)
            self._bindings.pop(aor, None)
            return []
        for item in wanted:
            if 0 < item.expires < self.min_expires:
                raise IntervalTooBrief(self.min_expires)
        by_contact = {b.contact: b for b in current}
        user_agent = request.header("User-Agent") or ""
        for item in wanted:
            old = by_contact.get(item.contact)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                raise SipProtocolError("REGISTER out of order", status=500)
            if item.expires == 0:
                by_contact.pop(item.contact, None)
                continue
            expires = min(item.expires, self.max_expires)
            by_contact[item.contact] = Binding(
                aor=aor,
                contact=item.contact,
                peer=peer,
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                token=contact_token(aor, item.contact),
                user_agent=user_agent,
            )
        if by_contact:
            self._bindings[aor] = list(by_contact.values())
        else:
            self._bindings.pop(aor, None)
        return self.lookup(aor, now)

    def store(self, binding: Binding) -> None:
        """Put (or replace) one binding: proxy mode learns them from upstream's answers."""
        kept = [b for b in self._bindings.get(binding.aor, []) if b.contact != binding.contact]
        self._bindings[binding.aor] = [*kept, binding]

    def remove(self, aor: str, contact: str) -> None:
        kept = [b for b in self._bindings.get(aor, []) if b.contact != contact]
        if kept:
            self._bindings[aor] = kept
        else:
            self._bindings.pop(aor, None)


def contact_header(binding: Binding, now: float) -> str:
    return f"<{binding.contact}>;expires={binding.expires_in(now)}"


def without_expires(addr: NameAddr) -> NameAddr:
    return replace(addr, params=drop_param(addr.params, "expires"))
