"""Both directions of a call as one stereo recording plus a mono mix, without I/O.

Each direction is its own RTP stream with its own reorder/loss/timing core
(:class:`callrec.rtp.stream.MediaStream`) and decoder; the two are laid on one time line
(:class:`StereoTimeline`) whose origin is the moment recording started (the ``Record: on``),
so left (caller) and right (callee) stay aligned however the packets arrive:

* a channel starts at the wall-clock offset of its first audio packet (leading silence);
* within a stream, gaps follow RTP timestamps, as in server recording;
* a channel that falls silent (one phone on mute with silence suppression, one-way audio)
  is padded with silence up to ``lag`` seconds behind the clock, so the other channel is
  not held in memory; if the quiet channel then resumes with a gap the stream core also
  saw, the padding already written counts against that gap instead of doubling it.

Frames leave only when both channels have them, interleaved left/right; the mono mix is the
saturating sum of the two, as a phone mixes its own recording.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from callrec.codecs import Codec
from callrec.rtp.counters import StreamCounters
from callrec.rtp.packet import is_rtcp
from callrec.rtp.stream import Audio, MediaStream

#: How far behind the clock a silent channel may fall before it is padded. Larger than the
#: stream core's hold time (0.2 s) plus network jitter, so a late packet is never overtaken.
DEFAULT_LAG: Final = 1.0
CALLER: Final = 0  # left
CALLEE: Final = 1  # right
_SAMPLE = 2  # bytes per int16 sample


class StereoTimeline:
    """Two channels of 16-bit PCM on one clock; pops interleaved stereo and a mono mix."""

    def __init__(self, *, sample_rate: int, origin: float, lag: float = DEFAULT_LAG) -> None:
        self.sample_rate = sample_rate
        self.origin = origin
        self.lag = lag
        self._pending = [bytearray(), bytearray()]
        self._produced = [0, 0]  # samples ever put on each channel
        self._started = [False, False]
        self._credit = [0, 0]  # padding written since the channel's last audio

    def started(self, channel: int) -> bool:
        return self._started[channel]

    def length(self, channel: int) -> int:
        return self._produced[channel]

    def first_audio(self, channel: int, at: float) -> None:
        """The channel's first audio packet arrived at ``at``: it starts at that offset."""
        if self._started[channel]:
            return
        self._started[channel] = True
        target = round((at - self.origin) * self.sample_rate)
        self._pad(channel, target - self._produced[channel])
        self._credit[channel] = 0

    def audio(self, channel: int, pcm: bytes) -> None:
        self._started[channel] = True
        self._credit[channel] = 0
        self._pending[channel] += pcm
        self._produced[channel] += len(pcm) // _SAMPLE

    def silence(self, channel: int, samples: int) -> None:
        """A gap the stream core found; padding already written pays for it first."""
        used = min(self._credit[channel], samples)
        self._credit[channel] -= used
        self._pad(channel, samples - used)

    def keep_up(self, now: float) -> None:
        """Pad channels that fell more than ``lag`` behind the clock."""
        target = round((now - self.lag - self.origin) * self.sample_rate)
        for channel in (CALLER, CALLEE):
            missing = target - self._produced[channel]
            if missing > 0:
                self._pad(channel, missing)
                if self._started[channel]:
                    self._credit[channel] += missing

    def pop(self) -> tuple[bytes, bytes]:
        """(stereo, mono) for every instant both channels have reached."""
        count = min(len(p) for p in self._pending) // _SAMPLE
        return self._take(count)

    def finish(self) -> tuple[bytes, bytes]:
        """Everything, the shorter channel padded with silence to the longer."""
        longest = max(self._produced)
        for channel in (CALLER, CALLEE):
            self._pad(channel, longest - self._produced[channel])
        return self.pop()

    def _pad(self, channel: int, samples: int) -> None:
        if samples > 0:
            self._pending[channel] += bytes(samples * _SAMPLE)
            self._produced[channel] += samples

    def _take(self, count: int) -> tuple[bytes, bytes]:
        if count <= 0:
            return b"", b""
        nbytes = count * _SAMPLE
        left = np.frombuffer(bytes(self._pending[CALLER][:nbytes]), dtype="<i2")
        right = np.frombuffer(bytes(self._pending[CALLEE][:nbytes]), dtype="<i2")
        del self._pending[CALLER][:nbytes]
        del self._pending[CALLEE][:nbytes]
        stereo = np.empty(count * 2, dtype="<i2")
        stereo[0::2] = left
        stereo[1::2] = right
        mix = np.clip(left.astype(np.int32) + right, -32768, 32767).astype("<i2")
        return stereo.tobytes(), mix.tobytes()


class StereoRecorder:
    """Packets of both directions in, stereo and mono PCM out; one per recorded segment."""

    def __init__(
        self,
        *,
        codec: Codec,
        payload_type: int,
        origin: float,
        reorder_window: int = 5,
        max_gap: float = 600.0,
        lag: float = DEFAULT_LAG,
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.streams = [
            MediaStream(
                payload_type=payload_type,
                clock_rate=codec.clock_rate,
                timestamp_units=codec.timestamp_units,
                peer_ip=None,  # the relay already decided whose packets these are
                reorder_window=reorder_window,
                max_gap=max_gap,
                # SIP peers get G.722's RTP clock wrong as phones do.
                other_clock_scale=max(1, codec.sample_rate // codec.clock_rate),
            )
            for _ in (CALLER, CALLEE)
        ]
        self.decoders = [codec.decoder(), codec.decoder()]
        self.timeline = StereoTimeline(sample_rate=codec.sample_rate, origin=origin, lag=lag)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def receive(self, channel: int, data: bytes, now: float) -> None:
        if not self.timeline.started(channel) and self._is_audio(data):
            self.timeline.first_audio(channel, now)
        self.streams[channel].receive(data, "", now)

    def _is_audio(self, data: bytes) -> bool:
        return (
            len(data) > 12
            and data[0] >> 6 == 2
            and not is_rtcp(data)
            and data[1] & 0x7F == self.payload_type
        )

    def pump(self, now: float) -> tuple[bytes, bytes]:
        for channel in (CALLER, CALLEE):
            self.streams[channel].flush(now)
            self._decode(channel)
        self.timeline.keep_up(now)
        return self.timeline.pop()

    def drain(self) -> tuple[bytes, bytes]:
        for channel in (CALLER, CALLEE):
            self.streams[channel].flush(0.0, everything=True)
            self._decode(channel)
        return self.timeline.finish()

    def _decode(self, channel: int) -> None:
        codec = self.codec
        for item in self.streams[channel].pop_output():
            if isinstance(item, Audio):
                self.timeline.audio(channel, self.decoders[channel].decode(item.payload))
            else:
                self.timeline.silence(channel, codec.samples_for_timestamp(item.units))

    def counters(self) -> StreamCounters:
        """Both directions' counters added up (what one catalogue row can hold)."""
        return self.streams[CALLER].counters + self.streams[CALLEE].counters

    def channel_counters(self) -> list[dict[str, int]]:
        return [stream.counters.as_dict() for stream in self.streams]
