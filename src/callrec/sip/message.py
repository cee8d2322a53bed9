"""SIP messages (RFC 3261 section 7): bytes in, :class:`SipRequest` / :class:`SipResponse` out.

No I/O. :func:`parse_message` takes one whole message (a UDP datagram, or what
:class:`StreamFramer` cut from a TCP stream) and either returns a message whose mandatory
headers are known to be well formed, or raises :class:`SipProtocolError` saying what is wrong
(status 400, or 505 for another SIP version). Nothing a peer sends makes it raise anything
else; the property test feeds it arbitrary bytes to hold it to that.

Headers keep their order and spelling, and values are text decoded from UTF-8 with
``surrogateescape``, so ``serialize(parse(b)) == b`` for a message written in the canonical
form (``Name: value`` lines ending in CRLF). Folded lines are unfolded on the way in, and
compact names (``v``, ``f``, ``i`` ...) are understood wherever a header is looked up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from callrec.sip.errors import SipProtocolError
from callrec.sip.headers import (
    TOKEN_CHARS,
    CSeq,
    NameAddr,
    SipUri,
    Via,
    is_token,
    split_list,
)

SIP_VERSION: Final = "SIP/2.0"
CRLF: Final = "\r\n"
_ENCODING: Final = "utf-8"
_ERRORS: Final = "surrogateescape"

#: Compact header names (RFC 3261 7.3.3 and later RFCs) -> full names.
COMPACT_NAMES: Final = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
}
_KNOWN_NAMES = (
    "Accept",
    "Allow",
    "Authorization",
    "Call-ID",
    "Contact",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Expires",
    "From",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Reason",
    "Record",
    "Record-Route",
    "Require",
    "Route",
    "Server",
    "Subject",
    "Supported",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)
_CANONICAL: Final = {name.lower(): name for name in _KNOWN_NAMES}
#: Headers whose values may be comma-separated lists (RFC 3261 7.3.1).
LIST_HEADERS: Final = frozenset(
    {
        "Accept",
        "Allow",
        "Contact",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
    }
)
#: Headers that may appear once only; a second one is a malformed message.
SINGLE_HEADERS: Final = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type")
#: Largest Max-Forwards (RFC 4475 3.1.2.4: larger values are a 400).
MAX_FORWARDS_LIMIT: Final = 255

_START_LINE_END = re.compile(rb"\r?\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(r"[1-6][0-9][0-9]")


def canonical_name(name: str) -> str:
    """The full, conventionally spelled form of a header name (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT_NAMES:
        return COMPACT_NAMES[lower]
    return _CANONICAL.get(lower, name)


Headers = tuple[tuple[str, str], ...]


class _Message:
    """What requests and responses share: headers, body and their accessors."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling, compact or full), or None."""
        want = canonical_name(name).lower()
        for key, value in self.headers:
            if canonical_name(key).lower() == want:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of ``name``, list headers split at their commas, in order."""
        canonical = canonical_name(name)
        want = canonical.lower()
        values: list[str] = []
        for key, value in self.headers:
            if canonical_name(key).lower() == want:
                if canonical in LIST_HEADERS:
                    values.extend(split_list(value))
                else:
                    values.append(value)
        return values

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.header("CSeq") or "")

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.header("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.header("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.header_values("Via")]

    @property
    def top_via(self) -> Via:
        return Via.parse(self.header_values("Via")[0])

    @property
    def content_type(self) -> str:
        """The media type in lower case, without parameters; empty when absent."""
        value = self.header("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    def _head(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        lines = [self._head()]
        lines += [f"{name}: {value}" for name, value in self.headers]
        text = CRLF.join(lines) + CRLF + CRLF
        return text.encode(_ENCODING, _ERRORS) + self.body


@dataclass(frozen=True, slots=True, kw_only=True)
class SipRequest(_Message):
    method: str
    uri: str
    headers: Headers = ()
    body: bytes = b""
    version: str = SIP_VERSION

    def _head(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def with_headers(self, headers: Iterable[tuple[str, str]]) -> SipRequest:
        return replace(self, headers=tuple(headers))


@dataclass(frozen=True, slots=True, kw_only=True)
class SipResponse(_Message):
    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""
    version: str = SIP_VERSION

    def _head(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def with_headers(self, headers: Iterable[tuple[str, str]]) -> SipResponse:
        return replace(self, headers=tuple(headers))

    @property
    def provisional(self) -> bool:
        return self.status < 200

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


SipMessage = SipRequest | SipResponse


def is_keepalive(data: bytes) -> bool:
    """RFC 5626 keep-alives (CRLF pings) and stray blank datagrams: nothing to answer."""
    return not data.strip(b"\r\n")


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one whole message. On UDP (``stream`` False) bytes beyond Content-Length are
    dropped (RFC 3261 18.3) and a message without Content-Length has the rest as its body;
    on a stream the framer has already cut the message at its Content-Length."""
    start = 0
    while data.startswith(b"\r\n", start) or data.startswith(b"\n", start):
        start += 2 if data.startswith(b"\r\n", start) else 1
    match = _HEADER_END.search(data, start)
    if match is None:
        raise SipProtocolError("message has no empty line after its headers")
    head = data[start : match.start()].decode(_ENCODING, _ERRORS)
    rest = data[match.end() :]
    lines = re.split(r"\r?\n", head)
    start_line, header_lines = lines[0], lines[1:]
    headers = _parse_headers(header_lines)
    message: SipMessage
    if start_line.startswith("SIP/") or start_line[:4].upper() == "SIP/":
        message = _parse_status_line(start_line, headers)
    else:
        message = _parse_request_line(start_line, headers)
    body = _body(message, rest, stream=stream)
    message = replace(message, body=body)
    _validate(message)
    return message


def _parse_request_line(line: str, headers: Headers) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipProtocolError("request line is not 'Method SP Request-URI SP SIP-Version'")
    method, uri, version = parts
    if not is_token(method):
        raise SipProtocolError(f"invalid method {method[:20]!r}")
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise SipProtocolError(f"unsupported SIP version {version[:20]!r}", status=505)
        raise SipProtocolError("request line is not 'Method SP Request-URI SP SIP-Version'")
    _check_request_uri(uri)
    return SipRequest(method=method, uri=uri, headers=headers, version=version)


def _check_request_uri(uri: str) -> None:
    scheme, colon, rest = uri.partition(":")
    if not colon or not scheme or not rest or "<" in uri or ">" in uri:
        raise SipProtocolError(f"invalid Request-URI {uri[:40]!r}")
    if not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
        raise SipProtocolError(f"invalid Request-URI scheme {scheme[:20]!r}")
    if scheme.lower() in ("sip", "sips"):
        parsed = SipUri.parse(uri)
        if parsed.headers:
            # RFC 3261 19.1.5: headers are not allowed in a Request-URI (RFC 4475 escruri).
            raise SipProtocolError("Request-URI carries URI headers")


def _parse_status_line(line: str, headers: Headers) -> SipResponse:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise SipProtocolError("status line is not 'SIP-Version SP Status-Code SP Reason'")
    version, code = parts[0], parts[1]
    reason = parts[2] if len(parts) == 3 else ""
    if version.upper() != SIP_VERSION:
        raise SipProtocolError(f"unsupported SIP version {version[:20]!r}", status=505)
    if not _STATUS.fullmatch(code):
        raise SipProtocolError(f"invalid status code {code[:20]!r}")
    return SipResponse(status=int(code), reason=reason, headers=headers, version=version)


def _parse_headers(lines: list[str]) -> Headers:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipProtocolError("continuation line before the first header")
            name, value = headers[-1]
            headers[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or any(c not in TOKEN_CHARS for c in name):
            raise SipProtocolError(f"invalid header line {line[:40]!r}")
        headers.append((name, value.strip(" \t")))
    return tuple(headers)


def _content_length(headers: Headers) -> int | None:
    values = {v for k, v in headers if canonical_name(k) == "Content-Length"}
    if not values:
        return None
    if len(values) > 1:
        raise SipProtocolError("conflicting Content-Length headers")
    text = values.pop()
    if not text.isdigit() or not text.isascii():
        raise SipProtocolError(f"invalid Content-Length {text[:20]!r}")
    if len(text) > 10:
        raise SipProtocolError("Content-Length too large")
    return int(text)


def _body(message: SipMessage, rest: bytes, *, stream: bool) -> bytes:
    length = _content_length(message.headers)
    if length is None:
        if stream:
            raise SipProtocolError("message on a stream transport without Content-Length")
        return rest
    if length > len(rest):
        raise SipProtocolError(
            f"Content-Length {length} is larger than the {len(rest)} bytes of body"
        )
    return rest[:length]


def _validate(message: SipMessage) -> None:
    """The headers every message must have, well formed, each where the core relies on it."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.header(name) is None:
            raise SipProtocolError(f"missing {name} header")
    for name in SINGLE_HEADERS:
        count = sum(1 for k, _ in message.headers if canonical_name(k) == name)
        if count > 1:
            raise SipProtocolError(f"more than one {name} header")
    call_id = message.call_id
    if not call_id or any(c in " \t" for c in call_id):
        raise SipProtocolError("invalid Call-ID")
    cseq = message.cseq
    message.from_  # noqa: B018 - parsing is the check
    message.to  # noqa: B018
    for via in message.header_values("Via"):
        Via.parse(via)
    if isinstance(message, SipRequest):
        if cseq.method != message.method:
            raise SipProtocolError(
                f"CSeq method {cseq.method[:20]!r} does not match {message.method[:20]!r}"
            )
        max_forwards = message.header("Max-Forwards")
        if max_forwards is not None and (
            not max_forwards.isdigit()
            or not max_forwards.isascii()
            or len(max_forwards) > 5
            or int(max_forwards) > MAX_FORWARDS_LIMIT
        ):
            raise SipProtocolError(f"invalid Max-Forwards {max_forwards[:20]!r}")


class StreamFramer:
    """Cuts whole messages out of a TCP byte stream (RFC 3261 18.3: Content-Length frames).

    ``receive_data`` appends; ``next_message`` returns the bytes of the next complete message
    (for :func:`parse_message` with ``stream=True``), or None.
    CRLF keep-alives between messages are skipped. A message that cannot be framed raises
    :class:`SipProtocolError`; the connection is then beyond repair and should be closed.
    """

    def __init__(self, *, max_message: int = 65536) -> None:
        self._buffer = bytearray()
        self.max_message = max_message

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def partial(self) -> bool:
        """Bytes of a message not yet complete are held (keep-alive CRLFs do not count)."""
        return bool(self._buffer.strip(b"\r\n"))

    def next_message(self) -> bytes | None:
        buf = self._buffer
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":
            del buf[: 2 if buf[:2] == b"\r\n" else 1]
        match = _HEADER_END.search(buf)
        if match is None:
            if len(buf) > self.max_message:
                raise SipProtocolError("message headers too large")
            return None
        head = bytes(buf[: match.start()]).decode(_ENCODING, _ERRORS)
        lines = re.split(r"\r?\n", head)[1:]
        length = _content_length(_parse_headers(lines))
        if length is None:
            raise SipProtocolError("message on a stream transport without Content-Length")
        end = match.end() + length
        if end > self.max_message:
            raise SipProtocolError("message too large")
        if len(buf) < end:
            return None
        data = bytes(buf[:end])
        del buf[:end]
        return data


# -- building messages -------------------------------------------------------------------


def with_body(headers: Iterable[tuple[str, str]], body: bytes, content_type: str | None) -> Headers:
    """``headers`` without any Content-Type/Length, then those two describing ``body``."""
    out = [
        (k, v) for k, v in headers if canonical_name(k) not in ("Content-Type", "Content-Length")
    ]
    if body and content_type:
        out.append(("Content-Type", content_type))
    out.append(("Content-Length", str(len(body))))
    return tuple(out)


def replace_header(headers: Headers, name: str, value: str | None) -> Headers:
    """``headers`` with every ``name`` removed and, unless None, one put where the first was."""
    want = canonical_name(name)
    out: list[tuple[str, str]] = []
    placed = False
    for key, old in headers:
        if canonical_name(key) == want:
            if not placed and value is not None:
                out.append((want, value))
                placed = True
            continue
        out.append((key, old))
    if not placed and value is not None:
        out.append((want, value))
    return tuple(out)


def drop_headers(headers: Headers, *names: str) -> Headers:
    wanted = {canonical_name(n) for n in names}
    return tuple((k, v) for k, v in headers if canonical_name(k) not in wanted)


#: Reason phrases of the responses callrec sends.
REASONS: Final = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    copy_record_route: bool = False,
) -> SipResponse:
    """A response to ``request`` (RFC 3261 8.2.6): Via, From, To, Call-ID and CSeq copied, a
    To tag added when given and absent, Record-Route copied for dialog-creating answers."""
    copied: list[tuple[str, str]] = []
    for key, value in request.headers:
        name = canonical_name(key)
        if name in ("Via", "From", "Call-ID", "CSeq") or (
            copy_record_route and name == "Record-Route"
        ):
            copied.append((name, value))
        elif name == "To":
            to = NameAddr.parse(value)
            if to_tag is not None and to.tag is None and status > 100:
                value = to.with_tag(to_tag).serialize()
            copied.append(("To", value))
    copied.extend(headers)
    return SipResponse(
        status=status,
        reason=reason or reason_phrase(status),
        headers=with_body(copied, body, content_type),
        body=body,
    )
