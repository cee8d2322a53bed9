"""Codecs: RTP payloads to 16-bit PCM and back, one module per codec behind one interface.

Look a codec up by name or payload type; ask it for a decoder per stream::

    codec = codec_for_payload_type(packet.payload_type)
    decoder = codec.decoder()
    pcm = decoder.decode(packet.payload)
"""

from .base import Codec, Decoder, Encoder
from .g711 import PCMA, PCMU
from .g722 import G722
from .g723 import G723
from .g726 import G726_32
from .g729 import G729
from .registry import CODECS, codec_for_payload_type, get_codec

__all__ = [
    "CODECS",
    "G722",
    "G723",
    "G726_32",
    "G729",
    "PCMA",
    "PCMU",
    "Codec",
    "Decoder",
    "Encoder",
    "codec_for_payload_type",
    "get_codec",
]
