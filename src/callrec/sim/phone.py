"""A phone simulator: the client side of the recording protocol.

It behaves like a Fanvil phone set to "record type: Network": one TCP connection per
recording, ``RecordStartRequest`` with the call's numbers and codec, RTP of the phone's mix of
both parties to the ``server:port`` of the answer, ``RecordStopRequest``, then the connection
is closed. It is the demo client (``callrec phone``) and the test client of the server.

Layers, from the bottom:

* :func:`load_audio`, :func:`mix` and :func:`build_packets` are pure: WAV file to PCM, two
  parties to one stream, PCM to RTP packets.
* :class:`PhoneCall` drives one session over real sockets, one step per method, so tests can
  interleave their own misbehaviour (raw control bytes, malformed datagrams, a dropped
  connection).
* whole calls, which never raise on a server's refusal or silence, and ``callrec phone`` are
  in :mod:`callrec.sim.call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import wave
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from callrec.codecs import Codec, Encoder
from callrec.control.connection import START_REQUEST, STOP_REQUEST
from callrec.control.message import ControlMessage
from callrec.exceptions import CallrecError, ControlProtocolError
from callrec.rtp.packet import RtpPacket

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

#: The MAC a Fanvil phone reports in ``device=`` (12 lowercase hex digits).
DEFAULT_DEVICE: Final = "0c383e0e709a"

#: An answer without a terminator is complete once no byte has come for this long. The server
#: writes each answer at once, so on any sane network the rest follows within milliseconds.
ANSWER_IDLE: Final = 0.05
#: Terminators accepted in answers, whatever we sent: liberal in what we accept.
_ANSWER_TERMINATOR: Final = re.compile(rb"\r\n|\n|\0")
#: A server answer longer than this without a terminator is garbage, not a slow answer.
_MAX_ANSWER: Final = 8192
#: In fast mode, hand the loop back after every packet. A server on the same loop (the tests)
#: reads one datagram per loop iteration, so yielding only every 50 packets overflowed its
#: socket buffer (a 300-packet burst lost most of them); one yield per packet costs ~40 us and
#: loses nothing (30 000 packets in 1.3 s on loopback).
FAST_YIELD_EVERY: Final = 1
#: Upper bound on a 32-bit SSRC / timestamp and a 16-bit sequence number.
_U32: Final = 1 << 32
_U16: Final = 1 << 16


class PhoneError(CallrecError):
    """The simulated phone cannot go on: bad input file, no answer, connection lost.

    ``reason`` is a short word, like the server's refusals: ``bad_audio``, ``timeout``,
    ``connection_lost``, ``bad_answer``, ``not_started``, ``bad_server``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- audio ---------------------------------------------------------------------------------


def load_audio(path: Path, sample_rate: int) -> Pcm:
    """Read a PCM WAV file as mono int16 at ``sample_rate``.

    Channels are averaged (a stereo file becomes the mix of its two sides); another sample
    rate is converted by linear interpolation, which is plenty for a test signal or a demo.
    Raises :class:`PhoneError` (reason ``bad_audio``) for anything that is not a PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise PhoneError(f"audio file {path} does not exist", reason="bad_audio") from None
    except (wave.Error, EOFError) as exc:
        raise PhoneError(f"{path} is not a PCM WAV file: {exc}", reason="bad_audio") from None
    except OSError as exc:
        raise PhoneError(f"cannot read audio file {path}: {exc}", reason="bad_audio") from None
    samples = _to_int32(frames, width, path)
    usable = len(samples) - len(samples) % channels
    mono = samples[:usable].reshape(-1, channels).mean(axis=1)
    return resample(mono, rate, sample_rate)


def _to_int32(frames: bytes, width: int, path: Path) -> npt.NDArray[np.int32]:
    """Little-endian PCM samples of any width the wave module reads, scaled to 16 bit."""
    if width == 2:
        return np.frombuffer(frames, dtype="<i2").astype(np.int32)
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.int32) - 128) << 8
    if width == 3:
        raw = np.frombuffer(frames[: len(frames) - len(frames) % 3], dtype=np.uint8)
        triplets = raw.reshape(-1, 3).astype(np.int32)
        value = triplets[:, 0] | triplets[:, 1] << 8 | triplets[:, 2] << 16
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value >> 8
    if width == 4:
        return (np.frombuffer(frames, dtype="<i4") >> 16).astype(np.int32)
    raise PhoneError(f"{path} has {8 * width}-bit samples, not 8/16/24/32", reason="bad_audio")


def resample(samples: npt.ArrayLike, source_rate: int, target_rate: int) -> Pcm:
    """Linear-interpolation resampling to int16 (saturating); length scales with the rates."""
    data = np.asarray(samples, dtype=np.float64)
    if source_rate <= 0 or target_rate <= 0:
        raise PhoneError(
            f"sample rates must be positive ({source_rate} -> {target_rate})", reason="bad_audio"
        )
    if source_rate != target_rate and len(data):
        count = round(len(data) * target_rate / source_rate)
        positions = np.arange(count, dtype=np.float64) * (source_rate / target_rate)
        data = np.interp(positions, np.arange(len(data), dtype=np.float64), data)
    return _saturate(np.rint(data))


def _saturate(data: npt.NDArray[Any]) -> Pcm:
    return np.asarray(np.clip(data, -32768, 32767), dtype=np.int16)


def mix(local: npt.ArrayLike, remote: npt.ArrayLike) -> Pcm:
    """The phone's mix of both parties: the sum, saturated to int16, as long as the longer."""
    a = np.asarray(local, dtype=np.int32)
    b = np.asarray(remote, dtype=np.int32)
    out = np.zeros(max(len(a), len(b)), dtype=np.int32)
    out[: len(a)] += a
    out[: len(b)] += b
    return _saturate(out)


def fit_duration(pcm: npt.ArrayLike, sample_rate: int, seconds: float) -> Pcm:
    """Cut ``pcm`` to ``seconds``, or pad it with silence up to that length."""
    if seconds < 0:
        raise PhoneError(f"duration {seconds} s is negative", reason="bad_audio")
    data = np.asarray(pcm, dtype=np.int16)
    count = round(seconds * sample_rate)
    out = np.zeros(count, dtype=np.int16)
    n = min(count, len(data))
    out[:n] = data[:n]
    return out


# -- RTP -----------------------------------------------------------------------------------


def build_packets(
    pcm: npt.ArrayLike,
    codec: Codec,
    *,
    ssrc: int,
    first_seq: int = 0,
    first_ts: int = 0,
    packet_ms: int | None = None,
) -> list[RtpPacket]:
    """Encode ``pcm`` (int16 at ``codec.sample_rate``) into RTP packets of ``packet_ms``
    (the codec's usual packet, :attr:`~callrec.codecs.Codec.ptime`, unless given).

    One encoder for the whole stream (ADPCM codecs carry state from frame to frame); the last
    partial frame is padded with silence. Sequence numbers and timestamps wrap at 2**16 and
    2**32; the timestamp advances by what the codec says the payload is worth in RTP clock
    units (G.722: 8 kHz clock for 16 kHz audio). The first packet has the marker bit set, as
    phones do at the start of a talkspurt.
    """
    if packet_ms is None:
        packet_ms = codec.ptime
    if packet_ms <= 0:
        raise ValueError(f"packet_ms must be positive, not {packet_ms}")
    frame = codec.sample_rate * packet_ms // 1000
    if frame <= 0:
        raise ValueError(f"{packet_ms} ms is less than one sample at {codec.sample_rate} Hz")
    data = np.asarray(pcm, dtype=np.int16)
    if len(data) % frame:
        data = np.concatenate([data, np.zeros(frame - len(data) % frame, dtype=np.int16)])
    encoder = codec.encoder()
    packets: list[RtpPacket] = []
    seq = first_seq % _U16
    ts = first_ts % _U32
    for payload in _payloads(encoder, codec, data.astype("<i2"), frame):
        packets.append(
            RtpPacket(
                payload_type=codec.payload_type,
                sequence_number=seq,
                timestamp=ts,
                ssrc=ssrc,
                payload=payload,
                marker=not packets,
            )
        )
        seq = (seq + 1) % _U16
        ts = (ts + codec.timestamp_units(len(payload))) % _U32
    return packets


def _payloads(
    encoder: Encoder, codec: Codec, data: npt.NDArray[np.int16], frame: int
) -> Iterator[bytes]:
    count = len(data) // frame
    if count == 0:
        return
    if codec.concatenable:
        # A bit-stream codec's encoder may hold PCM back for a frame of its own (FFmpeg's
        # G.726 takes thousands of samples): code it all, then cut equal payloads.
        encoded = encoder.encode(data.tobytes()) + encoder.flush()
        size = len(encoded) // count
        for i in range(count):
            yield encoded[i * size : (i + 1) * size]
        return
    for i in range(count):
        payload = encoder.encode(data[i * frame : (i + 1) * frame].tobytes())
        yield payload + encoder.flush() if i == count - 1 else payload


# -- one session over real sockets ---------------------------------------------------------


class _SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[phone {self.extra['session_id'] if self.extra else '?'}] {msg}", kwargs


class PhoneCall:
    """One recording session over one TCP connection, like a Fanvil phone makes it.

    Every wait on the server has a timeout (``answer_timeout``). Use as an async context
    manager, or call :meth:`close` in a ``finally``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        session_id: str,
        codec: str,
        device: str = DEFAULT_DEVICE,
        local_number: str = "3001",
        local_name: str = "",
        remote_number: str = "2011",
        remote_name: str = "",
        direction: str = "out",
        terminator: bytes = b"",
        bind_ip: str | None = None,
        extra_fields: dict[str, str] | None = None,
        answer_timeout: float = 5.0,
        ssrc: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.session_id = session_id
        self.codec = codec
        self.device = device
        self.local_number = local_number
        self.local_name = local_name
        self.remote_number = remote_number
        self.remote_name = remote_name
        self.direction = direction
        self.terminator = terminator
        self.bind_ip = bind_ip
        self.extra_fields = dict(extra_fields or {})
        self.answer_timeout = answer_timeout
        self.ssrc = random.getrandbits(32) if ssrc is None else ssrc
        #: Where RTP goes, from the start answer; None until a successful start.
        self.media_server: str | None = None
        self.media_port: int | None = None
        self.packets_sent = 0
        self.log = _SessionLog(logger, {"session_id": session_id})
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: socket.socket | None = None
        self._media_addr: Any = None
        self._rx = bytearray()

    async def __aenter__(self) -> PhoneCall:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def accepted(self) -> bool:
        """The server answered the start request with success and a media address."""
        return self.media_port is not None

    @property
    def control_lost(self) -> bool:
        """The server closed the control connection (or it was never opened)."""
        return self._reader is None or self._reader.at_eof()

    # -- control ---------------------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        """Connect, send the start request and return the answer's fields.

        On ``result=success`` the media address is remembered and the UDP socket opened; a
        refusal is returned as it is (check :attr:`accepted`). Raises :class:`PhoneError` on
        a timeout, a lost connection or an answer that does not parse.
        """
        local_addr = (self.bind_ip, 0) if self.bind_ip else None
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, local_addr=local_addr),
                self.answer_timeout,
            )
        except TimeoutError:
            raise PhoneError(
                f"timeout connecting to {self.host}:{self.port}", reason="timeout"
            ) from None
        except OSError as exc:
            raise PhoneError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}",
                reason="connection_lost",
            ) from None
        self.log.info("connected to %s:%s", self.host, self.port)
        fields: list[tuple[str, str | int]] = [
            ("cmd", START_REQUEST),
            ("id", self.session_id),
            ("device", self.device),
            ("remote_number", self.remote_number),
            ("remote_name", self.remote_name),
            ("local_number", self.local_number),
            ("local_name", self.local_name),
            ("dir", self.direction),
            ("codec", self.codec),
            *self.extra_fields.items(),
        ]
        await self._send_message(fields)
        answer = await self.read_answer(self.answer_timeout)
        if answer.get("result") != "success":
            self.log.info("start refused: %s", answer.get("reason") or "no reason given")
            return answer
        await self._open_media(answer)
        return answer

    async def _open_media(self, answer: dict[str, str]) -> None:
        try:
            port = int(answer.get("port", ""))
            if not 0 < port < _U16:
                raise ValueError
        except ValueError:
            raise PhoneError(
                f"start answer has no usable port: {answer.get('port')!r}", reason="bad_answer"
            ) from None
        # A server that leaves server= empty (or says "any") means "the address you called".
        server = answer.get("server", "").strip()
        if server in ("", "0.0.0.0", "::"):
            server = self.host
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(server, port, type=socket.SOCK_DGRAM), self.answer_timeout
            )
            family, _, proto, _, addr = infos[0]
            udp = socket.socket(family, socket.SOCK_DGRAM, proto)
        except (OSError, TimeoutError, IndexError) as exc:
            raise PhoneError(
                f"cannot reach media address {server}:{port}: {exc}", reason="bad_server"
            ) from None
        try:
            udp.setblocking(False)
            if self.bind_ip:
                udp.bind((self.bind_ip, 0))
        except OSError as exc:
            udp.close()
            raise PhoneError(
                f"cannot bind UDP to {self.bind_ip}: {exc}", reason="bad_server"
            ) from None
        self._udp = udp
        self._media_addr = addr
        self.media_server = server
        self.media_port = port
        self.log.info("start accepted: RTP to %s:%s (ssrc %08x)", server, port, self.ssrc)

    async def stop(self, reason: str = "") -> dict[str, str]:
        """Send the stop request (same id, numbers and names) and return the answer."""
        await self._send_message(
            [
                ("cmd", STOP_REQUEST),
                ("id", self.session_id),
                ("remote_number", self.remote_number),
                ("remote_name", self.remote_name),
                ("local_number", self.local_number),
                ("local_name", self.local_name),
                ("reason", reason),
            ]
        )
        answer = await self.read_answer(self.answer_timeout)
        self.log.info("stopped: %s", answer.get("result", "?"))
        return answer

    async def _send_message(self, fields: list[tuple[str, str | int]]) -> None:
        await self.send_raw_control(ControlMessage.build(*fields).serialize() + self.terminator)

    async def send_raw_control(self, data: bytes) -> None:
        """Write raw bytes on the control connection (tests: garbage, split messages)."""
        if self._writer is None:
            raise PhoneError("the control connection is not open", reason="not_started")
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.answer_timeout)
        except TimeoutError:
            raise PhoneError("timeout writing to the server", reason="timeout") from None
        except OSError as exc:
            raise PhoneError(
                f"control connection lost while sending: {exc}", reason="connection_lost"
            ) from None

    async def read_answer(self, timeout: float) -> dict[str, str]:
        """Read one answer, with or without terminator, and return its fields.

        Bytes are parsed as they come: a terminator (``\\r\\n``, ``\\n`` or ``\\0``, whatever
        we sent) ends a message; an unterminated buffer is a whole message once the server
        has been quiet for :data:`ANSWER_IDLE`, or has closed the connection.
        """
        if self._reader is None:
            raise PhoneError("the control connection is not open", reason="not_started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            match = _ANSWER_TERMINATOR.search(self._rx)
            if match is not None:
                body = bytes(self._rx[: match.start()])
                del self._rx[: match.end()]
                if not body.strip(b" \t\r\n\0"):
                    continue  # an empty line: keep reading
                return self._parse_answer(body)
            if len(self._rx) > _MAX_ANSWER:
                raise PhoneError(
                    f"server answer longer than {_MAX_ANSWER} bytes", reason="bad_answer"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PhoneError(
                    f"timeout: no answer from {self.host}:{self.port} within {timeout:g} s",
                    reason="timeout",
                )
            wait = min(remaining, ANSWER_IDLE) if self._rx else remaining
            try:
                chunk = await asyncio.wait_for(self._reader.read(4096), wait)
            except TimeoutError:
                if self._rx:  # quiet after some bytes: that was the whole answer
                    return self._take_answer()
                continue
            except OSError as exc:
                raise PhoneError(
                    f"control connection lost: {exc}", reason="connection_lost"
                ) from None
            if not chunk:
                if self._rx.strip(b" \t\r\n\0"):
                    return self._take_answer()
                raise PhoneError(
                    "server closed the control connection without answering",
                    reason="connection_lost",
                )
            self._rx += chunk

    def _take_answer(self) -> dict[str, str]:
        body = bytes(self._rx)
        self._rx.clear()
        return self._parse_answer(body)

    def _parse_answer(self, body: bytes) -> dict[str, str]:
        try:
            answer = ControlMessage.parse(body).as_dict()
        except ControlProtocolError as exc:
            raise PhoneError(f"unreadable server answer: {exc}", reason="bad_answer") from None
        self.log.debug("answer %s", answer)
        if answer.get("id", self.session_id) != self.session_id:
            self.log.warning("answer is for id %r, not ours", answer.get("id"))
        return answer

    # -- media -----------------------------------------------------------------------------

    async def send_packets(
        self,
        packets: Sequence[RtpPacket | bytes],
        *,
        realtime: bool,
        packet_ms: int = 20,
        stop_on_hangup: bool = True,
        yield_every: int = FAST_YIELD_EVERY,
    ) -> int:
        """Send datagrams to the media address; returns how many were sent.

        ``realtime`` paces packet ``i`` at ``start + i * packet_ms`` on the loop clock, so a
        late wake-up does not delay everything after it. Otherwise packets go as fast as the
        socket takes them, giving the loop a turn every ``yield_every`` packets. ``bytes``
        items are sent as they are (malformed packets in tests). Like a phone, sending ends
        early when the server closes the control connection, unless ``stop_on_hangup`` is
        False.
        """
        if yield_every < 1:
            raise ValueError(f"yield_every must be at least 1, not {yield_every}")
        if self._udp is None:
            raise PhoneError("no media address: the start was not accepted", reason="not_started")
        loop = asyncio.get_running_loop()
        udp, addr = self._udp, self._media_addr
        interval = packet_ms / 1000
        begin = loop.time()
        sent = 0
        try:
            for i, packet in enumerate(packets):
                if realtime:
                    delay = begin + i * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif i and i % yield_every == 0:
                    await asyncio.sleep(0)
                if stop_on_hangup and self._writer is not None and self.control_lost:
                    self.log.warning("server hung up: media stopped after %d packets", sent)
                    break
                data = packet if isinstance(packet, bytes) else packet.serialize()
                await loop.sock_sendto(udp, data, addr)
                sent += 1
        except OSError as exc:
            raise PhoneError(
                f"cannot send RTP to {self.media_server}:{self.media_port}: {exc}",
                reason="connection_lost",
            ) from None
        finally:
            self.packets_sent += sent
        return sent

    # -- teardown --------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the control connection (politely) and the UDP socket. Never raises."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        self._close_udp()

    async def abort(self) -> None:
        """Drop the control connection without a stop request, like a phone losing its network.

        The UDP socket stays open so a test can go on sending media; :meth:`close` closes it.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.transport.abort()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        self.log.info("control connection dropped")

    def _close_udp(self) -> None:
        udp, self._udp = self._udp, None
        if udp is not None:
            udp.close()
