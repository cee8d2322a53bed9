"""Where the web finds a recording's audio: one small interface every read path goes through.

Playback, Range requests, downloads, transcoding and ZIPs ask :class:`MediaLocator` for the
file of a catalogued recording. Today that is a local path: this node's ``recordings_dir``
for its own recordings (and those from before nodes), a peer's directory given in
``peer_recordings_dirs`` (a network mount) for another node's; any other node's recording is
out of reach (a 404 that says on which node it is). Object storage (docs/scaling.md) plugs in
here as another locator.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Protocol

from callrec.catalog import RecordingInfo
from callrec.exceptions import CallrecError


class MediaUnreachable(CallrecError):
    """The recording's audio cannot be read from this node (the message says why)."""


class MediaLocator(Protocol):
    def locate(self, rec: RecordingInfo) -> Path:
        """The file holding ``rec``'s audio; raises :class:`MediaUnreachable`."""
        ...


class LocalMedia:
    """Recordings on this node's disk or on a directory it reaches (see the module
    docstring)."""

    def __init__(self, root: Path, *, node: str, peers: Mapping[str, Path] | None = None) -> None:
        self.root = root
        self.node = node
        self.peers = dict(peers or {})

    def locate(self, rec: RecordingInfo) -> Path:
        relative = PurePosixPath(rec.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise MediaUnreachable(f"recording {rec.id} has an unusable path")
        if rec.node is None or rec.node == self.node:
            return self.root / relative
        peer = self.peers.get(rec.node)
        if peer is not None:
            return peer / relative
        raise MediaUnreachable(
            f"recording {rec.id} was recorded on node {rec.node}, whose files this node "
            "cannot reach (peer_recordings_dirs: docs/scaling.md)"
        )
