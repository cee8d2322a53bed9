"""What the SIP core asks its I/O layer to do: frozen, keyword-only events, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from callrec.sip.message import SipRequest, SipResponse
from callrec.sip.peer import Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    """Send ``message`` to ``peer``."""

    message: SipRequest | SipResponse
    peer: Peer


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaUpdate:
    """Where each side of a call wants its RTP, and the codec the call records with.

    ``caller``/``callee`` are the (ip, port) each side announced (None while unknown or on
    hold with 0.0.0.0). The relay sends what the caller's port receives to ``callee`` and
    the other way round, and latches onto the port the packets really come from.
    """

    call: str
    caller: tuple[str, int] | None
    callee: tuple[str, int] | None
    #: Codec name ("PCMA", "PCMU", "G722") and its payload type on the wire.
    codec: str | None
    payload_type: int | None
    #: Where each side's signalling came from: media from that IP is accepted too (NAT).
    caller_signalling_ip: str = ""
    callee_signalling_ip: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallParty:
    """One side of a call as the catalogue describes it."""

    number: str
    name: str = ""
    #: The local account on that side, if any.
    account: str | None = None
    #: The phone's MAC when its User-Agent names one, else "".
    device: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRecording:
    """Start a new recording of this call (a new file and catalogue row per segment)."""

    call: str
    #: 1 for the first Record on of the call, then 2, 3 ...
    segment: int
    caller: CallParty
    callee: CallParty
    #: ``out`` when the caller is one of our phones, ``in`` when the call came from upstream.
    direction: str
    #: Why: ``info`` (a phone's Record: on) or ``always`` (an account's policy).
    trigger: str
    sip_call_id: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRecording:
    """Finish the call's open recording with this stop reason."""

    call: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """The call is over on both legs: release its media ports."""

    call: str
    reason: str


Action = Transmit | MediaUpdate | StartRecording | StopRecording | CallEnded
