"""A transcript as subtitles: WebVTT (what ``<track>`` in a browser plays) and SRT.

Words become cues: consecutive words of one speaker, cut at a pause of
:data:`PAUSE` seconds, at :data:`MAX_WORDS` words, or when the speaker changes. A cue of a
stereo SIP recording starts with its speaker (WebVTT's ``<v caller>`` voice span; ``caller:``
in SRT). No I/O: text in, text out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

#: A silence this long (seconds) between two words starts a new cue.
PAUSE: Final = 1.0
#: Most words in one cue (two lines of a player's caption).
MAX_WORDS: Final = 12


class TimedWord(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def word(self) -> str: ...
    @property
    def speaker(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Cue:
    start: float
    end: float
    speaker: str
    text: str


def cues(words: Sequence[TimedWord]) -> list[Cue]:
    """The words grouped into cues, in time order."""
    out: list[Cue] = []
    group: list[TimedWord] = []

    def close() -> None:
        if group:
            out.append(
                Cue(
                    start=group[0].start,
                    end=max(w.end for w in group),
                    speaker=group[0].speaker,
                    text=" ".join(w.word for w in group),
                )
            )
            group.clear()

    for word in sorted(words, key=lambda w: w.start):
        if group and (
            word.speaker != group[-1].speaker
            or word.start - group[-1].end >= PAUSE
            or len(group) >= MAX_WORDS
        ):
            close()
        group.append(word)
    close()
    return out


def _stamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _escape_vtt(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt(words: Sequence[TimedWord]) -> str:
    """A WebVTT file of the words."""
    lines = ["WEBVTT", ""]
    for number, cue in enumerate(cues(words), start=1):
        text = _escape_vtt(cue.text)
        if cue.speaker:
            text = f"<v {_escape_vtt(cue.speaker)}>{text}"
        lines += [str(number), f"{_stamp(cue.start, '.')} --> {_stamp(cue.end, '.')}", text, ""]
    return "\n".join(lines)


def srt(words: Sequence[TimedWord]) -> str:
    """A SubRip (SRT) file of the words."""
    lines: list[str] = []
    for number, cue in enumerate(cues(words), start=1):
        text = f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text
        lines += [str(number), f"{_stamp(cue.start, ',')} --> {_stamp(cue.end, ',')}", text, ""]
    return "\n".join(lines)
