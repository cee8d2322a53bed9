from __future__ import annotations

import pytest

from callrec.control.message import ControlMessage
from callrec.exceptions import ControlProtocolError

START = (
    b"cmd=RecordStartRequest&id=15082&device=0c383e0e709a&remote_number=2011&remote_name="
    b"&local_number=3001&local_name=&dir=out&codec=PCMA"
)


def test_round_trip_of_a_phone_message() -> None:
    msg = ControlMessage.parse(START)
    assert msg.cmd == "RecordStartRequest"
    assert msg.get("id") == "15082"
    assert msg.get("remote_name") == ""
    assert [k for k, _ in msg] == [
        "cmd", "id", "device", "remote_number", "remote_name",
        "local_number", "local_name", "dir", "codec",
    ]  # fmt: skip
    assert msg.serialize() == START


def test_url_decoding_plus_and_percent() -> None:
    msg = ControlMessage.parse(b"cmd=X&remote_name=John+Smith&local_name=%D0%98%D0%B2%D0%B0%D0%BD")
    assert msg.get("remote_name") == "John Smith"
    assert msg.get("local_name") == "Иван"
    assert ControlMessage.parse(msg.serialize()) == msg


def test_non_utf8_bytes_are_kept_as_latin1() -> None:
    msg = ControlMessage.parse(b"cmd=X&remote_name=caf\xe9%FF")
    assert msg.get("remote_name") == "caf\xe9\xff"


def test_unknown_keys_are_kept_and_first_duplicate_wins() -> None:
    msg = ControlMessage.parse(b"cmd=X&vendor_thing=1&id=a&id=b")
    assert msg.get("vendor_thing") == "1"
    assert msg.get("id") == "a"


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (b"", "bad_request", "empty control message"),
        (b"\r\n", "bad_request", "empty control message"),
        (b"garbage&cmd=X", "bad_request", "is not key=value"),
        (b"=value", "bad_request", "has no key"),
        (b"&".join(b"k%d=v" % i for i in range(65)), "too_many_fields", "more than 64"),
    ],
)
def test_bad_messages_raise_with_reason(data: bytes, reason: str, text: str) -> None:
    with pytest.raises(ControlProtocolError, match=text) as info:
        ControlMessage.parse(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"cmd=X&remote_name=Tom & Jerry&id=1", "Tom & Jerry"),
        (b"cmd=X&remote_name=AT&T&id=1", "AT&T"),
        (b"cmd=X&remote_name=Tom%20&%20Jerry&id=1", "Tom & Jerry"),
        (b"cmd=X&remote_name=A&B&C&id=1", "A&B&C"),
    ],
)
def test_a_piece_without_equals_belongs_to_the_value_before(data: bytes, name: str) -> None:
    msg = ControlMessage.parse(data)
    assert msg.get("remote_name") == name
    assert msg.get("id") == "1" and msg.cmd == "X"
