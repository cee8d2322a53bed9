"""callrec: a call-recording server for Fanvil/Becke SIP phones."""

__version__ = "0.1.0"
