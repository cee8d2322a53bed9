"""WebVTT and SRT from words: cues cut at pauses and speaker changes, exact text."""

from __future__ import annotations

from callrec.catalog import TranscriptWord
from callrec.transcribe.captions import MAX_WORDS, cues, srt, webvtt


def _w(word: str, start: float, speaker: str = "") -> TranscriptWord:
    return TranscriptWord(start=start, end=start + 0.3, word=word, confidence=0.9, speaker=speaker)


WORDS = [
    _w("hello", 0.5, "caller"),
    _w("there", 0.9, "caller"),
    _w("hi", 1.3, "callee"),
    _w("<b>&", 3.0, "callee"),  # after a pause: a cue of its own, escaped in WebVTT
]


def test_webvtt() -> None:
    assert webvtt(WORDS) == (
        "WEBVTT\n\n"
        "1\n00:00:00.500 --> 00:00:01.200\n<v caller>hello there\n\n"
        "2\n00:00:01.300 --> 00:00:01.600\n<v callee>hi\n\n"
        "3\n00:00:03.000 --> 00:00:03.300\n<v callee>&lt;b&gt;&amp;\n"
    )


def test_srt() -> None:
    assert srt(WORDS) == (
        "1\n00:00:00,500 --> 00:00:01,200\ncaller: hello there\n\n"
        "2\n00:00:01,300 --> 00:00:01,600\ncallee: hi\n\n"
        "3\n00:00:03,000 --> 00:00:03,300\ncallee: <b>&\n"
    )


def test_long_speech_is_cut_into_cues_and_hours_are_counted() -> None:
    many = [_w(f"w{i}", 3600 + i * 0.4) for i in range(MAX_WORDS + 3)]
    made = cues(many)
    assert [len(c.text.split()) for c in made] == [MAX_WORDS, 3]
    assert srt(many).startswith("1\n01:00:00,000 --> 01:00:04,700\nw0 w1")
    assert webvtt([]) == "WEBVTT\n"
