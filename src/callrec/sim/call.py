"""A whole simulated call, and ``callrec phone``.

:func:`record_call` makes one call with a :class:`~callrec.sim.phone.PhoneCall`: start,
stream the mix, stop, close; it never raises on a server's refusal or silence, the
:class:`PhoneResult` says what happened. :func:`record_local_call` records a call only to
``Record_*.wav`` files, as a phone in mode Local. :func:`run_phone` is the synchronous entry
of ``callrec phone``: it reads the audio files and checks the arguments first.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy.typing as npt

from callrec.codecs import get_codec
from callrec.media.localrecord import (
    DEFAULT_MAX_BYTES,
    LocalRecordError,
    LocalRecordOptions,
    pause_spans,
)
from callrec.media.localrecord import record_packets as record_local
from callrec.sim.phone import (
    _U16,
    DEFAULT_DEVICE,
    PhoneCall,
    PhoneError,
    build_packets,
    fit_duration,
    load_audio,
    mix,
)

#: The control port the public server listened on, and ours by default.
DEFAULT_CONTROL_PORT: Final = 10000
#: Terminators by the names the CLI uses. Real phones send none.
TERMINATORS: Final[dict[str, bytes]] = {"none": b"", "crlf": b"\r\n", "lf": b"\n", "nul": b"\0"}


@dataclass(slots=True, kw_only=True)
class PhoneResult:
    """What happened in one simulated call; printed by ``callrec phone``."""

    #: Fields of the start answer ({} if none came).
    start_answer: dict[str, str]
    #: Fields of the stop answer (None if no stop was sent or it got no answer).
    stop_answer: dict[str, str] | None
    #: Media address from the start answer ("" and 0 if the start was not accepted).
    server: str
    port: int
    packets_sent: int
    #: Wall-clock seconds from connecting to closing.
    duration: float
    #: The start was accepted, all media sent, and the stop answered with success.
    ok: bool
    #: The refusal reason word (``busy``) or what went wrong; None when ok.
    error: str | None
    session_id: str = ""
    codec: str = ""
    #: Phone-local (USB) files written, in order (``--local-record``).
    local_files: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        """A few human-readable lines for the CLI."""
        status = "ok" if self.ok else f"FAILED: {self.error}"
        lines = [
            f"session {self.session_id} ({self.codec}): {status}",
            f"start answer: {self.start_answer}",
            f"stop answer:  {self.stop_answer}",
        ]
        if self.port:
            lines.append(f"media: {self.packets_sent} packets to {self.server}:{self.port}")
        lines.append(f"duration: {self.duration:.2f} s")
        lines += [f"local file: {path}" for path in self.local_files]
        return "\n".join(lines)


def random_session_id() -> str:
    """A numeric id like the ones phones send (``15082``)."""
    return str(random.randint(10000, 99999))


async def record_call(
    host: str,
    port: int,
    *,
    codec: str,
    pcm: npt.ArrayLike,
    realtime: bool = True,
    session_id: str | None = None,
    stop_reason: str = "",
    first_seq: int | None = None,
    first_ts: int | None = None,
    local: LocalRecordOptions | None = None,
    **phone_kwargs: Any,
) -> PhoneResult:
    """Make one whole call: start, stream ``pcm`` (the mix), stop, close.

    A refusal, a silent server or a lost connection gives ``ok=False`` with the reason in
    ``error``; it never raises for the server's behaviour. An unknown ``codec`` name raises
    (from :func:`callrec.codecs.get_codec`) before anything is sent. With ``local``, the
    packets are also recorded to ``Record_*.wav`` files as the phone records to USB, before
    the call and whatever the server does.
    """
    codec_impl = get_codec(codec)
    sid = session_id or random_session_id()
    call = PhoneCall(host, port, session_id=sid, codec=codec_impl.name, **phone_kwargs)
    packets = build_packets(
        pcm,
        codec_impl,
        ssrc=call.ssrc,
        first_seq=random.getrandbits(16) if first_seq is None else first_seq,
        first_ts=random.getrandbits(32) if first_ts is None else first_ts,
    )
    loop = asyncio.get_running_loop()
    local_files: list[Path] = []
    if local is not None:
        local_files = await loop.run_in_executor(None, record_local, packets, codec_impl, local)
    begin = loop.time()
    start_answer: dict[str, str] = {}
    stop_answer: dict[str, str] | None = None
    error: str | None = None
    try:
        start_answer = await call.start()
        if not call.accepted:
            error = start_answer.get("reason") or start_answer.get("result") or "refused"
        else:
            await call.send_packets(packets, realtime=realtime, packet_ms=codec_impl.ptime)
            if call.control_lost:
                error = "connection_lost: the server closed the control connection"
            else:
                stop_answer = await call.stop(stop_reason)
                if stop_answer.get("result") != "success":
                    error = stop_answer.get("reason") or stop_answer.get("result") or "failed"
    except PhoneError as exc:
        call.log.warning("call failed: %s", exc)
        error = str(exc)
    finally:
        await call.close()
    return PhoneResult(
        start_answer=start_answer,
        stop_answer=stop_answer,
        server=call.media_server or "",
        port=call.media_port or 0,
        packets_sent=call.packets_sent,
        duration=loop.time() - begin,
        ok=error is None,
        error=error,
        session_id=sid,
        codec=codec_impl.name,
        local_files=local_files,
    )


def record_local_call(
    *, codec: str, pcm: npt.ArrayLike, local: LocalRecordOptions, session_id: str | None = None
) -> PhoneResult:
    """Record a call only to ``Record_*.wav`` files, as a phone in mode Local: no server."""
    codec_impl = get_codec(codec)
    packets = build_packets(
        pcm,
        codec_impl,
        ssrc=random.getrandbits(32),
        first_seq=random.getrandbits(16),
        first_ts=random.getrandbits(32),
    )
    return PhoneResult(
        start_answer={},
        stop_answer=None,
        server="",
        port=0,
        packets_sent=0,
        duration=0.0,
        ok=True,
        error=None,
        session_id=session_id or random_session_id(),
        codec=codec_impl.name,
        local_files=record_local(packets, codec_impl, local),
    )


def parse_server(server: str, default_port: int = DEFAULT_CONTROL_PORT) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``[V6]:PORT`` -> (host, port)."""
    text = server.strip()
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?", text
    )
    if match is None:
        raise PhoneError(f"server {server!r} is not HOST:PORT", reason="bad_server")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"] or default_port)
    if not 0 < port < _U16:
        raise PhoneError(f"server port {port} out of range", reason="bad_server")
    return host, port


def run_phone(
    server: str,
    *,
    codec: str,
    play: Path,
    play_remote: Path | None = None,
    fast: bool = False,
    duration: float | None = None,
    session_id: str | None = None,
    device: str = DEFAULT_DEVICE,
    local_number: str = "3001",
    local_name: str = "",
    remote_number: str = "2011",
    remote_name: str = "",
    direction: str = "out",
    terminator: str | bytes = "none",
    bind_ip: str | None = None,
    answer_timeout: float = 5.0,
    local_record: Path | None = None,
    local_rtp_headers: bool = True,
    local_max_bytes: int = DEFAULT_MAX_BYTES,
    pause_at: Sequence[float] = (),
    resume_at: Sequence[float] = (),
    local_only: bool = False,
) -> PhoneResult:
    """``callrec phone``: play ``play`` (and ``play_remote`` mixed in) as one recorded call.

    ``duration`` cuts the audio to that many seconds or pads it with silence. Bad arguments
    (server spec, audio file, terminator name, codec) raise :class:`CallrecError` before any
    connection; what the server does is reported in the result.

    ``local_record`` also records the call to ``Record_*.wav`` files in that directory, as the
    phone records to USB: units with RTP headers or bare payloads, a new file past
    ``local_max_bytes``, paused spans (``pause_at[i]`` to ``resume_at[i]`` seconds into the
    call) left out. ``local_only`` records only that way and contacts no server.
    """
    host, port = parse_server(server)
    if isinstance(terminator, str):
        try:
            term = TERMINATORS[terminator.lower()]
        except KeyError:
            names = ", ".join(TERMINATORS)
            raise PhoneError(
                f"terminator {terminator!r} is not one of {names}", reason="bad_server"
            ) from None
    else:
        term = terminator
    codec_impl = get_codec(codec)
    rate = codec_impl.sample_rate
    pcm = load_audio(play, rate)
    if play_remote is not None:
        pcm = mix(pcm, load_audio(play_remote, rate))
    if duration is not None:
        pcm = fit_duration(pcm, rate, duration)
    local: LocalRecordOptions | None = None
    if local_record is not None:
        local = LocalRecordOptions(
            directory=local_record,
            rtp_headers=local_rtp_headers,
            max_bytes=local_max_bytes,
            pauses=pause_spans(pause_at, resume_at),
        )
    elif local_only or pause_at or resume_at:
        raise LocalRecordError("--local-only, --pause-at and --resume-at need --local-record DIR")
    if local_only and local is not None:
        return record_local_call(codec=codec_impl.name, pcm=pcm, local=local, session_id=session_id)
    return asyncio.run(
        record_call(
            host,
            port,
            codec=codec_impl.name,
            pcm=pcm,
            realtime=not fast,
            session_id=session_id,
            device=device,
            local_number=local_number,
            local_name=local_name,
            remote_number=remote_number,
            remote_name=remote_name,
            direction=direction,
            terminator=term,
            bind_ip=bind_ip,
            answer_timeout=answer_timeout,
            local=local,
        )
    )
