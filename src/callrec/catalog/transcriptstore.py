"""The transcript queries over a :class:`Catalog` (issue 18): store, read, look for
recordings without one. The tables and the full-text index: :mod:`callrec.catalog.transcripts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, insert, select

from callrec.catalog.models import Recording
from callrec.catalog.records import FINAL_STATUSES, utcnow
from callrec.catalog.store import Catalog
from callrec.catalog.transcripts import (
    Transcript,
    TranscriptInfo,
    TranscriptWord,
    TranscriptWordRow,
    joined,
    read_snippets,
)
from callrec.exceptions import CatalogError


class TranscriptStore:
    """The transcript queries over a :class:`Catalog`; blocking, each call one transaction.
    Callers check scope first (``Catalog.get_visible``): these read by recording id."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def replace(
        self,
        rec_id: int,
        words: Sequence[TranscriptWord],
        *,
        engine: str,
        language: str,
        audio_seconds: float,
        elapsed_seconds: float,
    ) -> TranscriptInfo:
        """Store ``words`` as the recording's transcript, in place of any before."""
        created = utcnow()
        ordered = sorted(words, key=lambda w: (w.start, w.channel))
        with self.catalog.transaction(f"store the transcript of {rec_id}", write=True) as session:
            if session.get(Recording, rec_id) is None:
                raise CatalogError(f"cannot store a transcript: no recording {rec_id}")
            connection = session.connection()
            connection.execute(
                delete(TranscriptWordRow).where(TranscriptWordRow.recording_id == rec_id)
            )
            connection.execute(delete(Transcript).where(Transcript.recording_id == rec_id))
            session.add(
                Transcript(
                    recording_id=rec_id,
                    engine=engine,
                    language=language,
                    created_at=created,
                    audio_seconds=audio_seconds,
                    elapsed_seconds=elapsed_seconds,
                    text=joined(ordered),
                )
            )
            session.flush()
            if ordered:
                connection.execute(
                    insert(TranscriptWordRow),
                    [
                        {
                            "recording_id": rec_id,
                            "channel": w.channel,
                            "speaker": w.speaker,
                            "start": w.start,
                            "end": w.end,
                            "word": w.word,
                            "confidence": w.confidence,
                        }
                        for w in ordered
                    ],
                )
        return TranscriptInfo(
            recording_id=rec_id,
            engine=engine,
            language=language,
            created_at=created,
            audio_seconds=audio_seconds,
            elapsed_seconds=elapsed_seconds,
            words=list(ordered),
        )

    def get(self, rec_id: int) -> TranscriptInfo | None:
        """The recording's transcript, or None when it has none."""
        words = (
            select(TranscriptWordRow)
            .where(TranscriptWordRow.recording_id == rec_id)
            .order_by(TranscriptWordRow.start, TranscriptWordRow.channel, TranscriptWordRow.id)
        )
        with self.catalog.transaction(f"read the transcript of {rec_id}") as session:
            row = session.get(Transcript, rec_id)
            if row is None:
                return None
            return TranscriptInfo(
                recording_id=rec_id,
                engine=row.engine,
                language=row.language,
                created_at=row.created_at,
                audio_seconds=row.audio_seconds,
                elapsed_seconds=row.elapsed_seconds,
                words=[
                    TranscriptWord(
                        start=w.start,
                        end=w.end,
                        word=w.word,
                        confidence=w.confidence,
                        channel=w.channel,
                        speaker=w.speaker,
                    )
                    for w in session.scalars(words)
                ],
            )

    def transcribed(self, rec_ids: Iterable[int]) -> set[int]:
        """Which of ``rec_ids`` have a transcript."""
        ids = sorted(set(rec_ids))
        out: set[int] = set()
        with self.catalog.transaction("look for transcripts") as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                out.update(
                    session.scalars(
                        select(Transcript.recording_id).where(Transcript.recording_id.in_(chunk))
                    )
                )
        return out

    def snippets(self, rec_ids: Iterable[int], phrases: Sequence[str]) -> dict[int, str]:
        """:func:`read_snippets` in a transaction of its own."""
        with self.catalog.transaction("read transcript snippets") as session:
            return read_snippets(session, rec_ids, phrases)

    def untranscribed(self, *, limit: int = 1000, after: int = 0) -> list[int]:
        """Ids of finished recordings without a transcript, oldest id first, past ``after``
        (``callrec transcribe --all``)."""
        has = select(Transcript.recording_id).where(Transcript.recording_id == Recording.id)
        statement = (
            select(Recording.id)
            .where(Recording.id > after)
            .where(Recording.status.in_(FINAL_STATUSES))
            .where(~has.exists())
            .order_by(Recording.id)
            .limit(limit)
        )
        with self.catalog.transaction("look for recordings without a transcript") as session:
            return [int(i) for i in session.scalars(statement)]
