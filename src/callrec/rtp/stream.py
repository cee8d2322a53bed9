"""The receiving side of one recorded RTP stream, without I/O.

Datagrams go in with their source address and arrival time; out come, in playback order,
:class:`Audio` payloads of the call's codec and :class:`Silence` spans (in RTP timestamp
units) for what is missing. The recorder decodes the first and writes zeros for the second.

What it repairs, and why:

* Reordering within ``reorder_window`` packets: a packet is held until that many newer ones
  have arrived (or it has waited ``max_hold`` seconds), so a late neighbour can slot in. The
  start of a stream is held the same way, so a first packet that arrives second still opens
  the recording.
* Duplicates are dropped; packets behind the write position are ``late`` and dropped.
* Gaps in the timeline follow RTP timestamps, so a lost packet or a hold becomes silence of
  the right length, but a timestamp that runs more than ``jump_tolerance`` ahead of the
  wall clock is a jump (a buggy or hostile sender), and only the wall-clock time is filled.
  No single gap exceeds ``max_gap``.
* A new SSRC (a phone that re-creates its RTP session after hold/resume) takes over once it
  has sent ``SSRC_PROBATION`` packets in sequence; until then its packets are strays. The
  silence across the switch is the wall-clock time between the two streams.
* Packets of another payload type (telephone-event, comfort noise) and RTCP muxed on the
  port are counted as ``other`` and never written as audio; those of the stream's SSRC still
  hold their sequence numbers, so silence suppression is not counted as loss.
* The RTP clock is checked against what the payloads hold: a G.722 device that stamps 16 kHz
  ticks (RFC 3551 says 8 kHz) is found by timestamp steps of twice the payload's length, and
  the stream is timed by that clock (``clock_changes`` counts each switch).
* A codec with a dynamic payload type (G.726) takes the first dynamic type that carries
  audio-sized payloads, not a telephone-event's 4 bytes, unless audio of the expected type
  (RFC 1890's 2 for G.726) came first.

Nearly every packet of a healthy call is the next one of the current stream, on time, with a
plain 12-byte header: :meth:`MediaStream.receive` takes those through a fast path (one
``struct`` unpack, the payload appended as is) that leaves exactly the state and output the
general path would; anything else takes the general path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from callrec.exceptions import RtpError
from callrec.rtp.counters import StreamCounters
from callrec.rtp.packet import DYNAMIC_PT, HEADER_SIZE, RTP_VERSION, RtpPacket, is_rtcp
from callrec.rtp.sequence import SEQ_MOD, SequenceExtender, seq_delta, ts_delta

#: Packets in sequence a new SSRC must send before it replaces the current one (RFC 3550
#: A.1 uses 2 for a new source; 3 keeps a single stray packet pair from hijacking a call).
SSRC_PROBATION = 3
#: A sequence jump beyond these is a restart of the sender, not loss (RFC 3550 A.1).
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: How far back we remember which packets were written, to tell duplicates from late ones.
_HISTORY_BITS = 256
_HISTORY_MASK = (1 << _HISTORY_BITS) - 1
#: The fixed header alone, as the fast path reads it: first byte, second byte, sequence
#: number, timestamp, SSRC.
_FIXED_HEADER = struct.Struct("!BBHII")
#: First byte of the common packet: version 2, no padding, no extension, no CSRC.
_PLAIN_FIRST_BYTE = RTP_VERSION << 6
#: Consecutive packet pairs whose timestamp step says the other clock before the stream is
#: timed by it: one pair could be a sender's glitch; the start's hold sees several at once.
CLOCK_VOTES = 2
#: Sequence numbers of comfort noise and events kept to fill holes with (a few per silence).
_MAX_FILLERS = 64
#: Larger than any RFC 4733 event payload with a little redundancy: a dynamic payload type
#: carrying more than this is audio.
_EVENT_PAYLOAD_MAX = 16


@dataclass(frozen=True, slots=True)
class Audio:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Silence:
    units: int  # RTP timestamp units


Output = Audio | Silence
#: What :meth:`MediaStream.pop_pieces` returns: audio as the bare payload ``bytes``.
Piece = bytes | Silence

#: A packet waiting in the reorder buffer or on SSRC probation: (packet, arrival time).
_Held = tuple[RtpPacket, float]


class MediaStream:
    """Reorders, de-duplicates and times one call's RTP stream."""

    def __init__(
        self,
        *,
        payload_type: int,
        clock_rate: int,
        timestamp_units: Callable[[int], int],
        peer_ip: str | None,
        accept_foreign: bool = False,
        reorder_window: int = 5,
        max_hold: float = 0.2,
        max_gap: float = 600.0,
        jump_tolerance: float = 2.0,
        dynamic_payload_type: bool = False,
        other_clock_scale: int = 1,
    ) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._nominal_units = timestamp_units
        self.peer_ip = peer_ip
        self.accept_foreign = accept_foreign
        self.reorder_window = reorder_window
        self.max_hold = max_hold
        self.max_gap_units = int(max_gap * clock_rate)
        self.jump_tolerance_units = int(jump_tolerance * clock_rate)
        self.counters = StreamCounters()

        self._ssrc: int | None = None
        self._ext = SequenceExtender()
        self._held: dict[int, _Held] = {}
        self._next: int | None = None  # extended index of the next packet to write
        self._history = 0  # bit i: packet _next-1-i was written
        self._bad_seq: int | None = None
        self._candidate: list[_Held] = []
        # Timeline of what has been written so far.
        self._ts_end: int | None = None  # RTP timestamp just after the last written audio
        self._last_arrival: float | None = None
        self._last_accepted: float | None = None  # general path; the fast path sets the above
        self._last_units = 0  # timestamp units of the last written packet
        self._missing = 0  # packets given up as lost since the last written one
        self._output: list[Piece] = []
        # The fast path's second bytes: the payload type with and without the marker bit
        # (-1 where that byte would be RTCP's, which the general path sorts out).
        self._plain_second = payload_type if not 192 <= payload_type <= 223 else -1
        marked = payload_type | 0x80
        self._marked_second = marked if not 192 <= marked <= 223 else -1
        self._units_len = -1  # payload length whose timestamp units are cached below
        self._units_val = 0
        #: RTP ticks per nominal timestamp unit: 1, or the clock the sender was found to use.
        self._scale = 1
        self._other_scale = other_clock_scale
        self._clock_check = other_clock_scale != 1  # a codec whose clock devices get wrong
        self._clock_votes = 0
        #: Still looking for the payload type of a codec that has no static one.
        self._dynamic = dynamic_payload_type
        #: Indexes taken by comfort noise or events of the stream: holes that are not loss.
        self._fillers: set[int] = set()
        #: Packets taken into the stream to be written (not dropped as late, duplicate,
        #: foreign...): what tells its caller a datagram was the call's audio.
        self.accepted = 0

    def _units(self, payload_len: int) -> int:
        """RTP ticks of a payload, by the clock the sender uses."""
        return self._nominal_units(payload_len) * self._scale

    def _set_payload_type(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self._plain_second = payload_type if not 192 <= payload_type <= 223 else -1
        marked = payload_type | 0x80
        self._marked_second = marked if not 192 <= marked <= 223 else -1

    # -- input ---------------------------------------------------------------------------

    def receive(self, data: bytes, source_ip: str, now: float) -> None:
        c = self.counters
        c.received += 1
        if not self.accept_foreign and self.peer_ip is not None and source_ip != self.peer_ip:
            c.foreign += 1
            return
        nxt = self._next
        if (
            nxt is not None
            and len(data) > HEADER_SIZE
            and not self._held
            and not self._candidate
            and self._ext.highest == nxt - 1
        ):
            # The fast path: the next packet of the current stream, in order and on time
            # (its timestamp is where the last one ended, so no silence), with nothing held.
            # It does exactly what the general path would, without building an RtpPacket.
            first, second, seq, ts, ssrc = _FIXED_HEADER.unpack_from(data)
            if (
                first == _PLAIN_FIRST_BYTE
                and (second == self._plain_second or second == self._marked_second)
                and ssrc == self._ssrc
                and seq == nxt & 0xFFFF
                and ts == self._ts_end
            ):
                payload = data[HEADER_SIZE:]
                size = len(payload)
                if size == self._units_len:
                    units = self._units_val
                else:
                    units = self._units(size)
                    self._units_len = size
                    self._units_val = units
                self._ext.highest = nxt
                self.accepted += 1
                self._next = nxt + 1
                self._history = ((self._history << 1) | 1) & _HISTORY_MASK
                self._bad_seq = None
                self._output.append(payload)
                self._ts_end = (ts + units) & 0xFFFFFFFF
                self._last_arrival = now
                self._last_units = units
                self._missing = 0
                return
        if is_rtcp(data):
            c.other += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            c.malformed += 1
            return
        if packet.payload_type != self.payload_type:
            if (
                self._dynamic
                and packet.payload_type in DYNAMIC_PT
                and len(packet.payload) > _EVENT_PAYLOAD_MAX
            ):
                self._set_payload_type(packet.payload_type)
                self._dynamic = False
            else:
                c.other += 1
                if packet.ssrc == self._ssrc and not self._candidate:
                    self._fill(packet)
                return
        if not packet.payload:
            c.malformed += 1
            return
        # Audio of the expected type settles it: a later dynamic type is not the codec's.
        self._dynamic = False
        if self._ssrc is None:
            self._ssrc = packet.ssrc
        if packet.ssrc != self._ssrc:
            self._probation(packet, now)
            return
        if self._candidate:
            # The current stream is still alive: the newcomer was a stray.
            c.foreign += len(self._candidate)
            self._candidate.clear()
        self._accept(packet, now)

    def _probation(self, packet: RtpPacket, now: float) -> None:
        cand = self._candidate
        if cand and (
            cand[-1][0].ssrc != packet.ssrc
            or seq_delta(packet.sequence_number, cand[-1][0].sequence_number) != 1
        ):
            self.counters.foreign += len(cand)
            cand.clear()
        cand.append((packet, now))
        if len(cand) < SSRC_PROBATION:
            return
        # Switch: write out what the old stream left, then time the new one by the wall clock.
        self._release(force_all=True)
        self.counters.ssrc_changes += 1
        self._ssrc = packet.ssrc
        self._ext.reset()
        self._fillers.clear()  # the old stream's sequence numbers
        self._clock_votes = 0
        self._next = None
        self._history = 0
        self._bad_seq = None
        self._ts_end = None
        taken = list(cand)
        cand.clear()
        for held_packet, arrival in taken:
            self._accept(held_packet, arrival)

    def _fill(self, packet: RtpPacket) -> None:
        """Comfort noise or an event of the current stream: its sequence number is no hole
        (no loss), and it writes nothing; the next audio's timestamp says how long it was.
        It only ever fills a hole: it never makes the stream skip ahead to it."""
        index = self._ext.extend(packet.sequence_number)
        nxt = self._next
        if nxt is not None and not 0 <= index - nxt <= MAX_DROPOUT:
            return
        fillers = self._fillers
        fillers.add(index)
        if len(fillers) > _MAX_FILLERS:
            # Those the stream has passed; a sender of nothing but events keeps the newest.
            keep = sorted(i for i in fillers if nxt is None or i >= nxt)[-_MAX_FILLERS // 2 :]
            fillers.clear()
            fillers.update(keep)
        if self._held:
            self._release()

    def _accept(self, packet: RtpPacket, now: float) -> None:
        c = self.counters
        index = self._ext.extend(packet.sequence_number)
        if self._next is not None:
            delta = index - self._next
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                # Either a sender restart or a wild packet: believe it once the next one
                # follows.
                if self._bad_seq is not None and packet.sequence_number == self._bad_seq:
                    self._release(force_all=True)
                    self._ext.reset()
                    self._fillers.clear()
                    index = self._ext.extend(packet.sequence_number)
                    self._next = index
                    self._history = 0
                    self._bad_seq = None
                else:
                    self._bad_seq = (packet.sequence_number + 1) % SEQ_MOD
                    c.foreign += 1  # not (yet) part of the stream we are writing
                    return
            self._bad_seq = None
            if index < self._next:
                back = self._next - 1 - index
                if back < _HISTORY_BITS and (self._history >> back) & 1:
                    c.duplicate += 1
                else:
                    c.late += 1
                return
        if index in self._held:
            c.duplicate += 1
            return
        self._held[index] = (packet, now)
        self.accepted += 1
        self._last_accepted = now
        if self._clock_check and packet.payload_type == self.payload_type:
            self._observe_clock(index, packet)
        self._release()

    def _observe_clock(self, index: int, packet: RtpPacket) -> None:
        """Weigh the timestamp steps to this packet's neighbours in sequence against the
        ticks their payloads hold; switch to the other clock once it fits repeatedly."""
        held = self._held
        before = held.get(index - 1)
        after = held.get(index + 1)
        pairs = []
        if before is not None:
            pairs.append((before[0], packet))
        if after is not None:
            pairs.append((packet, after[0]))
        for first, second in pairs:
            if first.payload_type != self.payload_type or second.payload_type != first.payload_type:
                continue
            step = ts_delta(second.timestamp, first.timestamp)
            units = self._nominal_units(len(first.payload))
            if step == units * self._scale:
                self._clock_votes = 0
            elif step == units * self._other_scale:
                self._clock_votes += 1
                if self._clock_votes >= CLOCK_VOTES:
                    self._switch_clock()

    def _switch_clock(self) -> None:
        old, new = self._scale, self._other_scale
        self._scale, self._other_scale = new, old
        self._clock_votes = 0
        self._units_len = -1
        self.counters.clock_changes += 1
        if self._ts_end is not None:
            # Re-time the end of what was written by the clock the sender uses.
            last_ts = (self._ts_end - self._last_units) & 0xFFFFFFFF
            self._last_units = self._last_units // old * new
            self._ts_end = (last_ts + self._last_units) & 0xFFFFFFFF

    # -- output --------------------------------------------------------------------------

    def flush(self, now: float, *, everything: bool = False) -> None:
        """Write out packets that waited long enough (or all of them, at the end)."""
        if everything:
            self._release(force_all=True)
            if self._candidate:
                self.counters.foreign += len(self._candidate)
                self._candidate.clear()
            return
        while self._held and min(h[1] for h in self._held.values()) + self.max_hold <= now:
            if self._next is None:
                self._next = min(self._held)  # the start waited long enough
            self._skip_to(min(self._held))
            self._release()

    def pop_output(self) -> list[Output]:
        """What was released since the last call, in playback order."""
        out, self._output = self._output, []
        return [Audio(o) if isinstance(o, bytes) else o for o in out]

    def pop_pieces(self) -> list[Piece]:
        """The same as :meth:`pop_output`, with each payload as bare ``bytes`` instead of an
        :class:`Audio` (no object per packet: what the recorder joins and decodes at once)."""
        out, self._output = self._output, []
        return out

    @property
    def last_audio_at(self) -> float | None:
        """When the stream's last audio packet arrived (None: none yet)."""
        a, b = self._last_arrival, self._last_accepted
        return b if a is None else a if b is None else max(a, b)

    @property
    def held(self) -> int:
        return len(self._held)

    def _skip_to(self, index: int) -> None:
        assert self._next is not None
        distance = index - self._next
        if distance <= 0:
            return
        lost = distance
        if self._fillers:
            passed = {i for i in self._fillers if i < index}
            self._fillers -= passed
            lost -= sum(1 for i in passed if i >= self._next)
        self.counters.lost += lost
        self._missing += lost
        self._history = (self._history << distance) & _HISTORY_MASK
        self._next = index

    def _release(self, *, force_all: bool = False) -> None:
        held = self._held
        if self._next is None:
            # The start of a stream waits like any gap, so a first packet that came second
            # (or the clock's evidence) is in before anything is written.
            if not held or (not force_all and len(held) <= self.reorder_window):
                return
            self._next = min(held)
        fillers = self._fillers
        while held:
            item = held.pop(self._next, None)
            if item is None:
                if fillers and self._next in fillers:
                    fillers.discard(self._next)
                    self._next += 1
                    self._history = ((self._history << 1) | 1) & _HISTORY_MASK
                    continue
                if not force_all and len(held) <= self.reorder_window:
                    return
                self._skip_to(min(held))
                continue
            self._write(item)
            self._next += 1
            self._history = ((self._history << 1) | 1) & _HISTORY_MASK

    def _write(self, item: _Held) -> None:
        packet, arrival = item
        units = self._units(len(packet.payload))
        scale = self._scale
        if self._last_arrival is not None:
            wall = max(0, round((arrival - self._last_arrival) * self.clock_rate * scale) - units)
            if self._ts_end is None:
                gap = wall  # first packet of a new SSRC: only the wall clock relates them
            else:
                gap = ts_delta(packet.timestamp, self._ts_end)
                # Lost packets account for their own time, even when they were read in a
                # burst after a stall (arrival times then say nothing); what neither the
                # lost packets nor the wall clock explain is a timestamp jump.
                lost_units = self._missing * self._last_units
                tolerance = self.jump_tolerance_units * scale
                if gap > wall + tolerance and gap > lost_units + tolerance:
                    gap = max(wall, lost_units)
            gap = min(gap, self.max_gap_units * scale) // scale
            if gap > 0:
                self._output.append(Silence(gap))
        self._output.append(packet.payload)
        self._ts_end = (packet.timestamp + units) & 0xFFFFFFFF
        self._last_arrival = arrival
        self._last_units = units
        self._missing = 0
