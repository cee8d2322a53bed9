"""Fuzz the phone-local (USB) file reader: any bytes scan or raise LocalFileError."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from callrec.exceptions import LocalFileError
    from callrec.media.localfile import decode, scan


def test_one_input(data: bytes) -> None:
    try:
        info = scan(data)
    except LocalFileError:
        return
    try:
        for _chunk in decode(info, data):
            pass
    except LocalFileError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
