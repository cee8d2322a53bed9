"""The control connection core: every framing, fed whole and one byte at a time."""

from __future__ import annotations

import pytest

from callrec.control import (
    BadRequest,
    ControlConnection,
    ControlMessage,
    SessionState,
    StartRequest,
    StopRequest,
)

START = (
    b"cmd=RecordStartRequest&id=15082&device=0c383e0e709a&remote_number=2011&remote_name="
    b"&local_number=3001&local_name=&dir=out&codec=PCMA"
)
STOP = (
    b"cmd=RecordStopRequest&id=15082&remote_number=2011&remote_name=&local_number=3001"
    b"&local_name=&reason=hangup"
)
IDLE = 0.03


def feed(conn: ControlConnection, data: bytes, *, bytewise: bool, now: float = 0.0) -> list:
    events = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        conn.receive_data(chunk, now)
        while (ev := conn.next_event(now)) is not None:
            events.append(ev)
    return events


def drain_idle(conn: ControlConnection, now: float) -> list:
    events = []
    while (ev := conn.next_event(now)) is not None:
        events.append(ev)
    return events


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("term", [b"\r\n", b"\n", b"\0"], ids=["crlf", "lf", "nul"])
def test_terminated_messages(term: bytes, bytewise: bool) -> None:
    conn = ControlConnection(message_idle=IDLE)
    events = feed(conn, START + term, bytewise=bytewise)
    assert len(events) == 1
    start = events[0]
    assert isinstance(start, StartRequest)
    assert start.session_id == "15082"
    assert start.terminator == term
    answer = conn.accept_start(start, server="127.0.0.1", port=41000)
    assert answer == (
        b"cmd=RecordStartResponse&id=15082&result=success&reason=&server=127.0.0.1&port=41000"
        + term
    )
    assert conn.session_state("15082") is SessionState.RECORDING
    (stop,) = feed(conn, STOP + term, bytewise=bytewise)
    assert isinstance(stop, StopRequest) and stop.was_recording
    assert stop.fields["reason"] == "hangup"
    assert conn.answer_stop(stop) == b"cmd=RecordStopResponse&id=15082&result=success" + term


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_unterminated_message_completes_after_idle_time(bytewise: bool) -> None:
    conn = ControlConnection(message_idle=IDLE)
    assert feed(conn, START, bytewise=bytewise, now=10.0) == []
    assert conn.deadline() == pytest.approx(10.0 + IDLE)
    assert drain_idle(conn, 10.0 + IDLE / 2) == []
    (start,) = drain_idle(conn, 10.0 + IDLE)
    assert isinstance(start, StartRequest)
    assert start.terminator == b""
    assert conn.deadline() is None
    assert conn.accept_start(start, server="10.0.0.1", port=5).endswith(b"port=5")


def test_partial_reads_with_pauses_shorter_than_idle_join() -> None:
    conn = ControlConnection(message_idle=IDLE)
    conn.receive_data(START[:20], 1.0)
    assert conn.next_event(1.0 + IDLE * 0.9) is None
    conn.receive_data(START[20:], 1.0 + IDLE * 0.9)
    assert conn.next_event(1.0 + IDLE * 1.5) is None
    (start,) = drain_idle(conn, 1.0 + IDLE * 2)
    assert isinstance(start, StartRequest)
    assert start.message.serialize() == START


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_several_messages_in_one_read(bytewise: bool) -> None:
    conn = ControlConnection(message_idle=IDLE)
    start2 = START.replace(b"id=15082", b"id=777")
    events = feed(
        conn, START + b"\r\n" + start2 + b"\n\r\n" + b"cmd=Bogus&id=1\0", bytewise=bytewise
    )
    assert [type(e) for e in events] == [StartRequest, StartRequest, BadRequest]
    assert [e.session_id for e in events[:2]] == ["15082", "777"]
    assert (
        events[2].answer == b"cmd=RecordStartResponse&id=1&result=failed&reason=unknown_command\0"
    )


def test_oversized_message_is_refused_and_fatal() -> None:
    conn = ControlConnection(max_message_bytes=1024, message_idle=IDLE)
    (bad,) = feed(conn, b"x" * (1 << 20), bytewise=False)
    assert isinstance(bad, BadRequest)
    assert bad.fatal and bad.reason == "too_large"
    assert bad.answer == b"cmd=RecordStartResponse&result=failed&reason=too_large"
    assert conn.broken
    assert feed(conn, START + b"\n", bytewise=False) == []


def test_message_at_the_size_limit_is_accepted() -> None:
    pad = b"&x=" + b"a" * (1024 - len(START) - 3)
    conn = ControlConnection(max_message_bytes=1024, message_idle=IDLE)
    (ev,) = feed(conn, START + pad + b"\n", bytewise=False)
    assert isinstance(ev, StartRequest)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe\x00garbage", "bad_request"),
        (b"id=1&codec=PCMA\n", "bad_request"),
        (b"cmd=RecordStartRequest&codec=PCMA\n", "bad_request"),
        (b"cmd=RecordStopRequest&id=nope\n", "unknown_id"),
        (b"cmd=Hello&id=1\n", "unknown_command"),
    ],
)
def test_bad_requests_get_failed_answers(data: bytes, reason: str) -> None:
    conn = ControlConnection(message_idle=IDLE)
    events = feed(conn, data, bytewise=False) + drain_idle(conn, 1.0)
    assert events and all(isinstance(e, BadRequest) for e in events)
    assert events[-1].reason == reason
    assert b"result=failed&reason=" + reason.encode() in events[-1].answer
    assert not conn.broken


def test_duplicate_id_while_recording() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.accept_start(start, server="h", port=1)
    (dup,) = feed(conn, START + b"\n", bytewise=False)
    assert isinstance(dup, BadRequest) and dup.reason == "duplicate_id"
    assert dup.answer == b"cmd=RecordStartResponse&id=15082&result=failed&reason=duplicate_id\n"


def test_stop_after_server_ended_session_is_answered_success() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.accept_start(start, server="h", port=1)
    conn.end_session("15082")  # max duration reached
    (stop,) = feed(conn, STOP + b"\n", bytewise=False)
    assert isinstance(stop, StopRequest) and not stop.was_recording


def test_id_reuse_after_stop_and_refused_start() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.reject_start(start, reason="busy")
    assert conn.session_state("15082") is SessionState.CLOSED
    (again,) = feed(conn, START + b"\n", bytewise=False)
    assert isinstance(again, StartRequest)


def test_connection_lost_ends_open_sessions() -> None:
    conn = ControlConnection(message_idle=IDLE)
    a, b = feed(conn, START + b"\n" + START.replace(b"15082", b"9") + b"\n", bytewise=False)
    conn.accept_start(a, server="h", port=1)
    conn.accept_start(b, server="h", port=2)
    (_stop,) = feed(conn, STOP + b"\n", bytewise=False)
    assert conn.connection_lost() == ["9"]
    assert conn.active_sessions == []


def test_blank_lines_between_messages_are_ignored() -> None:
    conn = ControlConnection(message_idle=IDLE)
    assert feed(conn, b"\r\n\n\0", bytewise=False) == []
    assert drain_idle(conn, 5.0) == []


def test_answer_values_are_url_encoded() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START.replace(b"id=15082", b"id=a%26b") + b"\n", bytewise=False)
    assert start.session_id == "a&b"
    answer = conn.reject_start(start, reason="busy")
    assert ControlMessage.parse(answer.strip()).get("id") == "a&b"
