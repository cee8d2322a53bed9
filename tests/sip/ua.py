"""A small SIP phone for the tests: UDP on loopback, digest auth, one call at a time, RTP.

It is deliberately not callrec's core: it builds and reads messages with the sans-I/O
message module only, keeps no transaction state machines (a request is retransmitted a
bounded number of times until a final response comes), and answers what a simple phone
answers. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from callrec.rtp.packet import RtpPacket
from callrec.sip.auth import Challenge
from callrec.sip.headers import NameAddr
from callrec.sip.message import (
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    with_body,
)
from callrec.sip.sdp import SessionDescription, audio_stream

HOST = "127.0.0.1"
WAIT = 5.0


def sdp_offer(
    port: int, *, codecs: Sequence[int] = (8, 0, 9), event_pt: int = 101, host: str = HOST
) -> bytes:
    names = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000"}
    lines = [
        "v=0",
        f"o=- {secrets.randbelow(10**9)} 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, [*codecs, event_pt]))}",
        *[f"a=rtpmap:{pt} {names[pt]}" for pt in codecs],
        f"a=rtpmap:{event_pt} telephone-event/8000",
        f"a=fmtp:{event_pt} 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int], float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr, asyncio.get_running_loop().time()))


@dataclass
class Call:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str
    remote_uri: str
    remote_target: str
    cseq: int
    remote_rtp: tuple[str, int] | None = None
    invite: SipRequest | None = None
    answer: SipResponse | None = None
    received_requests: list[SipRequest] = field(default_factory=list)


class TestPhone:
    """One phone: ``user`` registering to ``server`` with ``password``."""

    __test__ = False  # not a pytest class

    def __init__(
        self, user: str, password: str, server: tuple[str, int], *, host: str = HOST
    ) -> None:
        #: The loopback address the phone sends from (127.0.0.2... for other hosts).
        self.host = host
        self.user = user
        self.password = password
        self.server = server
        self.sip = _Endpoint()
        self.rtp = _Endpoint()
        self.sip_port = 0
        self.rtp_port = 0
        self._cseq = 0
        self._call_id_register = secrets.token_hex(8) + "@test"
        self._responses: dict[tuple[str, str], asyncio.Queue[SipResponse]] = {}
        self.requests: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.rtp_received: list[tuple[RtpPacket, float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.call: Call | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: self.sip, local_addr=(self.host, 0))
        self.sip_port = t.get_extra_info("sockname")[1]
        t, _ = await loop.create_datagram_endpoint(lambda: self.rtp, local_addr=(self.host, 0))
        self.rtp_port = t.get_extra_info("sockname")[1]
        self._tasks.append(asyncio.create_task(self._sip_loop()))
        self._tasks.append(asyncio.create_task(self._rtp_loop()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ep in (self.sip, self.rtp):
            if ep.transport is not None:
                ep.transport.close()

    # -- plumbing -------------------------------------------------------------------------

    async def _sip_loop(self) -> None:
        while True:
            data, _addr, _t = await self.sip.queue.get()
            message = parse_message(data)
            if isinstance(message, SipResponse):
                key = (message.top_via.branch or "", message.cseq.method)
                self._responses.setdefault(key, asyncio.Queue()).put_nowait(message)
            else:
                if message.method == "ACK":
                    self.requests.put_nowait(message)
                    continue
                if self.call is not None and message.call_id == self.call.call_id:
                    self.call.received_requests.append(message)
                self.requests.put_nowait(message)

    async def _rtp_loop(self) -> None:
        while True:
            data, _addr, t = await self.rtp.queue.get()
            self.rtp_received.append((RtpPacket.parse(data), t))

    def send_raw(self, data: bytes) -> None:
        assert self.sip.transport is not None
        self.sip.transport.sendto(data, self.server)

    def send(self, message: SipRequest | SipResponse) -> None:
        self.send_raw(message.serialize())

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.server[0]}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.host}:{self.sip_port}>"

    def via(self, branch: str | None = None) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(6)
        return f"SIP/2.0/UDP {self.host}:{self.sip_port};branch={branch};rport"

    def next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    async def transact(self, request: SipRequest, *, timeout: float = WAIT) -> SipResponse:
        """Send; retransmit at most 4 times (UDP); return the final response."""
        branch = request.top_via.branch or ""
        queue = self._responses.setdefault((branch, request.method), asyncio.Queue())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = 0.5
        tries = 0
        self.send(request)
        provisional = False
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no final response to {request.method}")
            wait = remaining if provisional else min(interval, remaining)
            try:
                response = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if not provisional and tries < 4:
                    tries += 1
                    interval *= 2
                    self.send(request)
                continue
            if response.status < 200:
                provisional = True
                continue
            return response

    async def authed(
        self, build: Callable[[tuple[str, str] | None], SipRequest], *, timeout: float = WAIT
    ) -> SipResponse:
        """Send ``build(None)``; on 401/407 answer the challenge once with ``build(creds)``."""
        request: SipRequest = build(None)
        response = await self.transact(request, timeout=timeout)
        if response.status in (401, 407):
            if request.method == "INVITE":
                self.send(self._ack_failure(request, response))
            name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = Challenge.parse(response.header(name) or "")
            creds = challenge.authorize(
                username=self.user, password=self.password, method=request.method, uri=request.uri
            )
            header = "Authorization" if response.status == 401 else "Proxy-Authorization"
            request = build((header, creds))
            response = await self.transact(request, timeout=timeout)
        return response

    def _ack_failure(self, invite: SipRequest, response: SipResponse) -> SipRequest:
        headers = [
            ("Via", invite.header_values("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", response.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ]
        return SipRequest(method="ACK", uri=invite.uri, headers=with_body(headers, b"", None))

    # -- registration ---------------------------------------------------------------------

    async def register(self, *, expires: int = 3600) -> SipResponse:
        def build(auth: tuple[str, str] | None) -> SipRequest:
            headers = [
                ("Via", self.via()),
                ("Max-Forwards", "70"),
                ("From", f"<{self.aor}>;tag={secrets.token_hex(4)}"),
                ("To", f"<{self.aor}>"),
                ("Call-ID", self._call_id_register),
                ("CSeq", f"{self.next_cseq()} REGISTER"),
                ("Contact", self.contact),
                ("Expires", str(expires)),
                ("User-Agent", f"TestPhone {self.user} 0c383e0e70{self.user[-2:]:0>2}"),
            ]
            if auth:
                headers.append(auth)
            uri = f"sip:{self.server[0]}:{self.server[1]}"
            return SipRequest(method="REGISTER", uri=uri, headers=with_body(headers, b"", None))

        return await self.authed(build)

    # -- calls ----------------------------------------------------------------------------

    async def invite(
        self,
        target: str,
        *,
        codecs: Sequence[int] = (8, 0, 9),
        uri: str | None = None,
        from_user: str | None = None,
    ) -> SipResponse:
        """Call ``target`` (a user name, or the Request-URI ``uri``); on 2xx the call is set
        up and ACKed. ``from_user`` puts another user in From than the one authenticating."""
        call_id = secrets.token_hex(8) + "@test"
        tag = secrets.token_hex(4)
        uri = uri or f"sip:{target}@{self.server[0]}:{self.server[1]}"
        body = sdp_offer(self.rtp_port, codecs=codecs, host=self.host)
        from_aor = f"sip:{from_user}@{self.server[0]}" if from_user else self.aor

        def build(auth: tuple[str, str] | None) -> SipRequest:
            headers = [
                ("Via", self.via()),
                ("Max-Forwards", "70"),
                ("From", f'"{self.user.title()}" <{from_aor}>;tag={tag}'),
                ("To", f"<sip:{target}@{self.server[0]}>"),
                ("Call-ID", call_id),
                ("CSeq", f"{self.next_cseq()} INVITE"),
                ("Contact", self.contact),
                ("User-Agent", f"TestPhone {self.user} 0c383e0e70{self.user[-2:]:0>2}"),
            ]
            if auth:
                headers.append(auth)
            return SipRequest(
                method="INVITE",
                uri=uri,
                headers=with_body(headers, body, "application/sdp"),
                body=body,
            )

        response = await self.authed(build)
        if response.success:
            invite = build(None)
            to = response.to
            contact = NameAddr.parse(response.header_values("Contact")[0]).uri
            sdp = audio_stream(SessionDescription.parse(response.body))
            self.call = Call(
                call_id=call_id,
                local_tag=tag,
                remote_tag=to.tag,
                local_uri=f"<{from_aor}>",
                remote_uri=f"<sip:{target}@{self.server[0]}>",
                remote_target=contact,
                cseq=response.cseq.number,
                remote_rtp=(sdp.address or HOST, sdp.port),
                invite=invite,
                answer=response,
            )
            self.send(self._in_dialog("ACK", cseq=response.cseq.number))
        return response

    async def answer_call(
        self, *, timeout: float = WAIT, status: int = 200, codecs: Sequence[int] = (8, 0, 9)
    ) -> SipRequest:
        """Wait for an INVITE, ring, answer it with our SDP; wait for the ACK."""
        invite = await self.wait_request("INVITE", timeout=timeout)
        tag = secrets.token_hex(4)
        self.send(make_response(invite, 180, to_tag=tag, headers=[("Contact", self.contact)]))
        if status != 200:
            self.send(make_response(invite, status, to_tag=tag))
            return invite
        body = sdp_offer(self.rtp_port, codecs=codecs, host=self.host)
        answer = make_response(
            invite,
            200,
            to_tag=tag,
            headers=[("Contact", self.contact)],
            body=body,
            content_type="application/sdp",
        )
        sdp = audio_stream(SessionDescription.parse(invite.body))
        self.call = Call(
            call_id=invite.call_id,
            local_tag=tag,
            remote_tag=invite.from_.tag,
            local_uri=invite.header("To") or "",
            remote_uri=NameAddr.parse(invite.header("From") or "").with_tag(None).serialize(),
            remote_target=NameAddr.parse(invite.header_values("Contact")[0]).uri,
            cseq=0,
            remote_rtp=(sdp.address or HOST, sdp.port),
            invite=invite,
        )
        self.send(answer)
        await self.wait_request("ACK", timeout=timeout)
        return invite

    async def wait_request(self, method: str, *, timeout: float = WAIT) -> SipRequest:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {method} came")
            request = await asyncio.wait_for(self.requests.get(), remaining)
            if request.method == method:
                return request
            if request.method != "ACK":
                # Anything else gets a plain 200 so the other side is not left waiting.
                self.send(make_response(request, 200))

    def _in_dialog(
        self,
        method: str,
        *,
        cseq: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        call = self.call
        assert call is not None
        if cseq is None:
            call.cseq += 1
            cseq = call.cseq
        remote = NameAddr.parse(call.remote_uri).with_tag(call.remote_tag).serialize()
        local = NameAddr.parse(call.local_uri).with_tag(call.local_tag).serialize()
        out = [
            ("Via", self.via()),
            ("Max-Forwards", "70"),
            ("From", local),
            ("To", remote),
            ("Call-ID", call.call_id),
            ("CSeq", f"{cseq} {method}"),
            *headers,
        ]
        return SipRequest(
            method=method,
            uri=call.remote_target,
            headers=with_body(out, body, content_type),
            body=body,
        )

    async def info_record(self, value: str) -> SipResponse:
        return await self.transact(self._in_dialog("INFO", headers=[("Record", value)]))

    async def bye(self) -> SipResponse:
        return await self.transact(self._in_dialog("BYE"))

    async def wait_bye(self, *, timeout: float = WAIT) -> None:
        bye = await self.wait_request("BYE", timeout=timeout)
        self.send(make_response(bye, 200))

    # -- RTP ------------------------------------------------------------------------------

    def send_rtp(self, packet: RtpPacket) -> None:
        assert self.call is not None and self.call.remote_rtp is not None
        assert self.rtp.transport is not None
        self.rtp.transport.sendto(packet.serialize(), self.call.remote_rtp)


async def play(
    phone: TestPhone, packets: Sequence[RtpPacket], *, start: float, ptime: float = 0.02
) -> None:
    """Send ``packets`` in real time: packet i at ``start + i * ptime`` (loop clock)."""
    loop = asyncio.get_running_loop()
    for i, packet in enumerate(packets):
        delay = start + i * ptime - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        phone.send_rtp(packet)
