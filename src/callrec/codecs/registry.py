"""The table that maps codec names and RTP payload types to codecs."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..exceptions import UnsupportedCodecError
from .base import Codec
from .g711 import PCMA, PCMU
from .g722 import G722

#: Canonical name -> codec, for every codec we implement.
CODECS: Final[Mapping[str, Codec]] = MappingProxyType({c.name: c for c in (PCMU, PCMA, G722)})

#: Other spellings of the canonical names, upper case, as phones and humans write them.
_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "G711A": "PCMA",
        "G.711A": "PCMA",
        "ALAW": "PCMA",
        "G711U": "PCMU",
        "G.711U": "PCMU",
        "ULAW": "PCMU",
        "MULAW": "PCMU",
        "G.722": "G722",
    }
)

_BY_PAYLOAD_TYPE: Final[Mapping[int, Codec]] = MappingProxyType(
    {c.payload_type: c for c in CODECS.values()}
)


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``, ignoring case (SDP encoding names are case-blind)."""
    key = name.upper()
    codec = CODECS.get(_ALIASES.get(key, key))
    if codec is None:
        raise UnsupportedCodecError(f"unsupported codec {name!r}")
    return codec


def codec_for_payload_type(payload_type: int) -> Codec:
    """Return the codec of a static RTP payload type (RFC 3551)."""
    codec = _BY_PAYLOAD_TYPE.get(payload_type)
    if codec is None:
        raise UnsupportedCodecError(f"unsupported payload type {payload_type}")
    return codec
