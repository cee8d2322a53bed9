"""Fuzz the SIP message parser, the TCP stream framer and the SDP parser: any bytes parse or
raise SipProtocolError."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from callrec.sip.errors import SipProtocolError
    from callrec.sip.message import StreamFramer, parse_message
    from callrec.sip.sdp import SessionDescription


def test_one_input(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipProtocolError:
        pass
    else:
        parse_message(message.serialize())
    with contextlib.suppress(SipProtocolError):
        SessionDescription.parse(data)
    framer = StreamFramer(max_message=4096)
    try:
        for i in range(0, len(data), 13):
            framer.receive_data(data[i : i + 13])
            while (chunk := framer.next_message()) is not None:
                with contextlib.suppress(SipProtocolError):
                    parse_message(chunk, stream=True)
    except SipProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
