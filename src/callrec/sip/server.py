"""The asyncio layer of the SIP side: sockets, media relay, recording files, catalogue rows.

Protocol decisions live in :class:`callrec.sip.core.SipCore` and
:class:`callrec.sip.recorder.StereoRecorder`; this module only moves datagrams between them
and sockets, and carries out the core's actions. Every socket callback hands its bytes to a
core and then :meth:`SipServer._after` applies what came out and re-arms the one timer.
Catalogue calls run on the recording server's catalogue thread (:meth:`RecordingServer.in_db`),
file closing on the default executor; the loop only relays, decodes and appends.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callrec.catalog import Catalog, NewRecording, SipAccountStore, StreamCounters
from callrec.codecs import get_codec
from callrec.config import Settings
from callrec.exceptions import ConfigError, ResourceError
from callrec.media.naming import FIELDS as NAME_FIELDS
from callrec.media.naming import UnsafePathError, recording_path, unique_path
from callrec.media.wav import WavError, WavInfo, WavWriter, repair_wav
from callrec.server.ports import PortRange
from callrec.sip.accounts import POLICIES, Account
from callrec.sip.core import CoreConfig, SipCore
from callrec.sip.errors import SipProtocolError
from callrec.sip.events import (
    Action,
    CallEnded,
    CallParty,
    MediaUpdate,
    StartRecording,
    StopRecording,
    Transmit,
)
from callrec.sip.headers import split_hostport
from callrec.sip.message import StreamFramer
from callrec.sip.peer import Peer
from callrec.sip.recorder import CALLEE, CALLER, StereoRecorder

if TYPE_CHECKING:
    from callrec.server.app import RecordingServer

logger = logging.getLogger(__name__)

#: Suffix of the mono mix written beside each stereo recording.
MIX_SUFFIX = ".mix.wav"
#: How often (in sync ticks) open recordings' counters are saved to the catalogue.
CHECKPOINT_TICKS = 20
#: Largest SIP message over TCP; UDP datagrams are limited by the socket anyway.
MAX_TCP_MESSAGE = 65536
#: How long stop() waits for BYEs and open recordings to be finished.
SHUTDOWN_GRACE = 2.0

InDb = Callable[..., Awaitable[Any]]


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"[{self.extra['call']}] {msg}", kwargs


@dataclass(eq=False, slots=True, kw_only=True)
class SipRecording:
    """One recorded segment: a stereo file, its mono mix, and (soon) a catalogue row."""

    recorder: StereoRecorder
    writer: WavWriter
    mix: WavWriter
    path: Path
    relpath: str
    mix_path: Path
    mix_relpath: str
    started_mono: float
    created: asyncio.Task[int] | None = None
    finishing: bool = False


#: Socket kinds of a relay side: RTP on an even port, RTCP on the next one.
RTP = 0
RTCP = 1


@dataclass(eq=False, slots=True, kw_only=True)
class CallMedia:
    """The relay of one call: an RTP/RTCP port pair facing each side, and the recording."""

    ref: str
    #: The RTP port facing each side (CALLER, CALLEE); RTCP is on the port after it.
    ports: tuple[int, int]
    #: [side][RTP or RTCP]
    sockets: tuple[tuple[socket.socket, socket.socket], tuple[socket.socket, socket.socket]]
    log: logging.LoggerAdapter[logging.Logger]
    transports: list[list[asyncio.DatagramTransport | None]] = field(
        default_factory=lambda: [[None, None], [None, None]]
    )
    #: [side][kind]: where that side receives: from its SDP, or latched from its packets.
    targets: list[list[tuple[str, int] | None]] = field(
        default_factory=lambda: [[None, None], [None, None]]
    )
    sdp_ips: list[str | None] = field(default_factory=lambda: [None, None])
    signalling_ips: list[str] = field(default_factory=lambda: ["", ""])
    codec: str | None = None
    payload_type: int | None = None
    recording: SipRecording | None = None
    relayed: list[int] = field(default_factory=lambda: [0, 0])
    foreign: list[int] = field(default_factory=lambda: [0, 0])
    closed: bool = False

    def update(self, event: MediaUpdate) -> None:
        for side, announced, sig in (
            (CALLER, event.caller, event.caller_signalling_ip),
            (CALLEE, event.callee, event.callee_signalling_ip),
        ):
            self.signalling_ips[side] = sig
            self.sdp_ips[side] = announced[0] if announced else None
            self.targets[side][RTP] = announced
            # RTCP goes to the port after RTP (RFC 3550 11; a=rtcp is not passed on).
            self.targets[side][RTCP] = (announced[0], announced[1] + 1) if announced else None
        if event.codec is not None:
            self.codec = event.codec
            self.payload_type = event.payload_type

    def received(
        self, side: int, kind: int, data: bytes, addr: tuple[str, int], now: float
    ) -> None:
        """A datagram on the ``kind`` port facing ``side``, from ``addr``."""
        ip = addr[0]
        if ip != self.sdp_ips[side] and ip != self.signalling_ips[side]:
            self.foreign[side] += 1
            return
        if ip != self.sdp_ips[side] or self.targets[side][kind] is None:
            # Behind NAT the SDP names a private address: answer where the packets come from.
            self.targets[side][kind] = addr
        other = 1 - side
        transport, target = self.transports[other][kind], self.targets[other][kind]
        if transport is not None and target is not None:
            transport.sendto(data, target)
            if kind == RTP:
                self.relayed[side] += 1
        rec = self.recording
        if kind == RTP and rec is not None and not rec.finishing:
            rec.recorder.receive(side, data, now)


class _RelayProtocol(asyncio.DatagramProtocol):
    def __init__(
        self, media: CallMedia, side: int, kind: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._media = media
        self._side = side
        self._kind = kind
        self._time = loop.time

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._media.received(
            self._side, self._kind, data, (str(addr[0]), int(addr[1])), self._time()
        )

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that is not listening yet: nothing to do.
        logger.debug("UDP error on relay port: %s", exc)


class _SipDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._server.receive(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error on the SIP port: %s", exc)


class SipServer:
    """The SIP B2BUA of a callrec server: listeners, core, relays, recordings."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog,
        in_db: InDb,
        ports: PortRange,
        root: Path,
    ) -> None:
        check_sip_settings(settings)
        self.settings = settings
        self.catalog = catalog
        self.accounts_store = SipAccountStore(catalog)
        self._in_db = in_db
        self.ports = ports
        self.root = root
        self.core: SipCore | None = None
        self.media: dict[str, CallMedia] = {}
        self._accounts: dict[str, Account] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._addresses: dict[str, str] = {}
        self._closing = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        upstream = await self._resolve_upstream()
        await self.reload_accounts()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _SipDatagramProtocol(self),
            local_addr=(settings.sip_host, settings.sip_port),
        )
        udp_port = int(self._udp.get_extra_info("sockname")[1])
        tcp_port = udp_port
        if settings.sip_tcp:
            try:
                self._tcp_server = await asyncio.start_server(
                    self._serve_tcp, settings.sip_host, udp_port, reuse_address=True
                )
            except OSError:
                if settings.sip_port != 0:
                    self._udp.close()
                    raise
                # Port 0: the UDP port's TCP twin may be taken; any TCP port will do.
                self._tcp_server = await asyncio.start_server(self._serve_tcp, settings.sip_host, 0)
            tcp_port = int(self._tcp_server.sockets[0].getsockname()[1])
        self.core = SipCore(
            CoreConfig(
                ports={"udp": udp_port, "tcp": tcp_port},
                realm=settings.sip_realm,
                upstream=upstream,
                default_policy=settings.sip_default_policy,
                min_expires=settings.sip_min_expires,
                max_expires=settings.sip_max_expires,
            ),
            accounts=self._accounts.get,
            media=self,
            local_address=self._local_address,
            media_address=self._media_address,
        )
        self._tick_task = asyncio.create_task(self._tick_loop(), name="callrec-sip-tick")
        mode = f"outbound proxy for {settings.sip_upstream}" if upstream else "registrar"
        logger.info(
            "SIP %s listening on %s UDP %d%s, %d account(s)",
            mode,
            settings.sip_host,
            udp_port,
            f" and TCP {tcp_port}" if self._tcp_server else "",
            len(self._accounts),
        )

    @property
    def udp_port(self) -> int:
        assert self._udp is not None
        return int(self._udp.get_extra_info("sockname")[1])

    @property
    def tcp_port(self) -> int | None:
        if self._tcp_server is None:
            return None
        return int(self._tcp_server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Hang up every call (BYE both legs), finish every recording (reason shutdown)."""
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        if self.core is not None:
            for ref in list(self.core.calls):
                self.core.end_call(ref, "shutdown", loop.time())
            self._after()
        for media in list(self.media.values()):
            self._spawn(self._finish_recording(media, "shutdown"))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE)
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for media in list(self.media.values()):
            self._close_media(media)
        for writer in list(self._tcp.values()):
            writer.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        for task in list(self._tasks):
            task.cancel()
        logger.info("SIP stopped")

    async def reload_accounts(self) -> None:
        """Re-read the accounts from the catalogue (the CLI changes them from outside)."""
        rows = await self._in_db(self.accounts_store.all)
        self._accounts.clear()
        for row in rows:
            try:
                self._accounts[row.username] = Account(
                    username=row.username,
                    realm=row.realm,
                    ha1_md5=row.ha1_md5,
                    ha1_sha256=row.ha1_sha256,
                    policy=row.policy,
                    display_name=row.display_name,
                )
            except ValueError:
                logger.warning("SIP account %s has an unknown policy %r", row.username, row.policy)

    async def _resolve_upstream(self) -> Peer | None:
        text = self.settings.sip_upstream.strip()
        if not text:
            return None
        transport = "udp"
        if text.lower().startswith(("tcp:", "udp:")):
            transport, text = text[:3].lower(), text[4:]
        host, port = split_hostport(text)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host.strip("[]"), port or 5060, type=socket.SOCK_DGRAM)
        if not infos:
            raise ConfigError(f"sip_upstream {text!r} does not resolve")
        address = str(infos[0][4][0])
        return Peer(transport, address, port or 5060)

    # -- SIP messages --------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer) -> None:
        core = self.core
        if core is None or self._closing:
            return
        try:
            core.receive(data, peer, asyncio.get_running_loop().time())
        except Exception:
            logger.exception("SIP core failed on a message from %s (a bug)", peer)
        self._after()

    def _after(self) -> None:
        core = self.core
        if core is None:
            return
        for action in core.pop_actions():
            try:
                self._apply(action)
            except Exception:
                logger.exception("could not carry out %s (a bug)", type(action).__name__)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = core.next_deadline()
        if deadline is not None and not self._closing:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        core = self.core
        if core is None:
            return
        try:
            core.handle_timers(asyncio.get_running_loop().time())
        except Exception:
            logger.exception("SIP core failed on its timers (a bug)")
        self._after()

    def _apply(self, action: Action) -> None:
        if isinstance(action, Transmit):
            self._send(action.message.serialize(), action.peer)
        elif isinstance(action, MediaUpdate):
            media = self.media.get(action.call)
            if media is not None:
                media.update(action)
        elif isinstance(action, StartRecording):
            self._start_recording(action)
        elif isinstance(action, StopRecording):
            media = self.media.get(action.call)
            if media is not None:
                self._spawn(self._finish_recording(media, action.reason))
        elif isinstance(action, CallEnded):
            media = self.media.get(action.call)
            if media is not None:
                self._spawn(self._end_media(media, action.reason))

    def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, peer.address)
            return
        writer = self._tcp.get(peer.address)
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        self._spawn(self._connect_and_send(data, peer))

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(peer.host, peer.port), timeout=5
            )
        except (OSError, TimeoutError) as exc:
            logger.info("cannot connect to %s: %s", peer, exc)
            return
        writer.write(data)
        self._spawn(self._read_tcp(reader, writer, peer))

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername") or ("?", 0)
        peer = Peer("tcp", str(addr[0]), int(addr[1]))
        await self._read_tcp(reader, writer, peer)

    async def _read_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        self._tcp[peer.address] = writer
        framer = StreamFramer(max_message=MAX_TCP_MESSAGE)
        try:
            while not self._closing:
                data = await reader.read(65536)
                if not data:
                    break
                framer.receive_data(data)
                while (message := framer.next_message()) is not None:
                    self.receive(message, peer)
        except SipProtocolError as exc:
            logger.info("closing SIP/TCP connection from %s: %s", peer, exc)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._tcp.get(peer.address) is writer:
                del self._tcp[peer.address]
            writer.close()

    # -- addresses -----------------------------------------------------------------------

    def _local_address(self, peer: Peer) -> str:
        settings = self.settings
        if settings.sip_advertised_address:
            return settings.sip_advertised_address
        if settings.sip_host not in ("0.0.0.0", "::", ""):
            return settings.sip_host
        return self._route_address(peer.host)

    def _media_address(self, peer: Peer) -> str:
        settings = self.settings
        if settings.sip_advertised_address:
            return settings.sip_advertised_address
        if settings.media_host not in ("0.0.0.0", "::", ""):
            return settings.media_host
        return self._route_address(peer.host)

    def _route_address(self, host: str) -> str:
        """The local address the kernel would use towards ``host`` (no packet is sent)."""
        cached = self._addresses.get(host)
        if cached is not None:
            return cached
        address = "127.0.0.1"
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((host, 9))
                address = str(probe.getsockname()[0])
        except (OSError, ValueError):
            pass
        self._addresses[host] = address
        return address

    # -- media (the core's MediaAllocator) -----------------------------------------------

    def allocate(self, call: str) -> tuple[int, int]:
        """An RTP/RTCP port pair facing each side of a new call; ResourceError('busy')."""
        caller = self.ports.bind_pair()
        try:
            callee = self.ports.bind_pair()
        except ResourceError:
            for sock in caller:
                self.ports.release(int(sock.getsockname()[1]))
                sock.close()
            raise
        ports = (int(caller[0].getsockname()[1]), int(callee[0].getsockname()[1]))
        media = CallMedia(
            ref=call,
            ports=ports,
            sockets=(caller, callee),
            log=_CallLog(logger, {"call": call}),
        )
        self.media[call] = media
        self._spawn(self._open_relay(media))
        return ports

    async def _open_relay(self, media: CallMedia) -> None:
        loop = asyncio.get_running_loop()
        for side in (CALLER, CALLEE):
            for kind in (RTP, RTCP):
                if media.closed:
                    return
                transport, _ = await loop.create_datagram_endpoint(
                    lambda side=side, kind=kind: _RelayProtocol(media, side, kind, loop),  # type: ignore[misc]
                    sock=media.sockets[side][kind],
                )
                if media.closed:
                    transport.close()
                    return
                media.transports[side][kind] = transport

    async def _end_media(self, media: CallMedia, reason: str) -> None:
        await self._finish_recording(media, reason)
        self._close_media(media)

    def _close_media(self, media: CallMedia) -> None:
        if media.closed:
            return
        media.closed = True
        for side in (CALLER, CALLEE):
            for kind in (RTP, RTCP):
                transport = media.transports[side][kind]
                if transport is not None:
                    transport.close()
                else:
                    media.sockets[side][kind].close()
                self.ports.release(media.ports[side] + kind)
        self.media.pop(media.ref, None)
        media.log.info(
            "relay closed: %d packets caller->callee, %d callee->caller, %d foreign",
            media.relayed[CALLER],
            media.relayed[CALLEE],
            sum(media.foreign),
        )

    # -- recordings ----------------------------------------------------------------------

    def _start_recording(self, event: StartRecording) -> None:
        media = self.media.get(event.call)
        if media is None or media.recording is not None:
            return
        if media.codec is None or media.payload_type is None:
            media.log.warning("cannot record: no codec negotiated")
            return
        loop = asyncio.get_running_loop()
        codec = get_codec(media.codec)
        started_at = datetime.now(UTC)
        local, remote = (
            (event.caller, event.callee)
            if event.direction == "out"
            else (event.callee, event.caller)
        )
        fields = {
            "dir": event.direction,
            "local_number": local.number,
            "remote_number": remote.number,
            "local_name": local.name,
            "remote_name": remote.name,
            "device": local.device or local.account or "",
            "codec": codec.name,
            "id": f"{event.call}-{event.segment}",
        }
        try:
            path = unique_path(
                recording_path(
                    self.settings.filename_template,
                    root=self.root,
                    start=started_at.astimezone(),
                    fields={k: fields.get(k, "") for k in NAME_FIELDS},
                )
            )
            writer = _create_writer(path, codec.sample_rate, channels=2)
            path = writer.path
            mix_path = path.with_name(path.stem + MIX_SUFFIX)
            try:
                mix = WavWriter(mix_path, sample_rate=codec.sample_rate, channels=1)
            except BaseException:
                writer.abort()
                path.unlink(missing_ok=True)
                raise
        except (OSError, UnsafePathError, ResourceError) as exc:
            media.log.error("cannot start recording: %s", exc)
            return
        rec = SipRecording(
            recorder=StereoRecorder(
                codec=codec,
                payload_type=media.payload_type,
                origin=loop.time(),
                reorder_window=self.settings.reorder_window,
                max_gap=self.settings.max_gap_seconds,
            ),
            writer=writer,
            mix=mix,
            path=path,
            relpath=path.relative_to(self.root).as_posix(),
            mix_path=mix_path,
            mix_relpath=mix_path.relative_to(self.root).as_posix(),
            started_mono=loop.time(),
        )
        media.recording = rec
        new = NewRecording(
            source="sip",
            session_id=event.sip_call_id,
            device=fields["device"],
            direction=event.direction,
            local_number=local.number,
            local_name=local.name,
            remote_number=remote.number,
            remote_name=remote.name,
            codec=codec.name,
            peer_address=local.address,
            media_port=media.ports[CALLER if local is event.caller else CALLEE],
            start_time=started_at,
            sample_rate=codec.sample_rate,
            channels=2,
            path=rec.relpath,
            extra={
                "sip": {
                    "call": event.call,
                    "segment": event.segment,
                    "trigger": event.trigger,
                    "left": "caller",
                    "right": "callee",
                    "caller": _party(event.caller),
                    "callee": _party(event.callee),
                    "mix": rec.mix_relpath,
                    **event.extra,
                },
                # Files that belong to this row and that start-up recovery repairs with it.
                "companions": [{"path": rec.mix_relpath, "channels": 1}],
            },
        )
        rec.created = asyncio.create_task(self._create_row(new))
        rec.created.add_done_callback(lambda task: self._created(media, rec, task))
        media.log.info(
            "recording segment %d (%s, %s) to %s",
            event.segment,
            event.trigger,
            codec.name,
            rec.relpath,
        )

    async def _create_row(self, new: NewRecording) -> int:
        return int(await self._in_db(self.catalog.create_recording, new))

    def _created(self, media: CallMedia, rec: SipRecording, task: asyncio.Task[int]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        media.log.error("cannot catalogue %s: %s", rec.relpath, task.exception())
        rec.finishing = True
        if media.recording is rec:
            media.recording = None
        rec.writer.abort()
        rec.mix.abort()
        rec.path.unlink(missing_ok=True)
        rec.mix_path.unlink(missing_ok=True)

    async def _finish_recording(self, media: CallMedia, reason: str) -> None:
        rec = media.recording
        if rec is None or rec.finishing:
            return
        rec.finishing = True
        media.recording = None
        loop = asyncio.get_running_loop()
        status = "complete"
        info: WavInfo | None = None
        try:
            stereo, mono = rec.recorder.drain()
            rec.writer.write(stereo)
            rec.mix.write(mono)
            info = await loop.run_in_executor(None, rec.writer.close)
            await loop.run_in_executor(None, rec.mix.close)
        except (OSError, WavError):
            media.log.exception("could not finalise %s; keeping what was written", rec.relpath)
            rec.writer.abort()
            rec.mix.abort()
            reason = "write_error"
            try:
                info = await loop.run_in_executor(None, _repair_pair, rec)
            except (OSError, WavError):
                media.log.exception("could not repair %s", rec.relpath)
                status = "failed"
        if rec.created is None:
            return
        try:
            rec_id = await rec.created
        except Exception:
            return  # _created cleaned up
        counters = StreamCounters(**rec.recorder.counters().as_dict())
        try:
            await self._in_db(
                self.catalog.finish_recording,
                rec_id,
                status=status,
                stop_reason=reason,
                end_time=datetime.now(UTC),
                duration=info.duration if info else rec.writer.duration,
                size_bytes=info.size_bytes if info else 0,
                sha256=info.sha256 if info else None,
                counters=counters,
            )
        except Exception:
            media.log.exception("could not catalogue the end of %s", rec.relpath)
            return
        media.log.info(
            "recording #%d stopped (%s): %.2f s", rec_id, reason, info.duration if info else 0.0
        )

    # -- periodic work -------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.sync_interval
        refresh = self.settings.sip_account_refresh
        next_refresh = loop.time() + refresh
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            ticks += 1
            now = loop.time()
            for media in list(self.media.values()):
                rec = media.recording
                if rec is None or rec.finishing:
                    continue
                try:
                    stereo, mono = rec.recorder.pump(now)
                    rec.writer.write(stereo)
                    rec.mix.write(mono)
                    rec.writer.flush()
                    rec.mix.flush()
                except (OSError, WavError):
                    media.log.exception("write failed; closing the recording")
                    self._spawn(self._finish_recording(media, "error"))
                    continue
                limit = self.settings.max_duration
                if limit and now - rec.started_mono >= limit:
                    self._spawn(self._finish_recording(media, "max_duration"))
            if ticks % CHECKPOINT_TICKS == 0:
                await self._checkpoint()
            if now >= next_refresh:
                next_refresh = now + refresh
                try:
                    await self.reload_accounts()
                except Exception:
                    logger.exception("could not re-read the SIP accounts")

    async def _checkpoint(self) -> None:
        snapshot: dict[int, StreamCounters] = {}
        for media in self.media.values():
            rec = media.recording
            if rec is None or rec.created is None or not rec.created.done():
                continue
            if rec.created.cancelled() or rec.created.exception() is not None:
                continue
            snapshot[rec.created.result()] = StreamCounters(**rec.recorder.counters().as_dict())
        if snapshot:
            try:
                await self._in_db(self.catalog.checkpoint, snapshot)
            except Exception:
                logger.exception("SIP counter checkpoint failed")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _party(party: CallParty) -> dict[str, Any]:
    return {
        "number": party.number,
        "name": party.name,
        "account": party.account,
        "device": party.device,
        "address": party.address,
    }


def _repair_pair(rec: SipRecording) -> WavInfo:
    info = repair_wav(rec.path, sample_rate=rec.recorder.sample_rate, channels=2)
    repair_wav(rec.mix_path, sample_rate=rec.recorder.sample_rate, channels=1)
    return info


def _create_writer(path: Path, sample_rate: int, *, channels: int) -> WavWriter:
    """A writer on a new file; another call may have taken the same name this second."""
    for _ in range(100):
        try:
            return WavWriter(path, sample_rate=sample_rate, channels=channels)
        except FileExistsError:
            path = unique_path(path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceError(f"cannot create {path}: {exc}", reason="disk_full") from exc
            raise
    raise ResourceError(f"cannot find a free file name near {path}", reason="internal")


def check_sip_settings(settings: Settings) -> None:
    """The SIP settings' own checks (they live apart from Settings.__post_init__)."""
    if not 0 <= settings.sip_port <= 65535:
        raise ConfigError(f"sip_port must be a port number (0-65535), got {settings.sip_port}")
    for name in ("sip_host", "sip_advertised_address"):
        value = getattr(settings, name)
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError as exc:
                raise ConfigError(f"{name} must be an IP address, got {value!r}") from exc
    if settings.sip_default_policy not in POLICIES:
        raise ConfigError(
            f"sip_default_policy must be one of {', '.join(POLICIES)}, "
            f"got {settings.sip_default_policy!r}"
        )
    if not 1 <= settings.sip_min_expires <= settings.sip_max_expires:
        raise ConfigError("sip_min_expires must be >= 1 and not above sip_max_expires")
    if settings.sip_account_refresh <= 0:
        raise ConfigError("sip_account_refresh must be > 0")
    if not settings.sip_realm or any(c in settings.sip_realm for c in '"\\\r\n'):
        raise ConfigError("sip_realm must be non-empty, without quotes or backslashes")
    upstream = settings.sip_upstream.strip()
    if upstream:
        text = upstream[4:] if upstream.lower().startswith(("tcp:", "udp:")) else upstream
        try:
            split_hostport(text)
        except SipProtocolError as exc:
            raise ConfigError(f"sip_upstream must be HOST[:PORT], got {upstream!r}") from exc


class SipComponent:
    """``callrec serve``'s SIP front end (registered in :mod:`callrec.server.components`)."""

    def __init__(self, settings: Settings, server: RecordingServer) -> None:
        self.sip = SipServer(
            settings,
            catalog=server.catalog,
            in_db=server.in_db,
            ports=server.ports,
            root=server.root,
        )
        self._started = False

    async def start(self) -> None:
        settings = self.sip.settings
        try:
            await self.sip.start()
        except OSError as exc:
            # The recording server is the primary job: it keeps running without SIP.
            logger.error(
                "SIP disabled: cannot listen on %s port %d: %s",
                settings.sip_host,
                settings.sip_port,
                exc,
            )
            return
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.sip.stop()

    def __repr__(self) -> str:
        return "<SipComponent>"
