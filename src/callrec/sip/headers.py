"""Structured SIP header values (RFC 3261 section 20 and 25): parse and serialise, nothing else.

Each type is a frozen dataclass with ``parse(text)`` and ``serialize()``; a value that does not
follow the grammar raises :class:`SipProtocolError` (status 400) with one message per failure.
Parameters keep their order and spelling; names compare case-insensitively through
:func:`param`. Values are ``str`` decoded from UTF-8 with ``surrogateescape``, so any byte
survives a round trip.
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, replace

from callrec.sip.errors import SipProtocolError

#: RFC 3261 25.1 ``token`` characters.
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
#: ``word`` (Call-ID) adds these to token.
WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
_WS = " \t"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{1,5}")

#: The branch prefix of RFC 3261 transactions (section 8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    return bool(text) and all(c in TOKEN_CHARS for c in text)


def param(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (case-insensitive); ``""`` for a flag, None if absent."""
    lower = name.lower()
    for key, value in params:
        if key.lower() == lower:
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    lower = name.lower()
    return any(key.lower() == lower for key, _ in params)


def set_param(params: Params, name: str, value: str | None) -> Params:
    """``params`` with ``name`` set (replaced in place, or appended)."""
    lower = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for key, old in params:
        if key.lower() == lower:
            if not done:
                out.append((key, value))
                done = True
            continue
        out.append((key, old))
    if not done:
        out.append((name, value))
    return tuple(out)


def drop_param(params: Params, name: str) -> Params:
    lower = name.lower()
    return tuple((k, v) for k, v in params if k.lower() != lower)


def serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def unquote(text: str) -> str:
    """The content of a quoted-string (without its quotes), with quoted-pairs resolved."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _end_of_quoted(text: str, start: int) -> int:
    """Index just after the quoted-string that opens at ``text[start]``."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise SipProtocolError("unterminated quoted string")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, minding quoted strings and ``<...>``."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(value):
        c = value[i]
        if c == '"':
            i = _end_of_quoted(value, i)
            continue
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
    if any(not p for p in parts):
        raise SipProtocolError("empty element in a comma-separated header")
    return parts


def parse_params(text: str) -> Params:
    """``;name[=value]...`` (leading ``;`` included); LWS around ``;`` and ``=`` is allowed."""
    params: list[tuple[str, str | None]] = []
    text = text.strip(_WS)
    if not text:
        return ()
    if text[0] != ";":
        raise SipProtocolError(f"unexpected text before parameters: {text[:20]!r}")
    i = 1
    n = len(text)
    while True:
        while i < n and text[i] in _WS:
            i += 1
        start = i
        while i < n and text[i] in TOKEN_CHARS:
            i += 1
        name = text[start:i]
        if not name:
            raise SipProtocolError("empty or invalid parameter name")
        while i < n and text[i] in _WS:
            i += 1
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in _WS:
                i += 1
            if i < n and text[i] == '"':
                end = _end_of_quoted(text, i)
                value = text[i:end]
                i = end
            elif i < n and text[i] == "[":
                end = text.find("]", i)
                if end < 0:
                    raise SipProtocolError("unterminated IPv6 reference in a parameter")
                value = text[i : end + 1]
                i = end + 1
            else:
                start = i
                while i < n and text[i] not in _WS and text[i] not in ";,":
                    i += 1
                value = text[start:i]
                if not value or not all(c.isprintable() or ord(c) > 127 for c in value):
                    raise SipProtocolError(f"invalid value of parameter {name}")
        params.append((name, value))
        while i < n and text[i] in _WS:
            i += 1
        if i >= n:
            return tuple(params)
        if text[i] != ";":
            raise SipProtocolError(f"unexpected {text[i]!r} after parameter {name}")
        i += 1


def check_host(host: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipProtocolError(f"invalid IPv6 reference {host!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise SipProtocolError(f"invalid IPv6 reference {host!r}") from exc
        return
    if not _HOSTNAME.fullmatch(host):
        raise SipProtocolError(f"invalid host {host!r}")


def split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipProtocolError(f"invalid IPv6 reference {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = ":" + port_text if sep else ""
    check_host(host)
    if not rest:
        return host, None
    if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]):
        raise SipProtocolError(f"invalid port in {text!r}")
    port = int(rest[1:])
    if port > 65535:
        raise SipProtocolError(f"port {port} out of range")
    return host, port


def join_hostport(host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def host_ip(host: str) -> str:
    """A host as a socket wants it: IPv6 references lose their brackets."""
    return host[1:-1] if host.startswith("[") else host


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 19.1). Escapes are kept as written."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str
    port: int | None = None
    params: Params = ()
    #: The ``?...`` part without its ``?``; empty when absent.
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipProtocolError(f"not a SIP URI: {text[:40]!r}")
        if any(c in _WS or c in "<>\r\n" for c in rest):
            raise SipProtocolError(f"whitespace or <> inside a SIP URI: {text[:40]!r}")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.partition("@")
            user, sep, pw = userinfo.partition(":")
            password = pw if sep else None
            if not user:
                raise SipProtocolError(f"empty user part in {text[:40]!r}")
        hostport, qmark, headers = rest.partition("?")
        hostport, _, param_text = hostport.partition(";")
        host, port = split_hostport(hostport)
        params = parse_params(";" + param_text) if param_text else ()
        if qmark and not headers:
            raise SipProtocolError(f"empty header part in {text[:40]!r}")
        return cls(
            scheme=scheme.lower(),
            user=user,
            password=password,
            host=host,
            port=port,
            params=params,
            headers=headers,
        )

    def serialize(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(join_hostport(self.host, self.port))
        out.append(serialize_params(self.params))
        if self.headers:
            out += ["?", self.headers]
        return "".join(out)

    def __str__(self) -> str:
        return self.serialize()

    def param(self, name: str) -> str | None:
        return param(self.params, name)

    def with_params(self, **values: str | None) -> SipUri:
        params = self.params
        for name, value in values.items():
            params = set_param(params, name, value)
        return replace(self, params=params)

    @property
    def transport(self) -> str:
        return (self.param("transport") or "udp").lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route: ``[display] <uri>;params`` or ``uri;params``.

    ``uri`` is kept as text because any scheme may appear (``tel:``, unknown ones); use
    :meth:`sip_uri` where a SIP URI is required. ``display`` is as written (quotes and all).
    """

    display: str = ""
    uri: str
    params: Params = ()
    #: False for an addr-spec written without ``<>`` (kept for the round trip).
    angle: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        s = text.strip(_WS)
        if not s:
            raise SipProtocolError("empty address")
        display = ""
        if s[0] == '"':
            end = _end_of_quoted(s, 0)
            display = s[:end]
            s = s[end:].lstrip(_WS)
            if not s.startswith("<"):
                raise SipProtocolError("quoted display name without <URI>")
        elif "<" in s and not s.startswith("<"):
            idx = s.index("<")
            display = s[:idx].strip(_WS)
            if any(c not in TOKEN_CHARS and c not in _WS for c in display):
                raise SipProtocolError(f"invalid characters in display name {display!r}")
            s = s[idx:]
        if s.startswith("<"):
            end = s.find(">")
            if end < 0:
                raise SipProtocolError("unterminated <URI>")
            uri = s[1:end]
            rest = s[end + 1 :]
            angle = True
        else:
            uri, semi, after = s.partition(";")
            uri = uri.rstrip(_WS)
            rest = semi + after
            angle = False
            if "," in uri or "?" in uri:
                raise SipProtocolError(f"URI with ? or , must be enclosed in <>: {uri[:40]!r}")
        _check_uri(uri)
        return cls(display=display, uri=uri, params=parse_params(rest), angle=angle)

    def serialize(self) -> str:
        if self.angle or self.display:
            head = f"{self.display} <{self.uri}>" if self.display else f"<{self.uri}>"
        else:
            head = self.uri
        return head + serialize_params(self.params)

    def __str__(self) -> str:
        return self.serialize()

    @property
    def display_name(self) -> str:
        """The display name without quotes and escapes."""
        if self.display.startswith('"'):
            return unquote(self.display[1:-1])
        return self.display

    @property
    def tag(self) -> str | None:
        return param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return param(self.params, name)

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def with_tag(self, tag: str | None) -> NameAddr:
        params = drop_param(self.params, "tag")
        if tag is not None:
            params = (*params, ("tag", tag))
        return replace(self, params=params, angle=True)


def _check_uri(uri: str) -> None:
    if any(c in _WS or c in "\r\n<>" for c in uri):
        raise SipProtocolError(f"whitespace inside URI {uri[:40]!r}")
    scheme, colon, rest = uri.partition(":")
    if not colon or not scheme or not rest:
        raise SipProtocolError(f"invalid URI {uri[:40]!r}")
    if not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
        raise SipProtocolError(f"invalid URI scheme {scheme[:20]!r}")
    if scheme.lower() in ("sip", "sips"):
        SipUri.parse(uri)


@dataclass(frozen=True, slots=True, kw_only=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str = "UDP"
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise SipProtocolError(f"invalid Via sent-protocol in {text[:40]!r}")
        name, version = parts[0].strip(_WS), parts[1].strip(_WS)
        rest = parts[2].lstrip(_WS)
        i = 0
        while i < len(rest) and rest[i] in TOKEN_CHARS:
            i += 1
        transport = rest[:i]
        if not (is_token(name) and is_token(version) and transport):
            raise SipProtocolError(f"invalid Via sent-protocol in {text[:40]!r}")
        rest = rest[i:].lstrip(_WS)
        end = len(rest)
        for j, c in enumerate(rest):
            if c == ";":
                end = j
                break
        sent_by = rest[:end].strip(_WS)
        if not sent_by:
            raise SipProtocolError("Via without sent-by")
        host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
        params = parse_params(rest[end:])
        return cls(
            protocol=f"{name}/{version}",
            transport=transport.upper(),
            host=host,
            port=port,
            params=params,
        )

    def serialize(self) -> str:
        return (
            f"{self.protocol}/{self.transport} {join_hostport(self.host, self.port)}"
            f"{serialize_params(self.params)}"
        )

    def __str__(self) -> str:
        return self.serialize()

    @property
    def branch(self) -> str | None:
        return param(self.params, "branch")

    def param(self, name: str) -> str | None:
        return param(self.params, name)

    @property
    def sent_by(self) -> str:
        return join_hostport(self.host, self.port).lower()

    def with_params(self, **values: str | None) -> Via:
        params = self.params
        for name, value in values.items():
            params = set_param(params, name, value)
        return replace(self, params=params)


#: CSeq numbers are 32-bit but must stay below 2**31 (RFC 3261 section 8.1.1.5).
CSEQ_LIMIT = 2**31


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise SipProtocolError(f"invalid CSeq {text[:40]!r}")
        if len(parts[0]) > 10 or int(parts[0]) >= CSEQ_LIMIT:
            raise SipProtocolError("CSeq number too large")
        return cls(number=int(parts[0]), method=parts[1])

    def serialize(self) -> str:
        return f"{self.number} {self.method}"

    def __str__(self) -> str:
        return self.serialize()


def parse_auth(text: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", ...`` into the scheme and its (unquoted) parameters."""
    text = text.strip(_WS)
    scheme, _, rest = text.partition(" ")
    if not is_token(scheme):
        raise SipProtocolError("invalid authentication scheme")
    values: dict[str, str] = {}
    i = 0
    rest = rest.strip(_WS)
    n = len(rest)
    while i < n:
        while i < n and rest[i] in _WS + ",":
            i += 1
        start = i
        while i < n and rest[i] in TOKEN_CHARS:
            i += 1
        name = rest[start:i].lower()
        while i < n and rest[i] in _WS:
            i += 1
        if not name or i >= n or rest[i] != "=":
            if not name and i >= n:
                break
            raise SipProtocolError("invalid authentication parameter")
        i += 1
        while i < n and rest[i] in _WS:
            i += 1
        if i < n and rest[i] == '"':
            end = _end_of_quoted(rest, i)
            value = unquote(rest[i + 1 : end - 1])
            i = end
        else:
            start = i
            while i < n and rest[i] not in _WS + ",":
                i += 1
            value = rest[start:i]
        values[name] = value
        while i < n and rest[i] in _WS:
            i += 1
        if i < n and rest[i] != ",":
            raise SipProtocolError("invalid authentication parameter list")
    return scheme, values
