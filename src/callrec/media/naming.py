"""Recording file names from the configurable ``filename_template``.

Phone-supplied text (numbers, display names, the device id) is sanitised field by field before it
is formatted, so it can never contribute a path separator or a ``..``. The template comes from
the administrator and may use ``/`` to make directories; each component it yields is checked and
cleaned, and the final path is verified to stay under the recordings directory.
"""

from __future__ import annotations

import os
import string
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from callrec.exceptions import CallrecError, ConfigError

#: Fields a template may use besides ``start`` (a datetime).
FIELDS = (
    "dir",
    "local_number",
    "remote_number",
    "local_name",
    "remote_name",
    "device",
    "codec",
    "id",
    # The recording node's node_name: several nodes on one catalogue (docs/scaling.md).
    "node",
)
SUFFIX = ".wav"
#: What an empty (or wholly unsafe) value becomes.
UNKNOWN = "unknown"

_PUNCTUATION = "-+@._"
_SAFE_ASCII = frozenset(string.ascii_letters + string.digits + _PUNCTUATION)
_REPLACEMENT = "_"
# NAME_MAX is 255 bytes on common Linux filesystems; leave room for unique_path's "_<n>".
_MAX_NAME_BYTES = 200


class UnsafePathError(CallrecError):
    """A filename template whose result would leave the recordings directory."""


def sanitize_component(text: str, *, max_len: int = 64) -> str:
    """Make ``text`` safe as one path component, keeping what is readable.

    ASCII letters and digits, ``-+@._`` and non-ASCII letters and digits (with their combining
    marks, after NFC normalisation) are kept; anything else becomes ``_``, runs of ``_``
    collapse, and leading or trailing dots and underscores go, so the result is never ``.`` or
    ``..`` nor hidden. ``unknown`` if nothing is left; at most ``max_len`` characters.
    """
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    return (_clean(_clean(text)[:max_len]) or UNKNOWN)[:max_len]


def recording_path(
    template: str, *, root: Path, start: datetime, fields: Mapping[str, str]
) -> Path:
    """The absolute path of a recording under ``root``; nothing is created.

    ``fields`` holds the :data:`FIELDS` (missing ones become ``unknown``; others are ignored).
    Raises :class:`~callrec.exceptions.ConfigError` for a template that does not format and
    :class:`UnsafePathError` for one whose result is absolute, has an empty, ``.`` or ``..``
    component, or resolves (through a symlink) outside ``root``.
    """
    check_template(template)
    values: dict[str, object] = {name: sanitize_component(fields.get(name, "")) for name in FIELDS}
    values["start"] = start
    try:
        text = template.format_map(values)
    except (KeyError, ValueError, IndexError, AttributeError, TypeError) as exc:
        raise ConfigError(f"filename_template does not format: {exc}") from exc

    parts = text.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(
                f"filename_template gives {text!r}: absolute, or an empty, '.' or '..' component"
            )
    names = [_clip(_clean(part) or UNKNOWN, _MAX_NAME_BYTES) for part in parts[:-1]]
    stem = _clean(parts[-1]) or UNKNOWN
    if stem[-len(SUFFIX) :].lower() == SUFFIX:
        stem = stem[: -len(SUFFIX)]
    stem = _clean(_clip(stem, _MAX_NAME_BYTES - len(SUFFIX))) or UNKNOWN
    names.append(stem + SUFFIX)

    base = Path(root).resolve()
    path = base.joinpath(*names)
    if not path.resolve().is_relative_to(base):
        raise UnsafePathError(f"recording path {path} resolves outside {base}")
    return path


def unique_path(path: Path) -> Path:
    """``path``, or the first free ``<stem>_<n><suffix>`` next to it (n = 1, 2, ...).

    A name can be taken between this check and its creation: create with ``O_EXCL`` (as
    :class:`~callrec.media.wav.WavWriter` does) and ask again on ``FileExistsError``.
    """
    # lexists: a dangling symlink also makes O_EXCL fail, so it counts as taken.
    if not os.path.lexists(path):
        return path
    number = 1
    while True:
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        number += 1


def check_template(template: str) -> None:
    """Raise ConfigError unless the template uses plain field names only.

    :data:`FIELDS` and ``start``, with optional conversion and format spec; no positional
    fields, no attribute or index access (``{start.year}``), no fields nested in a spec.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"filename_template does not parse: {exc}") from exc
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if name != "start" and name not in FIELDS:
            raise ConfigError(
                f"filename_template field {{{name}}} is not a plain field name: use "
                f"start or {', '.join(FIELDS)}"
            )
        if spec and "{" in spec:
            raise ConfigError(f"filename_template nests a field in the format of {{{name}}}")


def _clean(text: str) -> str:
    out: list[str] = []
    for char in unicodedata.normalize("NFC", text):
        if char in _SAFE_ASCII:
            keep = True
        elif char.isascii():
            keep = False
        elif char.isalnum():
            keep = True
        else:
            # A combining mark stays with the letter it modifies (Devanagari vowel signs ...).
            keep = (
                bool(out)
                and out[-1] not in _PUNCTUATION
                and unicodedata.category(char).startswith("M")
            )
        if not keep:
            char = _REPLACEMENT
        if char == _REPLACEMENT and out and out[-1] == _REPLACEMENT:
            continue
        out.append(char)
    return "".join(out).strip("._")


def _clip(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip("._")
