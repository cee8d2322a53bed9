"""Transcripts (issue 18): the words said in a recording, stored and searched.

``transcripts`` holds one row per transcribed recording: which engine and language made it,
how long the audio was and how long transcribing took, and ``text``, the words in time order
joined by spaces, which the full-text index covers. ``transcript_words`` holds each word with
its channel (0: left or mono, 1: right), speaker (``caller``/``callee`` on a stereo SIP
recording, empty on a mono one), start and end in seconds from the recording's start, and
confidence (0-1). Migration ``0011`` creates both; deleting the recording deletes both.

Writing a transcript replaces the one before, in one transaction
(:meth:`~callrec.catalog.transcriptstore.TranscriptStore.replace`): a job that runs twice
leaves one transcript.

The full-text index, outside the ORM models (schema comparisons skip it,
:func:`callrec.catalog.search_index.include_name`):

* SQLite: an FTS5 table ``transcripts_fts`` (``unicode61`` words, diacritics folded) whose
  rowid is the recording id, kept in step with ``transcripts`` by triggers.
* PostgreSQL: a GIN index over ``to_tsvector('simple', text)``: words, lower case, no
  stemming (the transcript's language varies; a word said is the word searched).

Both match whole words; :func:`transcript_match` builds the condition the recording search
adds (:mod:`callrec.catalog.browsing`), and :func:`read_snippets` the phrase shown beside a
hit. The queries over a catalogue are :class:`callrec.catalog.transcriptstore.TranscriptStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import (
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from callrec.catalog.models import Base, CleanText, Recording, UTCDateTime
from callrec.catalog.records import utcnow
from callrec.exceptions import CatalogError

FTS_TABLE: Final = "transcripts_fts"
PG_INDEX: Final = "ix_transcripts_search_fts"
#: PostgreSQL text search configuration: words as said, lower case, no stemming.
PG_CONFIG: Final = "simple"
#: Speakers of a stereo SIP recording's channels (left caller, right callee: sip/recording.py).
CALLER: Final = "caller"
CALLEE: Final = "callee"
#: Words of context either side of a match in a snippet.
SNIPPET_WORDS: Final = 6
#: Marks around the matched words in a snippet (plain text; the page escapes it).
MARK_OPEN: Final = "["
MARK_CLOSE: Final = "]"
#: Longest word stored (an engine gone wrong should not fill the catalogue).
MAX_WORD: Final = 100


class Transcript(Base):
    """One transcribed recording (see the module docstring)."""

    __tablename__ = "transcripts"

    recording_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    engine: Mapped[str] = mapped_column(CleanText())
    language: Mapped[str] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: Seconds of audio transcribed (all channels' time line, not their sum).
    audio_seconds: Mapped[float] = mapped_column(Float)
    #: Seconds the engine took.
    elapsed_seconds: Mapped[float] = mapped_column(Float)
    #: The words in time order, joined by spaces: what the full-text index covers.
    text: Mapped[str] = mapped_column(CleanText())


class TranscriptWordRow(Base):
    """One word of a transcript."""

    __tablename__ = "transcript_words"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("recordings.id", ondelete="CASCADE")
    )
    channel: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(CleanText())
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    word: Mapped[str] = mapped_column(CleanText())
    confidence: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index(None, "recording_id", "start"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptWord:
    """One word said: when (seconds from the recording's start), by whom, how sure."""

    start: float
    end: float
    word: str
    confidence: float
    #: 0: the left channel or a mono recording; 1: the right channel.
    channel: int = 0
    #: ``caller``/``callee`` (stereo SIP), or empty (one track).
    speaker: str = ""

    def __post_init__(self) -> None:
        if not self.word.strip() or len(self.word) > MAX_WORD:
            raise CatalogError(f"a transcript word must have 1-{MAX_WORD} characters")
        if not 0 <= self.start <= self.end:
            raise CatalogError(
                f"transcript word {self.word!r}: need 0 <= start <= end, "
                f"got {self.start}-{self.end}"
            )
        if not 0.0 <= self.confidence <= 1.0:
            raise CatalogError(
                f"transcript word {self.word!r}: confidence must be 0-1, got {self.confidence}"
            )
        if self.channel not in (0, 1):
            raise CatalogError(f"transcript word {self.word!r}: channel must be 0 or 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptInfo:
    """A recording's transcript: its words in time order (ties: channel)."""

    recording_id: int
    engine: str
    language: str
    created_at: datetime
    audio_seconds: float
    elapsed_seconds: float
    words: list[TranscriptWord]

    @property
    def text(self) -> str:
        return joined(self.words)


def joined(words: Iterable[TranscriptWord]) -> str:
    """The searchable text of ``words``: in time order, by spaces."""
    ordered = sorted(words, key=lambda w: (w.start, w.channel))
    return " ".join(w.word for w in ordered)


# -- the full-text index ------------------------------------------------------------------


def create_index(connection: Connection) -> None:
    """Create the transcripts' full-text index for the connection's backend (migration 0011)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text(
                f"CREATE INDEX {PG_INDEX} ON transcripts"
                f" USING gin (to_tsvector('{PG_CONFIG}', text))"
            )
        )
    elif connection.dialect.name == "sqlite":
        connection.execute(
            text(
                f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(body,"
                " tokenize='unicode61 remove_diacritics 2')"
            )
        )
        connection.execute(
            text(
                f"CREATE TRIGGER {FTS_TABLE}_insert AFTER INSERT ON transcripts BEGIN"
                f" INSERT INTO {FTS_TABLE}(rowid, body) VALUES (new.recording_id, new.text); END"
            )
        )
        connection.execute(
            text(
                f"CREATE TRIGGER {FTS_TABLE}_update AFTER UPDATE OF text ON transcripts BEGIN"
                f" UPDATE {FTS_TABLE} SET body = new.text WHERE rowid = new.recording_id; END"
            )
        )
        connection.execute(
            text(
                f"CREATE TRIGGER {FTS_TABLE}_delete AFTER DELETE ON transcripts BEGIN"
                f" DELETE FROM {FTS_TABLE} WHERE rowid = old.recording_id; END"
            )
        )


def drop_index(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"DROP INDEX IF EXISTS {PG_INDEX}"))
    elif connection.dialect.name == "sqlite":
        for trigger in ("insert", "update", "delete"):
            connection.execute(text(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{trigger}"))
        connection.execute(text(f"DROP TABLE IF EXISTS {FTS_TABLE}"))


_FTS = table(FTS_TABLE, column("rowid"))
_TRANSCRIPTS = Transcript.__table__


def _fts_phrase(words: Sequence[str]) -> str:
    """An FTS5 phrase of ``words`` (each quoted: no word is taken for an operator)."""
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"'


def _tokens(phrase: str) -> list[str]:
    """The words of a search as both indexes split them (letters and digits)."""
    out: list[str] = []
    word = []
    for ch in phrase:
        if ch.isalnum() or ch == "'":
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return [w.strip("'") for w in out if w.strip("'")]


def said_ids(phrase: str, dialect: str) -> Select[tuple[int]] | None:
    """The ids of the recordings whose transcript has the words of ``phrase`` one after
    another (one word: that word), through the full-text index; None when ``phrase`` has no
    word."""
    words = _tokens(phrase)
    if not words:
        return None
    if dialect == "postgresql":
        vector = func.to_tsvector(literal_column(f"'{PG_CONFIG}'"), _TRANSCRIPTS.c.text)
        query = func.phraseto_tsquery(literal_column(f"'{PG_CONFIG}'"), " ".join(words))
        return select(_TRANSCRIPTS.c.recording_id).where(vector.op("@@")(query))
    if dialect == "sqlite":
        match = literal_column(FTS_TABLE).op("MATCH")(_fts_phrase(words))
        return select(_FTS.c.rowid).where(match)
    # Another backend: a substring of the text (no index).
    return select(_TRANSCRIPTS.c.recording_id).where(
        _TRANSCRIPTS.c.text.icontains(" ".join(words), autoescape=True)
    )


def transcript_match(phrase: str, dialect: str) -> ColumnElement[bool] | None:
    """:func:`said_ids` as a condition on ``recordings.id``."""
    ids = said_ids(phrase, dialect)
    return None if ids is None else Recording.id.in_(ids)


def snippet_of(text_: str, phrases: Sequence[str]) -> str | None:
    """The first place in ``text_`` where one of ``phrases`` is said, with
    :data:`SNIPPET_WORDS` words either side and the match in brackets; None if none is.
    Plain Python over the stored text, so both backends show the same snippet."""
    said = text_.split()
    folded = [" ".join(_tokens(w.casefold())) for w in said]
    best: tuple[int, int] | None = None
    for phrase in phrases:
        target = [w.casefold() for w in _tokens(phrase)]
        if not target:
            continue
        n = len(target)
        for i in range(len(folded) - n + 1):
            if folded[i : i + n] == target:
                if best is None or i < best[0]:
                    best = (i, n)
                break
    if best is None:
        return None
    i, n = best
    lo, hi = max(0, i - SNIPPET_WORDS), min(len(said), i + n + SNIPPET_WORDS)
    parts = [
        *said[lo:i],
        MARK_OPEN + " ".join(said[i : i + n]) + MARK_CLOSE,
        *said[i + n : hi],
    ]
    return ("... " if lo > 0 else "") + " ".join(parts) + (" ..." if hi < len(said) else "")


def read_snippets(
    session: Session, rec_ids: Iterable[int], phrases: Sequence[str]
) -> dict[int, str]:
    """Recording id -> the phrase of its transcript that matches one of ``phrases`` (a
    search's words, or its ``said`` phrase), for the ids that have one."""
    ids = sorted(set(rec_ids))
    if not ids or not any(_tokens(p) for p in phrases):
        return {}
    statement = select(Transcript.recording_id, Transcript.text).where(
        Transcript.recording_id.in_(bindparam("ids", expanding=True))
    )
    out: dict[int, str] = {}
    for rec_id, body in session.execute(statement, {"ids": ids}):
        found = snippet_of(body, phrases)
        if found is not None:
            out[int(rec_id)] = found
    return out
