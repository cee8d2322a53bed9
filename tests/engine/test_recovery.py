"""Start-up recovery of rows a crash left at status 'recording'."""

from __future__ import annotations

import wave
from pathlib import Path

from callrec.catalog import Catalog, StreamCounters
from callrec.engine.recovery import recover_unfinished
from callrec.media.wav import WavWriter
from tests.support.catalog import new_recording


def test_recovery_outcomes(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.migrate()
    # 1: a G.722 file with flushed audio and an unflushed tail, as kill -9 leaves it.
    good = catalog.create_recording(new_recording(1, sample_rate=16000, codec="G722"))
    writer = WavWriter(root / new_recording(1).path, sample_rate=16000)
    writer.write(b"\x01\x00" * 16000)
    writer.flush()
    writer.write(b"\x02\x00" * 800)  # never flushed: lost with the process
    writer.abort()  # the process is gone, and with it the file's lock and its buffer
    catalog.checkpoint({good: StreamCounters(received=50, lost=1)})
    # 2: the row was written, the file never was.
    missing = catalog.create_recording(new_recording(2))
    # 3: something that is not a WAV at that path.
    junk = catalog.create_recording(new_recording(3))
    (root / new_recording(3).path).write_bytes(b"not a wav file at all" * 10)
    # 4: a file created but empty (crash right after the header... or before it).
    empty = catalog.create_recording(new_recording(4, sample_rate=16000, codec="G722"))
    (root / new_recording(4).path).write_bytes(b"")

    report = recover_unfinished(catalog, root)
    assert len(report) == 4
    rows = {r.id: r for r in catalog.find()}
    assert rows[good].status == "recovered" and rows[good].stop_reason == "crash"
    assert rows[good].duration == 1.0 and rows[good].packets_received == 50
    with wave.open(str(root / rows[good].path), "rb") as w:
        assert (w.getframerate(), w.getnframes()) == (16000, 16000)
    assert rows[missing].status == "failed" and "file missing" in report[1]
    assert rows[junk].status == "failed" and "cannot repair" in report[2]
    assert rows[empty].status == "recovered" and rows[empty].duration == 0.0
    with wave.open(str(root / rows[empty].path), "rb") as w:
        assert w.getframerate() == 16000
    assert catalog.unfinished() == []
    assert recover_unfinished(catalog, root) == []
    catalog.close()


def test_recovery_leaves_a_file_a_live_process_writes(tmp_path: Path) -> None:
    """An orphaned worker (or another process) still writes it: its row is not a crash's."""
    root = tmp_path / "rec"
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.migrate()
    live = catalog.create_recording(new_recording(1))
    writer = WavWriter(root / new_recording(1).path, sample_rate=8000)
    writer.write(b"\x01\x00" * 800)
    writer.flush()
    assert recover_unfinished(catalog, root) == []
    assert [r.id for r in catalog.unfinished()] == [live]
    writer.abort()  # now its process is gone
    assert len(recover_unfinished(catalog, root)) == 1
    assert catalog.unfinished() == []
    catalog.close()
