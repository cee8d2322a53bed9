"""Type stub of callrec's G.722 decoder, written in C (``_g722.c``)."""

from typing_extensions import Buffer

class Decoder:
    """The state of one G.722 stream's decoder (64 kbit/s, 16 kHz output)."""

    def __init__(self) -> None: ...
    def decode(self, payload: Buffer, /) -> bytes:
        """The int16 little-endian PCM of ``payload``, continuing from the bytes before."""
