"""The second peer: the same load through one rtpengine, recording every call.

rtpengine (Debian's ``rtpengine-daemon``, 10.5) runs in userspace (``--table=-1``: no
kernel module can be loaded in a container), on loopback, driven over its ng control
protocol (bencode over UDP) as a SIP proxy would: per call ``offer`` and ``answer`` (SDP
with the generator's codec), ``start recording``; the generator then streams the same RTP as
for callrec to the port rtpengine gave the caller; ``delete`` at the end. rtpengine relays
each packet to the callee (a socket of ours nobody reads: relaying is its job, so its CPU
includes that send) and records it.

What it records, honestly: **a pcap file per call** (``--recording-method=pcap``), the
received RTP as raw IP packets. **No WAV**: WAV comes from ``rtpengine-recording`` (the
recording daemon), which reads the packets from ``/proc/rtpengine/<table>/calls/...``,
files of the kernel module; without it rtpengine 10.5 refuses the ``proc`` method ("Call
recording through /proc interface requested, but kernel table not open") and the daemon
has nothing to read. So the daemon is not run, and the figures are rtpengine's alone: it
does no decoding and no WAV writing, which callrec and GStreamer do, and never syncs its
files (libpcap's stdio buffer), where callrec pays for its ``sync_mode``.

Measured as the other peers: CPU and RSS of the rtpengine process from /proc over the
steady window (RSS per call: peak less the idle daemon before the first offer), kernel drops
on its caller-facing sockets, loss = sent less the RTP packets in the pcap files, and
``--verify`` files checked: every payload in the pcap must be, byte for byte, the one sent
with that sequence number. Run by itself it runs callrec first, then this peer:

    .venv/bin/python benchmarks/peer_rtpengine.py --calls 200 --seconds 30 [--codec G722]

Needs Debian's rtpengine-daemon: ``make bench-deps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bencode
from peer_common import free_udp_ports, settle

from callrec.codecs import get_codec
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadgen import call_ssrc
from callrec.sim.loadrun import LoadError, LoadOptions, MediaTarget, Progress
from callrec.sim.loadtest import raise_descriptor_limit
from callrec.sim.meters import ProcessMeter
from callrec.sim.report import (
    FileCheck,
    LoadReport,
    RecorderTotals,
    make_report,
    sample_indices,
)
from callrec.sim.senders import run_load
from callrec.sim.spawn import die_with_parent

RTPENGINE = "rtpengine"
NG_TIMEOUT = 10.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
#: rtpengine's media ports, 4 per call (RTP and RTCP, caller and callee side), are taken
#: downwards from the top: ``callrec loadtest --spawn`` servers (ours and, on a shared machine,
#: other people's) hand out 20000-32767, and a port one of them let go still gets its phone's
#: packets for a while. Among the kernel's ephemeral ports rtpengine skips those in use.
PORT_TOP = 65535
PORT_FLOOR = 32768
PORT_SPARE = 1000
#: pcap record header; rtpengine's ``raw`` format is link type 101, an IPv4 packet.
PCAP_RECORD = struct.Struct("<IIII")
LINKTYPE_RAW = 101


# -- the ng protocol -------------------------------------------------------------------------


def ng_encode(cookie: str, message: dict[str, Any]) -> bytes:
    """An ng request: a cookie, a space, the bencoded dictionary."""
    return cookie.encode() + b" " + bencode.bencode(message)


def ng_decode(datagram: bytes) -> tuple[str, dict[str, Any]]:
    """An ng reply: the request's cookie and the dictionary (rtpengine's keys come in any
    order, which strict bencode decoders refuse)."""
    cookie, sep, body = datagram.partition(b" ")
    if not sep:
        raise LoadError(f"not an ng reply: {datagram[:60]!r}")
    reply = bencode.bdecode(body)
    if not isinstance(reply, dict):
        raise LoadError(f"an ng reply that is no dictionary: {reply!r}")
    return cookie.decode(), dict(reply)


class NgClient:
    """Requests one at a time over UDP, each answered before the next (as a proxy would)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect(("127.0.0.1", port))
        self._sock.settimeout(NG_TIMEOUT)
        # rtpengine answers a cookie it has seen with its cached reply: unique per client.
        self._prefix = secrets.token_hex(4)
        self._next = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, message: dict[str, Any], timeout: float = NG_TIMEOUT) -> dict[str, Any]:
        self._next += 1
        cookie = f"{self._prefix}-{self._next}"
        self._sock.settimeout(timeout)
        self._sock.send(ng_encode(cookie, message))
        while True:
            got, reply = ng_decode(self._sock.recv(65535))
            if got == cookie:
                break  # an older request's late answer otherwise
        if reply.get("result") not in ("ok", "pong"):
            raise LoadError(f"rtpengine refused {message.get('command')}: {reply}")
        return reply


# -- SDP -------------------------------------------------------------------------------------


def offer_sdp(codec: str, port: int, session: int) -> str:
    """A phone's audio offer on loopback: one codec, 20 ms, as the generator sends."""
    c = get_codec(codec)
    return (
        f"v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {c.payload_type}\r\n"
        f"a=rtpmap:{c.payload_type} {c.name}/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def sdp_audio_address(sdp: str) -> tuple[str, int]:
    """Where an SDP says its audio goes: the audio section's c= (else the session's) and
    the m=audio port."""
    host = ""
    port = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if port is not None:
                break  # the audio section's own lines end here
            fields = line[2:].split()
            if fields[0] == "audio":
                port = int(fields[1])
        elif line.startswith("c=") and (port is not None or not host):
            host = line.split()[-1]
    if port is None or not host:
        raise LoadError(f"no audio address in the SDP: {sdp!r}")
    return host, port


# -- pcap ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    ssrc: int
    seq: int
    payload_type: int
    payload: bytes


def pcap_rtp(data: bytes) -> Iterator[RtpPacket]:
    """The RTP packets (not RTCP) of a raw-IPv4 pcap file, in the order written."""
    if len(data) < 24:
        return
    magic, link = struct.unpack_from("<I", data)[0], struct.unpack_from("<I", data, 20)[0]
    if magic != 0xA1B2C3D4 or link != LINKTYPE_RAW:
        raise LoadError(f"not a little-endian raw-IP pcap (magic {magic:#x}, link {link})")
    at = 24
    while at + PCAP_RECORD.size <= len(data):
        _, _, size, _ = PCAP_RECORD.unpack_from(data, at)
        packet = data[at + PCAP_RECORD.size : at + PCAP_RECORD.size + size]
        at += PCAP_RECORD.size + size
        if len(packet) < size:
            break  # cut short: the daemon was stopped while writing
        ihl = (packet[0] & 0x0F) * 4
        if packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
            continue
        rtp = packet[ihl + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2 or 200 <= rtp[1] <= 204:
            continue  # not RTP version 2, or RTCP
        csrc = rtp[0] & 0x0F
        head = 12 + 4 * csrc
        if rtp[0] & 0x10 and len(rtp) >= head + 4:
            head += 4 + 4 * struct.unpack_from("!H", rtp, head + 2)[0]
        end = len(rtp) - (rtp[-1] if rtp[0] & 0x20 else 0)
        seq, ssrc = struct.unpack_from("!H", rtp, 2)[0], struct.unpack_from("!I", rtp, 8)[0]
        yield RtpPacket(ssrc, seq, rtp[1] & 0x7F, rtp[head:end])


def check_pcap(
    path: Path, packets: list[RtpPacket], audio: AudioLoop, sent: int, audio_offset: int, call: int
) -> FileCheck:
    """Each recorded payload must be, byte for byte, the one sent with its sequence number
    (packet ``j`` of a call carries loop payload ``audio_offset + j``)."""
    name = str(path)
    if not packets:
        return FileCheck(
            call=call, path=name, ok=False, problem="no RTP in the file", trailing_missing=sent
        )
    lead = next(
        (k for k in range(sent) if audio.payload(audio_offset + k) == packets[0].payload), None
    )
    if lead is None:
        return FileCheck(
            call=call, path=name, ok=False, problem="the first packet is none of those sent"
        )
    first = packets[0].seq
    matched = mismatched = 0
    last = 0
    for p in packets:
        j = lead + (p.seq - first) % 65536
        last = max(last, j)
        if j < sent and audio.payload(audio_offset + j) == p.payload:
            matched += 1
        else:
            mismatched += 1
    return FileCheck(
        call=call,
        path=name,
        ok=not mismatched,
        audio_frames=matched,
        leading_missing=lead,
        trailing_missing=max(0, sent - last - 1),
        mismatched=mismatched,
        problem=f"{mismatched} of {len(packets)} payloads differ from those sent"
        if mismatched
        else "",
    )


# -- the run ---------------------------------------------------------------------------------


def command(ng_port: int, spool: Path, calls: int) -> list[str]:
    return [
        RTPENGINE,
        "--config-file=none",  # not Debian's /etc/rtpengine/rtpengine.conf (kernel table 0)
        "--foreground",
        "--log-stderr",
        "--log-level=5",
        "--table=-1",
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={max(PORT_FLOOR, PORT_TOP - 4 * calls - PORT_SPARE)}",
        f"--port-max={PORT_TOP}",
        f"--recording-dir={spool}",
        "--recording-method=pcap",
        "--recording-format=raw",
        "--delete-delay=0",  # a deleted call's pcap is closed at once, not 30 s later
        # The calls are all set up before the first packet: no timeout meanwhile.
        "--timeout=3600",
        "--silent-timeout=3600",
        "--offer-timeout=3600",
    ]


async def _start(ng_port: int, spool: Path, calls: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as log_fh:
        proc = subprocess.Popen(
            command(ng_port, spool, calls),
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=log_fh,
            preexec_fn=die_with_parent,
        )
    client = NgClient(ng_port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise LoadError(f"rtpengine exited with {proc.returncode}; see {log}")
            with contextlib.suppress(OSError):
                client.request({"command": "ping"}, timeout=0.5)
                return proc
            if time.monotonic() > deadline:
                raise LoadError(f"rtpengine did not answer a ping; see {log}")
            await asyncio.sleep(0.2)
    except BaseException:
        _stop(proc)
        raise
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass(slots=True)
class _Call:
    call_id: str
    port: int
    setup_seconds: float
    delete_seconds: float | None = None


def _set_up(ng: NgClient, codec: str, index: int, caller_port: int, callee_port: int) -> _Call:
    call_id = f"bench-{index:05d}"
    began = time.perf_counter()
    ng.request(
        {
            "command": "offer",
            "call-id": call_id,
            "from-tag": "caller",
            "sdp": offer_sdp(codec, caller_port, index),
        }
    )
    answer = ng.request(
        {
            "command": "answer",
            "call-id": call_id,
            "from-tag": "caller",
            "to-tag": "callee",
            "sdp": offer_sdp(codec, callee_port, index),
        }
    )
    ng.request({"command": "start recording", "call-id": call_id})
    elapsed = time.perf_counter() - began
    _, port = sdp_audio_address(answer["sdp"])  # the answer as the caller gets it
    return _Call(call_id, port, elapsed)


async def run_peer(
    options: LoadOptions,
    *,
    workdir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadReport:
    """Record ``options``' load through one rtpengine; the same report as callrec's."""
    if shutil.which(RTPENGINE) is None:
        raise LoadError(f"{RTPENGINE} is not installed: make bench-deps")
    raise_descriptor_limit(2 * options.calls + 200)
    audio = AudioLoop.for_options(options)
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="callrec-rtpengine-")) if workdir is None else workdir
    spool = root / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    # The callee: one socket nobody reads (its buffer fills, then the kernel drops there).
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    ng_port, caller_port = free_udp_ports(2)
    proc = await _start(ng_port, spool, options.calls, root / "rtpengine.log")
    ng = NgClient(ng_port)
    calls: list[_Call] = []
    notes = [
        "rtpengine in userspace (--table=-1), recording method pcap: it writes the RTP of "
        "each call to a pcap file and decodes nothing; no WAV (the recording daemon needs "
        "the kernel module's /proc/rtpengine), and it relays every packet to the callee",
    ]
    try:
        meter = ProcessMeter.of([proc.pid])
        idle = meter.sample()
        for i in range(options.calls):
            calls.append(_set_up(ng, options.codec, i, caller_port, sink.getsockname()[1]))
        await settle(meter)
        target = MediaTarget(
            host="127.0.0.1",
            ports=[c.port for c in calls],
            meter=ProcessMeter.of([proc.pid]),
            name="rtpengine",
        )
        run = await run_load(options, target, audio=audio, progress=progress)
        for call in calls:
            began = time.perf_counter()
            ng.request({"command": "delete", "call-id": call.call_id, "from-tag": "caller"})
            call.delete_seconds = time.perf_counter() - began
    finally:
        ng.close()
        code = _stop(proc)
        sink.close()
    problems = [f"rtpengine exited with {code}"] if code not in (0, None) else []
    for call, result in zip(calls, run.calls, strict=True):
        # What a proxy waits for: offer + answer + start recording, and the delete (the pcap
        # is closed when it is answered, with --delete-delay=0).
        result.start_seconds = call.setup_seconds
        result.stop_seconds = call.delete_seconds
    recorded: list[list[RtpPacket]] = []
    finalised = foreign = 0
    files = [sorted(spool.glob(f"pcaps/{call.call_id}-*.pcap")) for call in calls]
    for index, paths in enumerate(files):
        packets: list[RtpPacket] = []
        read = 0
        for path in paths:
            with contextlib.suppress(OSError):
                packets += pcap_rtp(path.read_bytes())
                read += 1
        finalised += bool(read)
        ours = call_ssrc(options, index)
        recorded.append([p for p in packets if p.ssrc == ours])
        foreign += len(packets) - len(recorded[-1])
    received = sum(len(p) for p in recorded)
    sent = sum(c.packets_sent for c in run.calls)
    totals = RecorderTotals(
        received=received, recorded=received, lost=sent - received, late=0, finalised=finalised
    )
    checks = [
        check_pcap(
            files[i][0] if files[i] else spool,
            recorded[i],
            audio,
            run.calls[i].packets_sent,
            run.calls[i].audio_offset,
            i,
        )
        for i in sample_indices([c.index for c in run.calls if c.ok], options.verify)
    ]
    report = make_report("rtpengine", run, totals, checks, problems)
    # The baseline of make_report is taken with every call already set up: count from the
    # idle daemon instead, as callrec's is counted from before its first call.
    if report.rss_peak_kib is not None:
        report.rss_before_kib = idle.rss_kib
        report.rss_per_call_kib = (report.rss_peak_kib - idle.rss_kib) / options.calls
    if foreign:
        notes.append(
            f"{foreign} packets of other SSRCs reached rtpengine's ports (another program on "
            "this machine) and are in its pcaps: not counted, and its CPU includes them"
        )
    report.notes += notes
    if owned:
        shutil.rmtree(root, ignore_errors=True)
    return report


def main() -> None:
    import ingest

    ingest.main(peers=("rtpengine",))


if __name__ == "__main__":
    main()
