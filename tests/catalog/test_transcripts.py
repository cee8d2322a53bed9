"""Transcripts in the catalogue, on SQLite and PostgreSQL: stored, replaced, found by the
free-text search and by ``said`` under the same scope as every query, with a snippet."""

from __future__ import annotations

import pytest

from callrec.catalog import Catalog, Scope, SearchQuery, TranscriptStore, TranscriptWord
from callrec.exceptions import CatalogError
from tests.support.catalog import finish_values, new_recording


def _words(
    text: str, *, speaker: str = "", channel: int = 0, at: float = 0.0
) -> list[TranscriptWord]:
    return [
        TranscriptWord(
            start=at + i * 0.5,
            end=at + i * 0.5 + 0.4,
            word=w,
            confidence=0.9,
            channel=channel,
            speaker=speaker,
        )
        for i, w in enumerate(text.split())
    ]


def _recording(catalog: Catalog, n: int, **overrides: object) -> int:
    rec_id = catalog.create_recording(new_recording(n, **overrides))
    catalog.finish_recording(rec_id, **finish_values())
    return rec_id


def _store(catalog: Catalog, rec_id: int, words: list[TranscriptWord]) -> None:
    TranscriptStore(catalog).replace(
        rec_id,
        words,
        engine="pocketsphinx",
        language="en",
        audio_seconds=10.0,
        elapsed_seconds=2.0,
    )


def test_a_transcript_is_stored_in_time_order_and_replaced(catalog: Catalog) -> None:
    rec_id = _recording(catalog, 0)
    store = TranscriptStore(catalog)
    assert store.get(rec_id) is None
    _store(
        catalog,
        rec_id,
        _words("cancel my order", speaker="callee", channel=1, at=1.0)
        + _words("hello there", speaker="caller"),
    )
    got = store.get(rec_id)
    assert got is not None
    assert [w.word for w in got.words] == ["hello", "there", "cancel", "my", "order"]
    assert got.words[2].speaker == "callee" and got.words[2].channel == 1
    assert got.words[0].start == 0.0 and got.words[0].end == pytest.approx(0.4)
    assert got.text == "hello there cancel my order"
    _store(catalog, rec_id, _words("only this now"))  # a second run replaces the first
    again = store.get(rec_id)
    assert again is not None and again.text == "only this now"
    page = catalog.search(SearchQuery(q="cancel"))
    assert page.items == []
    assert [i.id for i in catalog.search(SearchQuery(q="this")).items] == [rec_id]
    assert store.transcribed([rec_id, rec_id + 1]) == {rec_id}


def test_search_finds_a_call_by_a_word_said_with_its_snippet(catalog: Catalog) -> None:
    said = _recording(catalog, 0)
    other = _recording(catalog, 1)
    _store(
        catalog, said, _words("well oh good morning please send the invoice for the blue car today")
    )
    _store(catalog, other, _words("the weather is lovely in london"))
    page = catalog.search(SearchQuery(q="Invoice"))
    assert [i.id for i in page.items] == [said]
    assert page.snippets == {
        said: "... oh good morning please send the [invoice] for the blue car today"
    }
    # Every word must match: one said, one in the numbers.
    assert [i.id for i in catalog.search(SearchQuery(q="invoice 0301234000")).items] == [said]
    assert catalog.search(SearchQuery(q="invoice 0301234001")).items == []
    # The numbers and names still match as before, with no snippet.
    page = catalog.search(SearchQuery(q="0301234001"))
    assert [i.id for i in page.items] == [other] and page.snippets == {}
    # said: the words one after another, in the transcript only.
    assert [i.id for i in catalog.search(SearchQuery(said="the blue car")).items] == [said]
    assert catalog.search(SearchQuery(said="car blue")).items == []
    assert catalog.search(SearchQuery(said="0301234000")).items == []
    page = catalog.search(SearchQuery(said="lovely in"))
    assert [i.id for i in page.items] == [other]
    assert page.snippets == {other: "the weather is [lovely in] london"}
    with pytest.raises(CatalogError, match="has no word"):
        catalog.search(SearchQuery(said=" ,. "))


def test_a_restricted_search_never_finds_another_extensions_words(catalog: Catalog) -> None:
    mine = _recording(catalog, 0, local_number="201")
    theirs = _recording(catalog, 1, local_number="202", remote_number="0309999999")
    _store(catalog, mine, _words("the parcel arrived"))
    _store(catalog, theirs, _words("the secret parcel is late"))
    scope = Scope(extensions=("201",))
    assert [i.id for i in catalog.search(SearchQuery(q="parcel"), scope).items] == [mine]
    assert catalog.search(SearchQuery(q="secret"), scope).items == []
    assert catalog.search(SearchQuery(said="secret parcel"), scope).items == []
    page = catalog.search(SearchQuery(q="secret"))
    assert [i.id for i in page.items] == [theirs] and page.total == 1


def test_deleting_a_recording_deletes_its_transcript(catalog: Catalog) -> None:
    rec_id = _recording(catalog, 0)
    _store(catalog, rec_id, _words("remove me entirely"))
    catalog.delete_recording(rec_id, by="test")
    assert TranscriptStore(catalog).get(rec_id) is None
    kept = _recording(catalog, 1)
    assert catalog.search(SearchQuery(q="entirely")).items == []
    _store(catalog, kept, _words("entirely new"))
    assert [i.id for i in catalog.search(SearchQuery(q="entirely")).items] == [kept]


def test_bad_words_are_refused_and_a_missing_recording_too(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="start <= end"):
        TranscriptWord(start=2.0, end=1.0, word="x", confidence=0.5)
    with pytest.raises(CatalogError, match="confidence"):
        TranscriptWord(start=0.0, end=1.0, word="x", confidence=1.5)
    with pytest.raises(CatalogError, match="no recording 999"):
        _store(catalog, 999, _words("nobody"))
