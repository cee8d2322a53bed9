"""The recording engine: one lifecycle that every source of recordings feeds.

Phone sessions (:mod:`callrec.server`), SIP calls (:mod:`callrec.sip`) and USB imports
(:mod:`callrec.usb`) describe a recording with a :class:`RecordingSpec`, feed it through a
:class:`MediaSource`, and leave the rest to :class:`RecordingEngine`: admission, the file name
claimed by creating the file, the files and their sidecar, the writes and flushes off the event
loop, the counter checkpoints, the finish and its stop reason, the catalogue row (record first:
the :class:`Journal` applies it on the one :class:`CatalogWriter` when the catalogue can take
it), and the observers of the :class:`LiveRegistry`. Front ends are given
what they need of it (the engine, the port range, the writer, the read-only :class:`LiveView`)
by the composition root, :mod:`callrec.service`.
"""

from callrec.engine.admission import Admission
from callrec.engine.engine import RecordingEngine
from callrec.engine.journal import Journal, JournalStatus
from callrec.engine.live import FINISHED, STARTED, LiveRegistry, LiveSession, LiveView, Observer
from callrec.engine.ports import PortRange
from callrec.engine.recording import Finished, Recording
from callrec.engine.spec import (
    STOP_REASONS,
    Companion,
    FileSource,
    MediaSource,
    Original,
    RecordingSpec,
)
from callrec.engine.writer import CatalogWriter

__all__ = [
    "FINISHED",
    "STARTED",
    "STOP_REASONS",
    "Admission",
    "CatalogWriter",
    "Companion",
    "FileSource",
    "Finished",
    "Journal",
    "JournalStatus",
    "LiveRegistry",
    "LiveSession",
    "LiveView",
    "MediaSource",
    "Observer",
    "Original",
    "PortRange",
    "Recording",
    "RecordingEngine",
    "RecordingSpec",
]
