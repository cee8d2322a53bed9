"""The engines with their real loading code: the embedded PocketSphinx model hears spoken
sentences (espeak-ng), and every engine that cannot load says why."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from callrec.transcribe import TranscribeError, check_engine, load_engine
from callrec.transcribe.audio import speakers_of, transcribe_file
from callrec.transcribe.base import resample
from tests.support.speech import (
    CALLEE_SENTENCE,
    CALLER_SENTENCE,
    needs_espeak,
    speak,
    stereo,
    write_wav,
)


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    return load_engine("pocketsphinx")


@needs_espeak
def test_pocketsphinx_hears_a_spoken_sentence_with_times(engine) -> None:  # type: ignore[no-untyped-def]
    samples = speak(CALLER_SENTENCE, 16000, pad=0.3)
    words = engine.transcribe(samples, 16000)
    said = [w.text for w in words]
    assert "invoice" in said and "please" in said
    # In time order, inside the audio, after the silence before the voice.
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert words[0].start >= 0.25
    assert words[-1].end <= len(samples) / 16000
    assert all(0.0 <= w.confidence <= 1.0 and w.start < w.end for w in words)
    invoice = next(w for w in words if w.text == "invoice")
    assert 1.1 < invoice.start < 1.6  # "please send the" takes about a second


@needs_espeak
def test_telephone_rate_audio_is_heard_too(engine) -> None:  # type: ignore[no-untyped-def]
    words = [w.text for w in engine.transcribe(speak(CALLEE_SENTENCE, 8000), 8000)]
    assert "cancel" in words


def test_silence_gives_no_words(engine) -> None:  # type: ignore[no-untyped-def]
    assert engine.transcribe(np.zeros(16000 * 2, dtype=np.int16), 16000) == []


@needs_espeak
def test_a_stereo_file_is_transcribed_per_channel_with_its_speakers(
    engine,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    caller, callee = speak(CALLER_SENTENCE), speak(CALLEE_SENTENCE)
    path = tmp_path / "call.wav"
    write_wav(str(path), stereo(caller, callee), 16000, channels=2)
    result = transcribe_file(engine, path, {"sip": {"left": "caller", "right": "callee"}})
    by = {(t.speaker, t.word.text) for t in result.words}
    assert ("caller", "invoice") in by and ("callee", "cancel") in by
    assert ("callee", "invoice") not in by and ("caller", "cancel") not in by
    assert {t.channel for t in result.words if t.speaker == "callee"} == {1}
    # The callee speaks after the caller: its words are on the recording's time line.
    cancel = next(t.word for t in result.words if t.word.text == "cancel")
    assert cancel.start > len(caller) / 16000
    assert result.audio_seconds == pytest.approx((len(caller) + len(callee)) / 16000)


def test_speakers_of_each_kind_of_recording() -> None:
    assert speakers_of(1, {"sip": {"left": "caller"}}) == ("",)
    assert speakers_of(2, {"sip": {"left": "caller", "right": "callee"}}) == ("caller", "callee")
    assert speakers_of(2, {}) == ("left", "right")


def test_resampling_keeps_a_tone_and_the_length() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    tone = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    up = resample(tone, rate, 16000)
    assert len(up) == 16000
    spectrum = np.abs(np.fft.rfft(up.astype(float)))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second
    # Down from 48 kHz, a 20 kHz tone (above the new Nyquist) is filtered out, not folded.
    t48 = np.arange(48000) / 48000
    high = (10000 * np.sin(2 * np.pi * 20000 * t48)).astype(np.int16)
    assert np.abs(resample(high, 48000, 16000)).max() < 500


def test_unknown_engine_and_languages_are_refused() -> None:
    with pytest.raises(TranscribeError, match="unknown transcription engine 'kaldi'"):
        load_engine("kaldi")
    with pytest.raises(TranscribeError, match=r"English \(en-US\) model only, not 'de'"):
        check_engine("pocketsphinx", language="de")
    with pytest.raises(TranscribeError, match="transcribe_model_dir is for faster-whisper"):
        check_engine("pocketsphinx", model_dir="/opt/models")


def test_faster_whisper_needs_a_model_directory_that_holds_a_model(tmp_path: Path) -> None:
    with pytest.raises(TranscribeError, match="needs transcribe_model_dir"):
        check_engine("faster-whisper")
    with pytest.raises(TranscribeError, match="no such directory"):
        check_engine("faster-whisper", model_dir=str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(TranscribeError, match=r"not a faster-whisper model: model\.bin, tokenizer"):
        check_engine("faster-whisper", model_dir=str(broken))
    (broken / "model.bin").write_bytes(b"")
    (broken / "tokenizer.json").write_text("{}")
    with pytest.raises(TranscribeError, match=r"model\.bin is empty"):
        load_engine("faster-whisper", model_dir=str(broken))


@pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is not None, reason="faster-whisper is installed"
)
def test_faster_whisper_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (model / name).write_text("x")
    with pytest.raises(TranscribeError, match=r"pip install 'callrec\[whisper\]'"):
        check_engine("faster-whisper", model_dir=str(model))
    with pytest.raises(TranscribeError, match=r"not installed .*pip install 'callrec\[whisper\]'"):
        load_engine("faster-whisper", model_dir=str(model))
