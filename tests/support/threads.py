"""Which threads did a kind of work: spies for "this never runs on the event loop"."""

from __future__ import annotations

import threading

import pytest

from callrec.media.wav import WavWriter


def flush_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the name of the thread of every :meth:`WavWriter.flush`, in order."""
    names: list[str] = []
    real = WavWriter.flush

    def flush(self: WavWriter) -> None:
        names.append(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(WavWriter, "flush", flush)
    return names
