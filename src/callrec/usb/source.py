"""A phone-local (USB) file as the engine's media source: all its audio is there already."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from callrec.media.localfile import LocalFileInfo, decode
from callrec.rtp.counters import StreamCounters


class LocalFileSource:
    """The decoded units of one phone-local file, for :meth:`RecordingEngine.record_file`."""

    media_port: int | None = None

    def __init__(self, info: LocalFileInfo, data: bytes) -> None:
        self.info = info
        self._data = data
        #: The file was cut short or its header disagrees with its size.
        self.damaged = info.damaged
        self._counters = StreamCounters()

    def chunks(self) -> Iterator[Sequence[bytes]]:
        """Mono PCM at the codec's rate, ten seconds at a time (one decoder for the file)."""
        for pcm in decode(self.info, self._data):
            yield (pcm,)

    def pump(self, now: float) -> Sequence[bytes]:
        return ()

    def drain(self, now: float) -> Sequence[bytes]:
        return ()

    def cut_points(self) -> Sequence[int]:
        return ()

    def counters(self) -> StreamCounters:
        return self._counters

    def close(self) -> None:
        self._data = b""
