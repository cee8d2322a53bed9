"""Loading the written-down RFC messages of ``tests/data/sip`` as wire bytes."""

from __future__ import annotations

from tests.support.data import SIP_DATA

#: Stand-ins for what the RFC shows in its own notation (non-printable or repeated bytes).
SUBSTITUTES = {
    b"<BEL>": b"\x07",
    b"<NUL>": b"\x00",
    b"<DEL>": b"\x7f",
    b"<SP>": b" ",
    b"<UTF8-WORK>": "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439".encode(),
    b"<UTF8-BIG-CHINESE>": "\ufeff\u5927\u505c\u96fb".encode(),
    b"<UTF8-HUNDRED-EIGHTEEN>": "\u4e00\u767e\u4e00\u5341\u516b".encode(),
    b"<REPEAT-0-100>": b"0" * 100,
    b"<BINARY-0-255>": bytes(range(256)),
}


def load(name: str) -> bytes:
    """``rfc4475/wsinv`` -> the message as sent: CRLF line ends, stand-ins replaced,
    ``<LEN>`` replaced by the real length of the body."""
    text = (SIP_DATA / f"{name}.sip").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for mark, raw in SUBSTITUTES.items():
        text = text.replace(mark, raw)
    if b"<LEN>" in text:
        head, sep, body = text.partition(b"\r\n\r\n")
        text = head.replace(b"<LEN>", str(len(body)).encode()) + sep + body
    return text


def names(folder: str) -> list[str]:
    return sorted(p.stem for p in (SIP_DATA / folder).glob("*.sip"))
