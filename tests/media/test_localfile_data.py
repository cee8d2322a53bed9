"""The committed hand-built edge files: what the tool makes, and what the reader says of each."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from callrec.exceptions import LocalFileError
from callrec.media.localfile import decode, scan
from tests.support.data import LOCALFILE_DATA

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_localfile_testdata.py"


def _build() -> dict[str, bytes]:
    spec = importlib.util.spec_from_file_location("make_localfile_testdata", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    build: Callable[[], dict[str, bytes]] = module.build
    return build()


def test_committed_files_are_what_the_tool_makes() -> None:
    built = _build()
    committed = {p.name for p in LOCALFILE_DATA.iterdir() if p.suffix == ".wav"}
    assert committed == set(built)
    for name, data in built.items():
        assert (LOCALFILE_DATA / name).read_bytes() == data, f"{name}: rerun {TOOL.name}"


#: name -> (units, duration, damaged, problems) for the files that can be read.
READABLE = {
    "pcma-rtp.wav": (50, 1.0, False, ()),
    "g722-bare.wav": (50, 1.0, False, ()),
    "big-endian.wav": (50, 1.0, False, ()),
    "truncated.wav": (
        30,
        0.6,
        True,
        (
            "file cut short: header announces 8600 data bytes, the file holds 5200; "
            "read to the last whole unit",
            "40 bytes at the end are a partial unit; ignored",
        ),
    ),
    "lying-datasize.wav": (
        50,
        1.0,
        True,
        (
            "header announces 800 data bytes but the file holds 8000; read 8000 "
            "(header not updated, e.g. power lost while recording)",
        ),
    ),
    "datasize-too-big.wav": (
        50,
        1.0,
        True,
        (
            "file cut short: header announces 32000 data bytes, the file holds 8000; "
            "read to the last whole unit",
        ),
    ),
    "unknown-codec.wav": (
        50,
        1.0,
        False,
        (
            "codec 'iLBC' is not supported (callrec decodes PCMU, PCMA, G722, G726-16, G726-24, "
            "G726-32, G726-40, AAL2-G726-16, AAL2-G726-24, AAL2-G726-32, AAL2-G726-40, G729, "
            "G723): the audio cannot be decoded",
        ),
    ),
}

#: name -> the one message for files that are not phone recordings at all.
UNREADABLE = {
    "zero-length.wav": "file is empty (0 bytes): not a phone recording",
    "cut-in-header.wav": (
        "file is 40 bytes, shorter than the 76-byte header of a phone recording "
        "(cut short, or another kind of file)"
    ),
    "not-this-format.wav": (
        "the 64-byte codec field has no NUL terminator (b'These are not th'...): "
        "not a phone recording"
    ),
    "standard.wav": (
        "a standard RIFF/WAVE file, not a phone recording: any player opens it as it is"
    ),
}


def test_every_committed_file_is_covered() -> None:
    assert set(READABLE) | set(UNREADABLE) == set(_build())


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_edge_file(name: str) -> None:
    units, duration, damaged, problems = READABLE[name]
    info = scan((LOCALFILE_DATA / name).read_bytes())
    assert (info.units, info.duration, info.damaged, info.problems) == (
        units,
        pytest.approx(duration),
        damaged,
        problems,
    )


def test_big_endian_file_decodes_like_its_little_endian_twin() -> None:
    data = (LOCALFILE_DATA / "big-endian.wav").read_bytes()
    info = scan(data)
    assert info.header.byte_order == "big" and info.header.codec == "PCMU"
    assert len(b"".join(decode(info, data))) == 2 * 8000


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_edge_file(name: str) -> None:
    with pytest.raises(LocalFileError) as caught:
        scan((LOCALFILE_DATA / name).read_bytes())
    assert str(caught.value) == UNREADABLE[name]
