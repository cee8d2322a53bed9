"""Exception types of callrec.

The tree tells the peer's fault from ours::

    CallrecError
    ├── RemoteProtocolError        a peer sent something we refuse; carries the reason word
    │   ├── ControlProtocolError   a bad TCP control message (answered with result=failed)
    │   ├── RtpError               an RTP/RTCP datagram we cannot parse (counted as malformed)
    │   ├── sip.errors.SipProtocolError  a SIP message we refuse; answered with its status
    │   │   └── sip.sdp.SdpError   an SDP body we cannot anchor or record (488)
    │   └── LocalFileError         a phone-local (USB) recording we cannot read
    │       └── usb.importer.ImportTooLargeError  over the import size limit
    ├── UnsupportedCodecError      a codec name or payload type we do not implement
    ├── ResourceError              we cannot take more work: ports, sessions, disk
    ├── usb.importer.ImportFailedError  a good file we could not store (disk full ...)
    ├── ConfigError                a setting that does not validate
    ├── CatalogError               the catalogue refused an operation
    │   ├── catalog.archives.ArchiveConflict  another process or a deletion got there first
    │   └── RecordingHeld          a delete of a recording under legal hold
    ├── media.wav.WavError         a WAV file we cannot write or read back
    │   ├── WavRepairError         a file left by a crash that is not ours to repair
    │   └── WavTooLargeError       past the 4 GiB a RIFF size field can say
    ├── media.naming.UnsafePathError  a file name that would leave the recordings directory
    ├── media.convert.ConvertError    a conversion we cannot do (output exists, FFmpeg fails)
    │   └── OutputExistsError      the output exists and replacing it was not asked for
    ├── media.player.PlayerError   no audio output, or the player failed
    ├── media.decode.AudioFileError  a recording (WAV, FLAC, Ogg Opus) we cannot read back
    ├── media.verify.VerifyError   an archive copy that does not decode to its WAV
    ├── engine.archive.ArchiveError  a recording we do not archive (its WAV changed ...)
    ├── web.listen.ListenError     a live recording's file we cannot listen to
    ├── media.localrecord.LocalRecordError  local (USB) recording options that do not work
    ├── sim.phone.PhoneError       the phone simulator could not complete a call
    ├── sim.loadrun.LoadError      a load test that cannot run (options, server start-up)
    ├── integrity.keys.KeyFileError  the chain's signing key cannot be read or made
    ├── storage.client.StorageError  the object store failed (unreachable, refused, wrong)
    │   ├── ObjectMissing          the object asked for is not in the store
    │   └── storage.files.VerifyMismatch  the store's bytes are not the file uploaded
    └── storage.files.LocalFileMissing  a file to upload is not on this node's disk

Any other exception escaping a protocol core is a bug and is logged as one.
"""

from __future__ import annotations


class CallrecError(Exception):
    """Base of every error callrec raises on purpose."""


class RemoteProtocolError(CallrecError):
    """The peer broke the protocol. ``reason`` is the short word sent back to it."""

    def __init__(self, message: str, *, reason: str = "bad_request") -> None:
        super().__init__(message)
        self.reason = reason


class ControlProtocolError(RemoteProtocolError):
    """A TCP control message that cannot be accepted."""


class RtpError(RemoteProtocolError):
    """A datagram that is not a usable RTP packet."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="malformed")


class LocalFileError(RemoteProtocolError):
    """A phone-local recording file that cannot be read."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="bad_file")


class UnsupportedCodecError(CallrecError):
    """A codec we do not implement; answered as ``unsupported_codec``."""

    reason = "unsupported_codec"


class ResourceError(CallrecError):
    """Out of something we need to accept work; ``reason`` is ``busy`` or ``disk_full``."""

    def __init__(self, message: str, *, reason: str = "busy") -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(CallrecError):
    """A configuration value that does not validate."""


class CatalogError(CallrecError):
    """The catalogue could not carry out an operation."""


class RecordingHeld(CatalogError):
    """A recording under legal hold was to be deleted: every delete path refuses it (the
    check is in the catalogue's delete, so no caller can skip it)."""
