"""Where a recording's files go in the object store, sans I/O: the ``storage_url`` parsed, and
the key of each file.

A key is ``<prefix>/<uid>/<path>``: the recording's uid (unique across every node and every
process, given before the catalogue knows the recording) then its catalogued path relative to
the recordings directory. Two nodes that name a file alike never share a key, and a path
reused after a delete (the name claim takes the first free name on disk) never meets the
object of the recording that had it, whose delete may still be queued.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from callrec.exceptions import ConfigError

#: S3's bucket naming rules (3-63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageLocation:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> StorageLocation:
        """``s3://bucket/prefix`` (the prefix optional); :class:`ConfigError` otherwise."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "s3":
            raise ConfigError(f"storage_url must be s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(
                f"storage_url: {bucket!r} is not a bucket name (3-63 characters: a-z, 0-9, . -)"
            )
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ConfigError(f"storage_url: the prefix {prefix!r} has an empty or dot segment")
        return cls(bucket=bucket, prefix=prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, owner: str, path: str) -> str:
        """The key of the file at ``path`` (relative, as catalogued) of the recording
        ``owner`` (its uid, or ``id-<n>`` for rows from before uids)."""
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"{path!r} is not a path inside the recordings directory")
        if not owner or "/" in owner:
            raise ValueError(f"{owner!r} cannot name a recording in a key")
        parts = [self.prefix] if self.prefix else []
        return "/".join([*parts, owner, str(relative)])


def owner_of(uid: str | None, recording_id: int) -> str:
    """The name a recording's keys start with."""
    return uid or f"id-{recording_id}"
