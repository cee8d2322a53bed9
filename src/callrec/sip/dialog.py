"""SIP dialogs (RFC 3261 section 12), without I/O: identity, sequence numbers, route set.

A :class:`Dialog` is one leg's half of a call as seen from callrec, which is a user agent on
both legs. Its life is a transition table over what happens to the INVITE that made it and
to the BYE that ends it; it builds the in-dialog requests callrec sends (BYE, ACK, INFO, a
relayed re-INVITE) and checks the sequence numbers of those it receives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from callrec.sip.errors import SipProtocolError
from callrec.sip.headers import NameAddr
from callrec.sip.message import SipRequest, SipResponse, with_body
from callrec.sip.peer import Peer


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    PROVISIONAL = "1xx with a To tag"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    BYE = "BYE sent or received"


D, DI = DialogState, DialogInput

DIALOG_TABLE: Final[dict[tuple[DialogState, DialogInput], DialogState]] = {
    (D.EARLY, DI.PROVISIONAL): D.EARLY,
    (D.EARLY, DI.SUCCESS): D.CONFIRMED,
    (D.EARLY, DI.FAILURE): D.TERMINATED,
    (D.EARLY, DI.BYE): D.TERMINATED,
    (D.CONFIRMED, DI.SUCCESS): D.CONFIRMED,
    (D.CONFIRMED, DI.PROVISIONAL): D.CONFIRMED,
    (D.CONFIRMED, DI.BYE): D.TERMINATED,
}

#: Max-Forwards of the requests we originate (RFC 3261 8.1.1.6).
MAX_FORWARDS: Final = 70


@dataclass(eq=False, slots=True, kw_only=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    #: Our address-of-record and the other side's, without tags (From/To of what we send).
    local_uri: NameAddr
    remote_uri: NameAddr
    local_seq: int
    remote_seq: int | None
    #: Where in-dialog requests are addressed (the other side's Contact).
    remote_target: str
    #: Route headers of our in-dialog requests, in order.
    route_set: tuple[str, ...] = ()
    #: Where we send this leg's requests: the address its messages came from.
    peer: Peer
    state: DialogState = DialogState.EARLY
    #: The ACK we sent for the last 2xx to our INVITE, kept for 2xx retransmissions.
    last_ack: SipRequest | None = field(default=None)

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def as_uas(cls, request: SipRequest, *, local_tag: str, peer: Peer) -> Dialog:
        """The dialog an incoming INVITE creates once we answer it with our tag."""
        contact = _contact_uri(request)
        if contact is None:
            raise SipProtocolError("INVITE without a Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag,
            local_uri=request.to.with_tag(None),
            remote_uri=request.from_.with_tag(None),
            local_seq=0,
            remote_seq=request.cseq.number,
            remote_target=contact,
            route_set=tuple(request.header_values("Record-Route")),
            peer=peer,
        )

    @classmethod
    def as_uac(cls, request: SipRequest, *, peer: Peer) -> Dialog:
        """The dialog an INVITE we send will create; the remote tag comes with a response."""
        local_tag = request.from_.tag
        if local_tag is None:
            raise ValueError("our INVITE must carry a From tag")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=None,
            local_uri=request.from_.with_tag(None),
            remote_uri=request.to.with_tag(None),
            local_seq=request.cseq.number,
            remote_seq=None,
            remote_target=request.uri,
            peer=peer,
        )

    # -- state ----------------------------------------------------------------------------

    def _fire(self, inp: DialogInput) -> bool:
        new = DIALOG_TABLE.get((self.state, inp))
        if new is None:
            return False
        self.state = new
        return True

    @property
    def confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def response_received(self, response: SipResponse) -> None:
        """A response to our dialog-creating INVITE (UAC side): learn tag, target, routes."""
        if response.status >= 300:
            self._fire(DI.FAILURE)
            return
        tag = response.to.tag
        if tag is None:
            return  # a 100 Trying, or a broken 1xx: no dialog yet
        if self.state is DialogState.EARLY:
            self.remote_tag = tag
            self.route_set = tuple(reversed(response.header_values("Record-Route")))
        contact = _contact_uri(response)
        if contact is not None:
            self.remote_target = contact
        self._fire(DI.SUCCESS if response.status >= 200 else DI.PROVISIONAL)

    def answered(self) -> None:
        """We sent a 2xx to the INVITE that created this dialog (UAS side)."""
        self._fire(DI.SUCCESS)

    def failed(self) -> None:
        self._fire(DI.FAILURE)

    def bye(self) -> None:
        self._fire(DI.BYE)

    def matches(self, message: SipRequest | SipResponse, *, incoming: bool = True) -> bool:
        """Does this in-dialog message belong here (Call-ID, local and remote tags)?"""
        if message.call_id != self.call_id:
            return False
        ours, theirs = (message.to.tag, message.from_.tag) if incoming else (None, None)
        return ours == self.local_tag and (self.remote_tag is None or theirs == self.remote_tag)

    # -- requests -------------------------------------------------------------------------

    def check_remote_cseq(self, request: SipRequest) -> None:
        """An in-dialog request from the other side: its CSeq must go up (RFC 3261 12.2.2)."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and number <= self.remote_seq:
            raise SipProtocolError(f"CSeq {number} is not above {self.remote_seq}", status=500)
        self.remote_seq = number
        if request.method == "INVITE":
            contact = _contact_uri(request)
            if contact is not None:
                self.remote_target = contact

    def request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        """An in-dialog request; CSeq goes up unless given (ACK and CANCEL reuse one)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        out: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", str(MAX_FORWARDS))]
        out += [("Route", route) for route in self.route_set]
        out += [
            ("From", self.local_uri.with_tag(self.local_tag).serialize()),
            ("To", self.remote_uri.with_tag(self.remote_tag).serialize()),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact is not None:
            out.append(("Contact", contact))
        out += headers
        return SipRequest(
            method=method,
            uri=self.remote_target,
            headers=with_body(out, body, content_type),
            body=body,
        )


def _contact_uri(message: SipRequest | SipResponse) -> str | None:
    values = message.header_values("Contact")
    if not values or values[0] == "*":
        return None
    return NameAddr.parse(values[0]).uri
