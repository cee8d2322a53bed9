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
    # An unknown command is answered in its own name, and does not count as bad input.
    assert events[2].answer == b"cmd=BogusResponse&id=1&result=failed&reason=unknown_command\0"
    assert events[2].unknown_command


def test_oversized_message_is_refused_then_skipped_to_its_end() -> None:
    conn = ControlConnection(max_message_bytes=1024, message_idle=IDLE)
    (bad,) = feed(conn, b"x" * (1 << 20), bytewise=False)
    assert isinstance(bad, BadRequest)
    assert bad.fatal and bad.reason == "too_large"
    assert bad.answer == b"cmd=RecordStartResponse&id=&result=failed&reason=too_large&server=&port="
    # The rest of it, up to its terminator, is dropped; what follows is read as before.
    assert feed(conn, b"y" * 5000 + b"&cmd=RecordStopRequest\n", bytewise=False) == []
    (start,) = feed(conn, START + b"\n", bytewise=False)
    assert isinstance(start, StartRequest) and not conn.broken


def test_oversized_message_ends_at_a_pause_too() -> None:
    conn = ControlConnection(max_message_bytes=1024, message_idle=IDLE)
    feed(conn, b"x" * 4096, bytewise=False, now=1.0)
    assert feed(conn, b"x" * 4096, bytewise=False, now=1.0 + IDLE / 2) == []
    (start,) = feed(conn, START, bytewise=False, now=2.0) + drain_idle(conn, 3.0)
    assert isinstance(start, StartRequest)


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
    assert dup.answer == (
        b"cmd=RecordStartResponse&id=15082&result=failed&reason=duplicate_id&server=&port=\n"
    )


def test_stop_after_server_ended_session_is_answered_success() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.accept_start(start, server="h", port=1)
    conn.end_session("15082")  # max duration reached
    # The phone still believes it records: the connection is held for its stop.
    assert conn.active_sessions == [] and conn.holds_sessions
    (stop,) = feed(conn, STOP + b"\n", bytewise=False)
    assert isinstance(stop, StopRequest) and not stop.was_recording
    assert stop.state_before is SessionState.ENDED
    assert conn.answer_stop(stop) == b"cmd=RecordStopResponse&id=15082&result=success\n"
    assert not conn.holds_sessions


def test_stop_for_an_id_this_connection_never_saw_is_left_to_the_driver() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (stop,) = feed(conn, STOP + b"\n", bytewise=False)
    assert isinstance(stop, StopRequest) and stop.state_before is None
    assert conn.session_state("15082") is None  # nothing is kept of it
    assert conn.refuse_stop(stop, reason="unknown_id") == (
        b"cmd=RecordStopResponse&id=15082&result=failed&reason=unknown_id\n"
    )


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_end_of_stream_ends_an_unterminated_message(bytewise: bool) -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.accept_start(start, server="h", port=1)
    assert feed(conn, STOP, bytewise=bytewise, now=5.0) == []
    conn.receive_eof(5.0)  # FIN at once: no quiet time has passed
    (stop,) = drain_idle(conn, 5.0)
    assert isinstance(stop, StopRequest) and stop.was_recording
    assert stop.terminator == b"" and conn.at_eof
    assert conn.connection_lost() == []  # the stop, not the close, ended the session


def test_unknown_command_never_touches_a_session() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START + b"\n", bytewise=False)
    conn.accept_start(start, server="h", port=1)
    for _ in range(20):
        (ev,) = feed(conn, b"cmd=KeepAliveRequest&id=15082\n", bytewise=False)
        assert isinstance(ev, BadRequest) and ev.unknown_command and not ev.fatal
        assert ev.answer == b"cmd=KeepAliveResponse&id=15082&result=failed&reason=unknown_command\n"
    assert conn.session_state("15082") is SessionState.RECORDING and not conn.broken


def test_unencoded_ampersands_belong_to_the_value_before() -> None:
    conn = ControlConnection(message_idle=IDLE)
    raw = START.replace(b"remote_name=", b"remote_name=Tom & Jerry").replace(
        b"local_name=", b"local_name=AT&T"
    )
    (start,) = feed(conn, raw + b"\n", bytewise=False)
    assert isinstance(start, StartRequest)
    assert start.fields["remote_name"] == "Tom & Jerry"
    assert start.fields["local_name"] == "AT&T"
    assert start.fields["codec"] == "PCMA"


def test_an_empty_id_is_the_connection_s_session() -> None:
    conn = ControlConnection(message_idle=IDLE)
    (start,) = feed(conn, START.replace(b"id=15082", b"id=") + b"\n", bytewise=False)
    assert isinstance(start, StartRequest) and start.session_id == ""
    assert conn.accept_start(start, server="h", port=7) == (
        b"cmd=RecordStartResponse&id=&result=success&reason=&server=h&port=7\n"
    )
    (stop,) = feed(conn, STOP.replace(b"id=15082", b"id=") + b"\n", bytewise=False)
    assert isinstance(stop, StopRequest) and stop.was_recording
    assert conn.answer_stop(stop) == b"cmd=RecordStopResponse&id=&result=success\n"


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
