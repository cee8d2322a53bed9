from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.config import DEFAULT_FILENAME_TEMPLATE
from callrec.exceptions import CallrecError, ConfigError
from callrec.media.naming import (
    FIELDS,
    UnsafePathError,
    check_template,
    recording_path,
    sanitize_component,
    unique_path,
)

START = datetime(2026, 11, 26, 16, 11, 30)
FANVIL = {"dir": "out", "local_number": "3001", "remote_number": "2011", "device": "0c383e0e709a"}
# Every field as its own directory: shows what each value became.
ONE_DIR_PER_FIELD = "/".join(f"{{{name}}}" for name in FIELDS)
ALLOWED_PUNCTUATION = set("-+@._")

HOSTILE_VALUES = [
    "../",
    "../../etc/passwd",
    "..\\..\\windows",
    "..",
    ".",
    "...",
    "/etc/passwd",
    "/",
    "\\",
    "C:\\Windows",
    "a\x00b",
    "\x00",
    "\r\n\t",
    "a/../b",
    "%2e%2e",
    "",
    " ",
    "x" * 10_000,
    "Я" * 10_000,
    "\U00020000" * 1000,  # 4-byte UTF-8 letters
    "Müller".encode().decode("latin-1"),  # UTF-8 misread as latin-1: 'MÃ¼ller'
    "\udcff\udcfe",  # bytes kept by surrogateescape
    "\u202eevil",  # right-to-left override
    ".hidden",
    'a:b*c?d"e<f>g|h',
]


def test_fanvil_example() -> None:
    path = recording_path(
        DEFAULT_FILENAME_TEMPLATE, root=Path("/srv/rec"), start=START, fields=FANVIL
    )
    assert path == Path("/srv/rec/2026-11-26/out_3001_2011_0c383e0e709a_2026-11-26_16_11_30.wav")


def test_result_is_absolute_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = recording_path(DEFAULT_FILENAME_TEMPLATE, root=Path("rec"), start=START, fields=FANVIL)
    assert path == tmp_path.resolve() / "rec" / "2026-11-26" / path.name
    assert path.is_absolute()
    assert not (tmp_path / "rec").exists()


def test_missing_fields_are_unknown() -> None:
    path = recording_path(ONE_DIR_PER_FIELD, root=Path("/r"), start=START, fields={"dir": "in"})
    assert path == Path("/r/in", *(["unknown"] * (len(FIELDS) - 2)), "unknown.wav")


def test_fields_are_sanitised(tmp_path: Path) -> None:
    fields = {
        "dir": "out",
        "local_number": "3001",
        "remote_number": "+49 (30) 1234/5",
        "local_name": "Иван Петров",
        "remote_name": "../../etc/passwd",
        "device": "0c:38:3e:0e:70:9a",
        "codec": "G722",
        "id": "..",
        "node": "rec/1",
    }
    path = recording_path(ONE_DIR_PER_FIELD, root=tmp_path, start=START, fields=fields)
    assert path.relative_to(tmp_path.resolve()).parts == (
        "out",
        "3001",
        "+49_30_1234_5",
        "Иван_Петров",
        "etc_passwd",
        "0c_38_3e_0e_70_9a",
        "G722",
        "unknown",
        "rec_1.wav",
    )


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_value_stays_one_component(tmp_path: Path, field: str, value: str) -> None:
    root = tmp_path / "rec"
    for template in (DEFAULT_FILENAME_TEMPLATE, ONE_DIR_PER_FIELD):
        path = recording_path(template, root=root, start=START, fields={**FANVIL, field: value})
        parts = path.relative_to(root.resolve()).parts
        assert len(parts) == template.count("/") + 1
        assert path.resolve().is_relative_to(root.resolve())
        assert path.suffix == ".wav"
        for part in parts:
            assert_safe_component(part)


def assert_safe_component(part: str) -> None:
    assert part not in ("", ".", "..")
    assert not part.startswith(".")
    assert "/" not in part and "\\" not in part and "\x00" not in part
    assert len(part.encode("utf-8")) <= 200
    assert all(c.isalnum() or c in ALLOWED_PUNCTUATION or not c.isascii() for c in part)


@pytest.mark.parametrize(
    "template",
    [
        "../{id}.wav",
        "../../{id}",
        "/etc/{id}",
        "/{id}.wav",
        "{start:%Y}/../../{id}.wav",
        "{start:%Y/..}/x.wav",
        "./{id}.wav",
        "a//{id}.wav",
        "{id}/",
        "",
    ],
)
def test_hostile_template_is_refused(template: str) -> None:
    with pytest.raises(UnsafePathError, match="filename_template gives") as caught:
        recording_path(template, root=Path("/srv/rec"), start=START, fields=FANVIL)
    assert isinstance(caught.value, CallrecError)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{start.year}/{id}.wav", r"field \{start\.year\} is not a plain field name"),
        ("{dir.__class__}", r"field \{dir\.__class__\} is not a plain field name"),
        ("{id[0]}", r"field \{id\[0\]\} is not a plain field name"),
        ("{0}.wav", r"field \{0\} is not a plain field name"),
        ("{}.wav", r"field \{\} is not a plain field name"),
        ("{caller}.wav", r"field \{caller\} is not a plain field name"),
        ("{dir:{id}}.wav", r"nests a field in the format of \{dir\}"),
        ("{dir", "filename_template does not parse"),
        ("{dir:%Y}.wav", "filename_template does not format"),
    ],
)
def test_bad_template_is_a_config_error(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        recording_path(template, root=Path("/srv/rec"), start=START, fields=FANVIL)


def test_check_template_accepts_the_default() -> None:
    check_template(DEFAULT_FILENAME_TEMPLATE)
    check_template("{start:%Y/%m/%d}/{id!s:>8}.wav")


def test_template_literal_text_is_cleaned() -> None:
    path = recording_path(
        "{start}/.call {id}: {codec}.WAV", root=Path("/r"), start=START, fields={"id": "7"}
    )
    assert path == Path("/r/2026-11-26_16_11_30/call_7_unknown.wav")


def test_template_slashes_make_directories() -> None:
    path = recording_path(
        "{start:%Y/%m/%d}/{id}", root=Path("/r"), start=START, fields={"id": "abc"}
    )
    assert path == Path("/r/2026/11/26/abc.wav")


def test_long_names_fit_the_filesystem() -> None:
    template = "{local_name}-{remote_name}-{device}/{local_name}_{remote_name}_{id}.wav"
    fields = {"local_name": "Ж" * 500, "remote_name": "\U00020000" * 500, "id": "1" * 500}
    path = recording_path(template, root=Path("/r"), start=START, fields=fields)
    for part in path.relative_to("/r").parts:
        assert_safe_component(part)
    assert path.name.endswith(".wav")


def test_symlink_out_of_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    root.mkdir()
    (root / "2026-11-26").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="resolves outside"):
        recording_path(DEFAULT_FILENAME_TEMPLATE, root=root, start=START, fields=FANVIL)


def test_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "rec").symlink_to(tmp_path / "real", target_is_directory=True)
    path = recording_path("{id}", root=tmp_path / "rec", start=START, fields={"id": "1"})
    assert path == tmp_path.resolve() / "real" / "1.wav"


# -- sanitize_component --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3001", "3001"),
        ("alice@example.org", "alice@example.org"),
        ("+49-30-1234", "+49-30-1234"),
        ("a b  c", "a_b_c"),
        ("a___b", "a_b"),
        ("a/b\\c", "a_b_c"),
        ("a\x00b", "a_b"),
        ("a:b", "a_b"),
        ("..", "unknown"),
        (".", "unknown"),
        ("...a..b...", "a..b"),
        ("_x_", "x"),
        ("../../etc/passwd", "etc_passwd"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("Иван Петров", "Иван_Петров"),
        ("Йод", "Йод"),
        ("И\u0306од", "Йод"),  # noqa: RUF001 - decomposed й is composed (NFC)
        ("Zoë", "Zoë"),
        ("हिन्दी", "हिन्दी"),  # vowel signs stay with their letters
        ("MÃ¼ller", "MÃ¼ller"),  # 'Ã' is a letter, '¼' a number
        ("MÃ©ller", "MÃ_ller"),  # '©' is neither
        ("\udcff", "unknown"),
        ("\u202eevil", "evil"),
        ("a\u200db", "a_b"),
    ],
)
def test_sanitize_component(text: str, expected: str) -> None:
    assert sanitize_component(text) == expected


def test_sanitize_component_truncates() -> None:
    assert sanitize_component("x" * 100) == "x" * 64
    assert sanitize_component("Я" * 100, max_len=10) == "Я" * 10
    assert sanitize_component("abc_.def", max_len=4) == "abc"  # no trailing '_' or '.'
    assert sanitize_component("", max_len=3) == "unk"
    with pytest.raises(ValueError, match="max_len must be at least 1"):
        sanitize_component("x", max_len=0)


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)


@settings(derandomize=True, database=None, max_examples=300)
@given(ANY_TEXT, st.integers(min_value=1, max_value=100))
def test_sanitize_component_property(text: str, max_len: int) -> None:
    result = sanitize_component(text, max_len=max_len)
    assert_safe_component(result)
    assert len(result) <= max_len
    assert sanitize_component(result, max_len=max_len) == result


@settings(derandomize=True, database=None, max_examples=300)
@given(st.fixed_dictionaries({name: ANY_TEXT for name in FIELDS}))
def test_any_field_text_stays_inside_root(fields: dict[str, str]) -> None:
    root = Path("/srv/callrec-test-root")
    for template in (DEFAULT_FILENAME_TEMPLATE, ONE_DIR_PER_FIELD):
        path = recording_path(template, root=root, start=START, fields=fields)
        parts = path.relative_to(root).parts
        assert len(parts) == template.count("/") + 1
        for part in parts:
            assert_safe_component(part)
    # One directory per field: each is exactly its sanitised value (cut to fit the file system).
    *dirs, name = parts
    for field, part in zip(FIELDS[:-1], dirs, strict=True):
        assert sanitize_component(fields[field]).startswith(part)
    assert name.endswith(".wav")
    assert sanitize_component(fields[FIELDS[-1]]).startswith(name.removesuffix(".wav"))


# -- unique_path ---------------------------------------------------------------------------


@pytest.fixture
def call_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "2026-11-26" / "out_3001.wav"


def test_unique_path_free(call_path: Path) -> None:
    assert unique_path(call_path) == call_path


def test_unique_path_counts_up(call_path: Path) -> None:
    call_path.parent.mkdir()
    call_path.touch()
    assert unique_path(call_path) == call_path.with_name("out_3001_1.wav")
    call_path.with_name("out_3001_1.wav").touch()
    (call_path.parent / "out_3001_2.wav").symlink_to(call_path.parent / "missing")  # dangling
    assert unique_path(call_path) == call_path.with_name("out_3001_3.wav")
    assert not call_path.with_name("out_3001_3.wav").exists()  # nothing created
