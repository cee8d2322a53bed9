"""A SIP call's recording as a source of the engine: a stereo file and its mono mix.

The relay hands every RTP packet of both directions to the :class:`SipSource`; its
:class:`~callrec.sip.recorder.StereoRecorder` lays the two on one time line and returns stereo
(left caller, right callee) and the mix, which the engine writes to the recording's file and to
its companion ``<name>.mix.wav``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

from callrec.codecs import Codec
from callrec.engine import Companion, Recording, RecordingSpec
from callrec.net import DropCounter
from callrec.rtp.counters import StreamCounters
from callrec.sip.events import CallParty, StartRecording
from callrec.sip.recorder import StereoRecorder

#: Suffix of the mono mix written beside each stereo recording.
MIX_SUFFIX: Final = ".mix.wav"
MIX: Final = Companion(suffix=MIX_SUFFIX, channels=1, link=("sip", "mix"))


class SipSource:
    """One recorded segment of a SIP call (each Record on ... off is its own)."""

    def __init__(
        self,
        recorder: StereoRecorder,
        *,
        call: str,
        segment: int,
        media_port: int,
        on_close: Callable[[SipSource], None],
        drops: DropCounter | None = None,
    ) -> None:
        self.recorder = recorder
        #: What the kernel dropped on the relay's RTP sockets during this segment.
        self._drops = drops
        self.call = call
        self.segment = segment
        self._media_port = media_port
        self._on_close = on_close
        self._closed = False
        #: The engine's handle once the recording is open.
        self.recording: Recording[SipSource] | None = None
        #: The open in progress (the engine admits, claims a row, creates the files).
        self.opening: asyncio.Task[None] | None = None
        #: Why the call stopped recording while it was still opening: finished once open.
        self.stop_reason: str | None = None

    @property
    def media_port(self) -> int:
        return self._media_port

    def receive(self, side: int, data: bytes, now: float) -> None:
        if not self._closed:
            self.recorder.receive(side, data, now)

    # -- MediaSource ---------------------------------------------------------------------

    def pump(self, now: float) -> Sequence[bytes]:
        return self.recorder.pump(now)

    def drain(self, now: float) -> Sequence[bytes]:
        if self._drops is not None:
            # Now, while the relay's sockets are open: the call's end may close them before
            # the engine reads the final counters.
            self._drops.count()
        return self.recorder.drain()

    def cut_points(self) -> Sequence[int]:
        return ()

    def counters(self) -> StreamCounters:
        counters = self.recorder.counters()
        if self._drops is not None:
            counters.kernel_dropped += self._drops.count()
        return counters

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)


def recording_spec(event: StartRecording, codec: Codec, media_port: int) -> RecordingSpec:
    """What the engine needs to know of a segment the SIP core asked to record."""
    local, remote = (
        (event.caller, event.callee) if event.direction == "out" else (event.callee, event.caller)
    )
    device = local.device or local.account or ""
    return RecordingSpec(
        source="sip",
        session_id=event.sip_call_id,
        codec=codec,
        device=device,
        direction=event.direction,
        local_number=local.number,
        local_name=local.name,
        remote_number=remote.number,
        remote_name=remote.name,
        peer_address=local.address,
        channels=2,
        name_fields={
            "dir": event.direction,
            "local_number": local.number,
            "remote_number": remote.number,
            "local_name": local.name,
            "remote_name": remote.name,
            "device": device,
            "codec": codec.name,
            "id": f"{event.call}-{event.segment}",
        },
        extra={
            "sip": {
                "call": event.call,
                "segment": event.segment,
                "trigger": event.trigger,
                "left": "caller",
                "right": "callee",
                "caller": _party(event.caller),
                "callee": _party(event.callee),
                **event.extra,
            },
        },
        companions=(MIX,),
    )


def _party(party: CallParty) -> dict[str, Any]:
    return {
        "number": party.number,
        "name": party.name,
        "account": party.account,
        "device": party.device,
        "address": party.address,
    }
