"""Fuzz the TCP control core: framing, parsing and the session state table."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from callrec.control import ControlConnection, ControlMessage, StartRequest
    from callrec.exceptions import ControlProtocolError


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(ControlProtocolError):
        ControlMessage.parse(data)
    conn = ControlConnection(max_message_bytes=512, message_idle=0.03)
    now = 0.0
    # Split the input at arbitrary points into reads with arbitrary pauses between them.
    for i in range(0, len(data), 7):
        now += (data[i] % 5) / 100
        conn.receive_data(data[i : i + 7], now)
        while (event := conn.next_event(now)) is not None:
            if isinstance(event, StartRequest) and data[i] & 1:
                conn.accept_start(event, server="127.0.0.1", port=41000)
    if data and data[-1] & 1:
        conn.receive_eof(now)  # a FIN: what is buffered is a whole message
    while conn.next_event(now + 1) is not None:
        pass
    conn.connection_lost()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
