"""The transcription settings: validated on load, and ``callrec serve`` refuses to start with
an engine that cannot load, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.catalog.policy import TranscribePolicy
from callrec.config import Settings
from callrec.exceptions import ConfigError
from tests.support.serve import spawn_serve


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"transcribe_engine": "kaldi"}, "transcribe_engine must be one of pocketsphinx"),
        ({"transcribe_workers": -1}, "transcribe_workers must be 0-"),
        ({"transcribe_workers": 10_000}, "transcribe_workers must be 0-"),
        ({"transcribe_policy": "all"}, "a list of rules, not one string"),
        ({"transcribe_policy": ["colour=red"]}, "kind must be one of source, extension"),
        ({"transcribe_policy": ["everything"]}, "must be all or look like kind=value"),
        ({"transcribe_language": " "}, "transcribe_language must not be empty"),
    ],
)
def test_bad_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**values)  # type: ignore[arg-type]


def test_the_policy_matches_as_retention_rules_do() -> None:
    policy = TranscribePolicy.parse(["extension=3001", "tag=Support", "source=phone"])
    call = dict(source="sip", local="200", remote="300", device="0c383e0e709a")
    assert not policy.matches(**call, tags=[])
    assert policy.matches(**{**call, "remote": "3001"}, tags=[])
    assert policy.matches(**call, tags=["support"])
    assert policy.matches(**{**call, "source": "server"}, tags=[])
    assert TranscribePolicy.parse(["all"]).matches(**call, tags=[])
    assert not TranscribePolicy.parse([]).anything


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "nowhere"), "no such directory"),
        (lambda tmp: str(tmp), "is not a faster-whisper model: model.bin, config.json"),
    ],
)
def test_serve_refuses_a_missing_or_broken_model_directory(
    tmp_path: Path, make: object, message: str
) -> None:
    model_dir = make(tmp_path)  # type: ignore[operator]
    log = tmp_path / "serve.log"
    proc = spawn_serve(
        tmp_path, log=log, transcribe_engine="faster-whisper", transcribe_model_dir=model_dir
    )
    assert proc.wait(timeout=60) == 2
    text = " ".join(log.read_text().split())
    assert "configuration error: transcription: transcribe_model_dir" in text
    assert message in text
    assert "Traceback" not in text
