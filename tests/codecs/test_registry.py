"""The codec table: names, aliases, payload types, and the common Codec behaviour."""

from __future__ import annotations

import pytest

from callrec.codecs import (
    CODECS,
    G722,
    G723,
    G729,
    PCMA,
    PCMU,
    Codec,
    Decoder,
    Encoder,
    codec_for_payload_type,
    get_codec,
)
from callrec.exceptions import CallrecError, UnsupportedCodecError


def test_codecs_maps_canonical_names_to_codecs() -> None:
    assert list(CODECS) == [
        "PCMU", "PCMA", "G722",
        "G726-16", "G726-24", "G726-32", "G726-40",
        "AAL2-G726-16", "AAL2-G726-24", "AAL2-G726-32", "AAL2-G726-40",
        "G729", "G723",
    ]  # fmt: skip
    for name, codec in CODECS.items():
        assert codec.name == name


@pytest.mark.parametrize(
    ("codec", "payload_type", "clock_rate", "sample_rate"),
    [
        (PCMU, 0, 8000, 8000),
        (PCMA, 8, 8000, 8000),
        (G722, 9, 8000, 16000),
        (G729, 18, 8000, 8000),
        (G723, 4, 8000, 8000),
    ],
    ids=["PCMU", "PCMA", "G722", "G729", "G723"],
)
def test_codecs_carry_their_rfc_3551_parameters(
    codec: Codec, payload_type: int, clock_rate: int, sample_rate: int
) -> None:
    assert codec.payload_type == payload_type
    assert codec.clock_rate == clock_rate
    assert codec.sample_rate == sample_rate
    assert codec_for_payload_type(payload_type) is codec


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PCMA", PCMA),
        ("pcma", PCMA),
        ("G711A", PCMA),
        ("g.711a", PCMA),
        ("alaw", PCMA),
        ("PCMU", PCMU),
        ("Pcmu", PCMU),
        ("G711U", PCMU),
        ("G.711U", PCMU),
        ("ulaw", PCMU),
        ("mulaw", PCMU),
        ("G722", G722),
        ("g722", G722),
        ("G.722", G722),
        ("G729", G729),
        ("g729a", G729),
        ("G729AB", G729),
        ("G.729B", G729),
        ("G.729", G729),
        ("G723", G723),
        ("g723.1", G723),
        ("G.723.1", G723),
        ("G7231", G723),
    ],
)
def test_get_codec_ignores_case_and_knows_aliases(name: str, expected: Codec) -> None:
    assert get_codec(name) is expected


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("G726-32", "G726-32"),
        ("g726-32", "G726-32"),
        ("G726_32", "G726-32"),
        ("g726/32", "G726-32"),
        ("G.726-32", "G726-32"),
        ("G72632", "G726-32"),
        ("G726", "G726-32"),
        ("G721", "G726-32"),
        ("G726-16", "G726-16"),
        ("g726_24", "G726-24"),
        ("G726-40", "G726-40"),
        ("AAL2-G726-32", "AAL2-G726-32"),
        ("aal2_g726_32", "AAL2-G726-32"),
        ("AAL2-G726-16", "AAL2-G726-16"),
    ],
)
def test_get_codec_knows_how_phones_spell_g726(name: str, canonical: str) -> None:
    assert get_codec(name) is CODECS[canonical]


def test_g726_has_no_static_payload_type() -> None:
    g726 = get_codec("G726-32")
    assert g726.dynamic_payload_type
    # RFC 1890's type 2 is the one the stream expects until the phone sends another.
    assert g726.payload_type == 2
    with pytest.raises(UnsupportedCodecError):
        codec_for_payload_type(2)


@pytest.mark.parametrize(
    "name", ["XYZ", "", "opus", "G728", "G726-33", "G729C", " PCMA", "PCMA/8000"]
)
def test_get_codec_refuses_other_names(name: str) -> None:
    with pytest.raises(UnsupportedCodecError) as info:
        get_codec(name)

    assert str(info.value) == f"unsupported codec {name!r}"
    assert info.value.reason == "unsupported_codec"
    assert isinstance(info.value, CallrecError)


def test_unsupported_codec_message_quotes_the_name() -> None:
    with pytest.raises(UnsupportedCodecError, match=r"^unsupported codec 'XYZ'$"):
        get_codec("XYZ")


@pytest.mark.parametrize("payload_type", [2, 3, 15, 96, 127, -1, 128])
def test_codec_for_payload_type_refuses_other_types(payload_type: int) -> None:
    with pytest.raises(UnsupportedCodecError, match=rf"^unsupported payload type {payload_type}$"):
        codec_for_payload_type(payload_type)


def test_codecs_table_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        CODECS["OPUS"] = PCMA  # type: ignore[index]


@pytest.mark.parametrize("codec", CODECS.values(), ids=list(CODECS))
def test_codec_attributes_cannot_be_changed(codec: Codec) -> None:
    with pytest.raises(AttributeError):
        codec.name = "OPUS"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        codec.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("codec", CODECS.values(), ids=list(CODECS))
def test_each_call_makes_a_fresh_decoder_and_encoder(codec: Codec) -> None:
    assert isinstance(codec.decoder(), Decoder)
    assert codec.decoder() is not codec.decoder()
    if codec is G729:
        return  # FFmpeg has no G.729 encoder
    assert isinstance(codec.encoder(), Encoder)
    assert codec.decoder() is not codec.decoder()
    assert codec.encoder() is not codec.encoder()


@pytest.mark.parametrize("codec", CODECS.values(), ids=list(CODECS))
def test_silence_is_zero_samples(codec: Codec) -> None:
    assert codec.silence(0) == b""
    assert codec.silence(3) == b"\x00" * 6
    with pytest.raises(ValueError, match=r"^negative sample count -1$"):
        codec.silence(-1)


@pytest.mark.parametrize(
    ("codec", "units", "samples"),
    [(PCMA, 160, 160), (PCMU, 240, 240), (G722, 160, 320), (G722, 1, 2), (G722, 0, 0)],
)
def test_samples_for_timestamp_scales_by_the_two_clocks(
    codec: Codec, units: int, samples: int
) -> None:
    assert codec.samples_for_timestamp(units) == samples
    assert len(codec.silence(codec.samples_for_timestamp(units))) == 2 * samples


@pytest.mark.parametrize("codec", CODECS.values(), ids=list(CODECS))
def test_a_decoded_payload_spans_its_timestamp_units(codec: Codec) -> None:
    payload = bytes(range(160))

    pcm = codec.decoder().decode(payload)

    assert len(pcm) == 2 * codec.samples_for_timestamp(codec.timestamp_units(len(payload)))


def test_repr_names_the_codec() -> None:
    assert repr(G722) == "<G722Codec G722 pt=9>"
