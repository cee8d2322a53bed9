"""The table that maps codec names and RTP payload types to codecs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..exceptions import UnsupportedCodecError
from .base import Codec
from .g711 import PCMA, PCMU
from .g722 import G722
from .g723 import G723
from .g726 import G726_CODECS
from .g729 import G729

#: Canonical name -> codec, for every codec we implement.
CODECS: Final[Mapping[str, Codec]] = MappingProxyType(
    {c.name: c for c in (PCMU, PCMA, G722, *G726_CODECS, G729, G723)}
)

#: Other spellings of the canonical names, upper case with dots dropped, as phones and humans
#: write them.
_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "G711A": "PCMA",
        "ALAW": "PCMA",
        "G711U": "PCMU",
        "ULAW": "PCMU",
        "MULAW": "PCMU",
        # A bare "G726" is the 32 kbit/s one (the old G721).
        "G726": "G726-32",
        "G721": "G726-32",
        "AAL2-G726": "AAL2-G726-32",
        # Annexes A and B decode with the same decoder.
        "G729A": "G729",
        "G729B": "G729",
        "G729AB": "G729",
        "G729D": "G729",
        "G7231": "G723",
        "G723-1": "G723",
    }
)

#: "G726-32", "G726_32", "G726/32", "G72632", "AAL2-G726-32", "AAL2_G726_32": the rate may be
#: joined by a dash, an underscore, a slash or nothing.
_G726 = re.compile(r"(AAL2[-_/ ]?)?G726[-_/ ]?(16|24|32|40)")

_BY_PAYLOAD_TYPE: Final[Mapping[int, Codec]] = MappingProxyType(
    {c.payload_type: c for c in CODECS.values() if not c.dynamic_payload_type}
)


def _canonical(name: str) -> str:
    key = name.upper().replace(".", "")
    match = _G726.fullmatch(key)
    if match:
        return f"{'AAL2-' if match[1] else ''}G726-{match[2]}"
    return _ALIASES.get(key, key)


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``, ignoring case (SDP encoding names are case-blind),
    dots ("G.711A", "G.723.1") and the separator before G.726's rate ("G726_32")."""
    codec = CODECS.get(_canonical(name))
    if codec is None:
        raise UnsupportedCodecError(f"unsupported codec {name!r}")
    return codec


def codec_for_payload_type(payload_type: int) -> Codec:
    """Return the codec of a static RTP payload type (RFC 3551)."""
    codec = _BY_PAYLOAD_TYPE.get(payload_type)
    if codec is None:
        raise UnsupportedCodecError(f"unsupported payload type {payload_type}")
    return codec
