"""The asyncio layer of the SIP side: sockets, the core's actions, relays and recordings.

Protocol decisions live in :class:`callrec.sip.core.SipCore`; this module only moves datagrams
between it and sockets and carries out its actions. Every socket callback hands its bytes to
the core and then :meth:`SipServer._after` applies what came out and re-arms the one timer.
Media is relayed by :mod:`callrec.sip.relay`; a recording is a source of the recording engine
(:mod:`callrec.sip.recording`), which admits it like any other call (``busy``, disk reserve),
writes and flushes it off the event loop, and catalogues it in batches. The core hears back
whether a recording started (:meth:`SipCore.recording_started` / ``recording_refused``), so
it answers ``INFO Record: on`` only then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable
from typing import Any, Final

from callrec.access import AllowList, RefusalLog
from callrec.catalog import Catalog, SipAccountStore
from callrec.codecs import get_codec
from callrec.config import Settings
from callrec.engine import PortRange, RecordingEngine
from callrec.engine.spec import HANGUP, STOP_REASONS
from callrec.exceptions import CallrecError, CatalogError, ConfigError
from callrec.net import DropCounter, new_socket, plain_ip, plain_sockaddr, sendable
from callrec.sip.accounts import POLICIES, Account
from callrec.sip.core import CoreConfig, SipCore
from callrec.sip.errors import SipProtocolError
from callrec.sip.events import (
    Action,
    CallEnded,
    MediaUpdate,
    StartRecording,
    StopRecording,
    Transmit,
)
from callrec.sip.headers import split_hostport
from callrec.sip.limits import RateLimiter, Verdict
from callrec.sip.message import StreamFramer
from callrec.sip.peer import Peer
from callrec.sip.recorder import CALLEE, CALLER, StereoRecorder
from callrec.sip.recording import SipSource, recording_spec
from callrec.sip.relay import RTP, CallMedia, Relays

logger = logging.getLogger(__name__)

#: Seconds the start waits for the SIP accounts before it listens without them.
ACCOUNTS_START_WAIT: Final = 5.0

#: Largest SIP message over TCP; UDP datagrams are limited by the socket anyway.
MAX_TCP_MESSAGE: Final = 65536
#: Retry-After of the 503 to a source over sip_max_requests_per_source, in seconds.
RATE_RETRY_AFTER: Final = 5
#: How long stop() waits for BYEs and open recordings to be finished.
SHUTDOWN_GRACE: Final = 2.0


class _SipDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # On "::" an IPv4 phone is ::ffff:a.b.c.d: the core (Via, Contact, SDP checks, the
        # recording's addresses) sees it as a.b.c.d, the one spelling of its RTP's source.
        host, port = plain_sockaddr(addr)
        self._server.receive(data, Peer("udp", host, port))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP error on the SIP port: %s", exc)


class SipServer:
    """The SIP B2BUA of a callrec server: listeners, core, relays, recordings."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: RecordingEngine,
        ports: PortRange,
        catalog: Catalog,
    ) -> None:
        check_sip_settings(settings)
        self.settings = settings
        self.engine = engine
        #: Read for the accounts (the CLI changes them from outside).
        self.accounts_store = SipAccountStore(catalog)
        self.relays = Relays(ports)
        self.core: SipCore | None = None
        self._accounts: dict[str, Account] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._addresses: dict[str, str] = {}
        self._applying = False
        self._closing = False
        self._allow = AllowList(settings.sip_allow, setting="sip_allow")
        self._trusted = AllowList(settings.sip_trusted_peers, setting="sip_trusted_peers")
        self._rates = RateLimiter(settings.sip_max_requests_per_source)
        #: Open SIP/TCP connections by source address (sip_max_connections_per_source).
        self._connections: dict[str, int] = {}
        #: The upstream server's address: always allowed (it sends the calls to our phones).
        self._upstream_host: str | None = None
        #: Requests refused for ``sip_allow``, logged once per episode of a source.
        self.refusals = RefusalLog("sip")

    @property
    def media(self) -> dict[str, CallMedia]:
        """The relays of the calls in progress, by call reference."""
        return self.relays.calls

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        upstream = await self._resolve_upstream()
        self._upstream_host = plain_ip(upstream.host) if upstream is not None else None
        try:
            await asyncio.wait_for(self.reload_accounts(), ACCOUNTS_START_WAIT)
        except (CatalogError, TimeoutError) as exc:
            # The catalogue is down or hung: SIP starts with no accounts yet (phones that
            # register are challenged and retry), and the periodic re-read fills them in.
            logger.warning("SIP starts without its accounts for now: %s", exc or "no answer")
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _SipDatagramProtocol(self),
            sock=_bound(settings.sip_host, settings.sip_port, socket.SOCK_DGRAM),
        )
        udp_port = int(self._udp.get_extra_info("sockname")[1])
        tcp_port = udp_port
        if settings.sip_tcp:
            try:
                self._tcp_server = await asyncio.start_server(
                    self._serve_tcp, sock=_bound(settings.sip_host, udp_port, socket.SOCK_STREAM)
                )
            except OSError:
                if settings.sip_port != 0:
                    self._udp.close()
                    raise
                # Port 0: the UDP port's TCP twin may be taken; any TCP port will do.
                self._tcp_server = await asyncio.start_server(
                    self._serve_tcp, sock=_bound(settings.sip_host, 0, socket.SOCK_STREAM)
                )
            tcp_port = int(self._tcp_server.sockets[0].getsockname()[1])
        self.core = SipCore(
            CoreConfig(
                ports={"udp": udp_port, "tcp": tcp_port},
                realm=settings.sip_realm,
                upstream=upstream,
                default_policy=settings.sip_default_policy,
                min_expires=settings.sip_min_expires,
                max_expires=settings.sip_max_expires,
                trusted_peers=self._trusted.networks_text,
            ),
            accounts=self._accounts.get,
            media=self,
            local_address=self._local_address,
            media_address=self._media_address,
        )
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="callrec-sip-accounts")
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
            self._spawn(self._stop_recording(media, "shutdown"))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE)
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for media in list(self.media.values()):
            self.relays.close(media)
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
        rows = await asyncio.to_thread(self.accounts_store.all)
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
        now = asyncio.get_running_loop().time()
        source = plain_ip(peer.host)
        known = source == self._upstream_host or self._is_trusted(source)
        if not known and not self._allow.allows(source):
            if core.refuse(data, peer, now):
                self.refusals.refused(source, "forbidden", "not in sip_allow", now)
                self.engine.admission.refuse_connection("sip", "forbidden")
            self._after()
            return
        # Only requests count: responses to what we sent and keep-alives are never refused.
        if not known and data.strip(b"\r\n") and not data.startswith(b"SIP/"):
            verdict = self._rates.check(source, now, reliable=peer.reliable)
            if verdict is not Verdict.ADMIT:
                if verdict is Verdict.REFUSE:
                    core.refuse(data, peer, now, status=503, retry_after=RATE_RETRY_AFTER)
                self.refusals.refused(
                    source, "rate_limited", "over sip_max_requests_per_source", now
                )
                self.engine.admission.refuse_connection("sip", "rate_limited")
                self._after()
                return
        try:
            core.receive(data, peer, now)
        except Exception:
            logger.exception("SIP core failed on a message from %s (a bug)", peer)
        self._after()

    def _is_trusted(self, source: str) -> bool:
        return not self._trusted.everyone and self._trusted.allows(source)

    def _after(self) -> None:
        core = self.core
        if core is None:
            return
        self._applying = True
        try:
            # Carrying out an action can give the core new input (a refused recording).
            while actions := core.pop_actions():
                for action in actions:
                    try:
                        self._apply(action)
                    except Exception:
                        logger.exception("could not carry out %s (a bug)", type(action).__name__)
        finally:
            self._applying = False
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
                self._spawn(self._stop_recording(media, action.reason))
        elif isinstance(action, CallEnded):
            media = self.media.get(action.call)
            if media is not None:
                self._spawn(self._end_media(media))

    def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self._udp is not None:
                family = self._udp.get_extra_info("socket").family
                self._udp.sendto(data, sendable(family, peer.address))
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
        host, port = plain_sockaddr(writer.get_extra_info("peername") or ("?", 0))
        peer = Peer("tcp", host, port)
        source = plain_ip(host)
        limit = self.settings.sip_max_connections_per_source
        known = source == self._upstream_host or self._is_trusted(source)
        if limit > 0 and not known and self._connections.get(source, 0) >= limit:
            now = asyncio.get_running_loop().time()
            self.refusals.refused(
                source, "too_many_connections", "over sip_max_connections_per_source", now
            )
            self.engine.admission.refuse_connection("sip", "too_many_connections")
            writer.close()
            return
        self._connections[source] = self._connections.get(source, 0) + 1
        try:
            await self._read_tcp(reader, writer, peer)
        finally:
            left = self._connections.get(source, 1) - 1
            if left > 0:
                self._connections[source] = left
            else:
                self._connections.pop(source, None)

    async def _read_tcp(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        self._tcp[peer.address] = writer
        framer = StreamFramer(max_message=MAX_TCP_MESSAGE)
        loop = asyncio.get_running_loop()
        idle = self.settings.sip_tcp_idle_timeout
        #: When the last complete message came (or the connection opened), and since when
        #: part of a message waits for the rest.
        last_message = loop.time()
        partial_since: float | None = None
        try:
            while not self._closing:
                start = partial_since if partial_since is not None else last_message
                wait = max(0.01, start + idle - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout=wait)
                except TimeoutError:
                    now = loop.time()
                    if partial_since is not None:
                        # Half a message held this long will not be finished (slow-loris).
                        logger.info("closing SIP/TCP connection from %s: partial message", peer)
                        self.engine.admission.refuse_connection("sip", "partial_message")
                        break
                    core = self.core
                    if core is not None and core.uses(peer, now):
                        last_message = now  # a registered phone or a call needs it
                        continue
                    logger.debug("closing idle SIP/TCP connection from %s", peer)
                    self.engine.admission.refuse_connection("sip", "idle")
                    break
                if not data:
                    break
                framer.receive_data(data)
                while (message := framer.next_message()) is not None:
                    last_message = loop.time()
                    partial_since = None
                    self.receive(message, peer)
                if not framer.partial:
                    partial_since = None
                elif partial_since is None:
                    partial_since = loop.time()
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
        media = self.relays.allocate(call)
        self._spawn(self.relays.open(media))
        return media.ports

    async def _end_media(self, media: CallMedia) -> None:
        # The core stopped the recording before it ended the call; this is for one whose
        # stop is still under way.
        await self._stop_recording(media, HANGUP)
        self.relays.close(media)

    # -- recordings ----------------------------------------------------------------------

    def _start_recording(self, event: StartRecording) -> None:
        """The core wants this segment recorded: the source takes RTP at once, the engine
        opens the recording meanwhile, and the core hears whether it did."""
        media = self.media.get(event.call)
        if media is None or media.recording is not None:
            self._refused(event, "internal", "the call has no relay or records already")
            return
        if media.codec is None or media.payload_type is None:
            self._refused(event, "unsupported_codec", "no codec negotiated")
            return
        try:
            codec = get_codec(media.codec)
        except CallrecError as exc:
            self._refused(event, "unsupported_codec", str(exc))
            return
        loop = asyncio.get_running_loop()
        source = SipSource(
            StereoRecorder(
                codec=codec,
                payload_type=media.payload_type,
                origin=loop.time(),
                reorder_window=self.settings.reorder_window,
                max_gap=self.settings.max_gap_seconds,
            ),
            call=event.call,
            segment=event.segment,
            # The port facing our own phone: the caller's when it made the call.
            media_port=media.ports[CALLER if event.direction == "out" else CALLEE],
            on_close=lambda src: self._source_closed(media, src),
            drops=DropCounter([media.sockets[CALLER][RTP], media.sockets[CALLEE][RTP]]),
        )
        media.recording = source
        spec = recording_spec(event, codec, source.media_port)
        source.opening = asyncio.create_task(self._open_recording(media, source, spec, event))
        self._tasks.add(source.opening)
        source.opening.add_done_callback(self._tasks.discard)

    async def _open_recording(
        self, media: CallMedia, source: SipSource, spec: Any, event: StartRecording
    ) -> None:
        try:
            source.recording = await self.engine.open(spec, lambda: source)
        except CallrecError as exc:
            if media.recording is source:
                media.recording = None
            self._refused(event, getattr(exc, "reason", "internal"), str(exc))
            return
        except Exception:
            media.log.exception("cannot start recording (a bug)")
            if media.recording is source:
                media.recording = None
            self._refused(event, "internal", "internal error")
            return
        media.log.info(
            "recording segment %d (%s, %s) to %s",
            event.segment,
            event.trigger,
            spec.codec.name,
            source.recording.relpath,
        )
        if source.stop_reason is not None:
            # The call stopped recording (or ended) while the recording opened.
            await self.engine.finish(source.recording, source.stop_reason)
            return
        if self.core is not None:
            self.core.recording_started(
                event.call, event.segment, asyncio.get_running_loop().time()
            )
            self._after()

    def _refused(self, event: StartRecording, reason: str, detail: str) -> None:
        logger.warning(
            "[%s] recording segment %d refused (%s): %s", event.call, event.segment, reason, detail
        )
        self.engine.admission.refuse(reason)  # every refusal of a segment passes here
        if self.core is not None and not self._closing:
            self.core.recording_refused(
                event.call, event.segment, reason, asyncio.get_running_loop().time()
            )
            if not self._applying:
                self._after()

    async def _stop_recording(self, media: CallMedia, reason: str) -> None:
        """Finish the call's recording (or have it finished as soon as it is open)."""
        source = media.recording
        if source is None:
            return
        media.recording = None
        if reason not in STOP_REASONS:
            media.log.warning("stop reason %r is not one of the engine's; using hangup", reason)
            reason = HANGUP
        if source.recording is None:
            source.stop_reason = reason
            if source.opening is not None:
                await asyncio.wait([source.opening])
            return
        await self.engine.finish(source.recording, reason)

    def _source_closed(self, media: CallMedia, source: SipSource) -> None:
        """The engine ended a recording (a stop above, or its own: max_duration, disk_full
        ...): the relay stops feeding it and the core may record a new segment."""
        if media.recording is source:
            media.recording = None
        if self.core is not None:
            self.core.recording_stopped(source.call, source.segment)

    # -- periodic work -------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        refresh = self.settings.sip_account_refresh
        failing = False
        while True:
            await asyncio.sleep(refresh)
            # The refusal episodes that went quiet are summed up here (no timer of their own).
            self.refusals.sweep(asyncio.get_running_loop().time())
            try:
                await self.reload_accounts()
            except CatalogError as exc:
                # Every few seconds while the catalogue is down: said once per episode.
                if not failing:
                    logger.error("cannot re-read the SIP accounts, keeping those read: %s", exc)
                failing = True
                continue
            except Exception:
                logger.exception("could not re-read the SIP accounts")
                continue
            if failing:
                failing = False
                logger.warning("SIP accounts read from the catalogue again")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _bound(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A socket bound to ``host``:``port``, dual stack for "::" (asyncio's own listeners
    would make an IPv6 one IPv6-only, deaf to IPv4 phones)."""
    sock = new_socket(host, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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
    if settings.sip_tcp_idle_timeout <= 0:
        raise ConfigError("sip_tcp_idle_timeout must be > 0")
    for name in ("sip_max_connections_per_source", "sip_max_requests_per_source"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name} must be >= 0 (0: no limit)")
    if not settings.sip_realm or any(c in settings.sip_realm for c in '"\\\r\n'):
        raise ConfigError("sip_realm must be non-empty, without quotes or backslashes")
    upstream = settings.sip_upstream.strip()
    if upstream:
        text = upstream[4:] if upstream.lower().startswith(("tcp:", "udp:")) else upstream
        try:
            split_hostport(text)
        except SipProtocolError as exc:
            raise ConfigError(f"sip_upstream must be HOST[:PORT], got {upstream!r}") from exc
