"""The S3 client: boto3 behind the few calls callrec makes of an object store.

boto3 is AWS's own SDK, maintained with the API, and speaks to every S3-compatible store
(SeaweedFS, MinIO, Ceph, Garage, R2...) through ``endpoint_url``. It is blocking: callrec
calls it on worker threads (the upload jobs' pool, Starlette's for the web), as it does the
catalogue. A client is thread-safe; one per process is shared.

Every error of the store (unreachable, refused, a bad answer) is raised as
:class:`StorageError` with one line saying what failed, so that a job's history and the
web's 502 say it plainly.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from callrec.exceptions import CallrecError
from callrec.storage.location import StorageLocation

logger = logging.getLogger(__name__)

CHUNK: Final = 256 * 1024
#: Above this, boto3 uploads in parts (several threads); below it, one PUT.
MULTIPART_THRESHOLD: Final = 64 * 1024 * 1024


class StorageError(CallrecError):
    """The object store failed an operation (unreachable, refused, a wrong answer)."""


class ObjectMissing(StorageError):
    """The object asked for is not in the store."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject:
    key: str
    size: int
    etag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectSlice:
    """What a ranged read returns: the bytes' source and the object's total size."""

    size: int
    length: int
    body: Iterator[bytes]


class ObjectStore:
    """One bucket under one prefix of an S3-compatible store."""

    def __init__(
        self,
        location: StorageLocation,
        *,
        endpoint: str = "",
        region: str = "us-east-1",
        access_key: str = "",
        secret_key: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.location = location
        self.endpoint = endpoint
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            # The job runner retries with its own back-off, and a player waits for no one:
            # boto3's own retries would only hide an unreachable store for longer.
            retries={"max_attempts": 1, "mode": "standard"},
            # Path-style URLs work on every store (virtual hosts need DNS per bucket).
            s3={"addressing_style": "path"},
            max_pool_connections=32,
            # Only where a store needs them (AWS asks for them with some features); SeaweedFS,
            # MinIO and others accept requests without, and fail some with.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )
        self._bucket_ready = False
        self._lock = threading.Lock()

    @property
    def bucket(self) -> str:
        return self.location.bucket

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"{self.location.url}{where}"

    # -- the bucket --------------------------------------------------------------------------

    def ensure_bucket(self) -> bool:
        """Create the bucket when it is missing (once per process); whether it was created."""
        if self._bucket_ready:
            return False
        with self._lock:
            if self._bucket_ready:
                return False
            created = False
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise _error(f"cannot reach bucket {self.bucket}", exc) from exc
                try:
                    self._client.create_bucket(Bucket=self.bucket)
                    created = True
                    logger.warning("created bucket %s in %s", self.bucket, self.describe())
                except ClientError as exc2:
                    if _code(exc2) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise _error(f"cannot create bucket {self.bucket}", exc2) from exc2
            except BotoCoreError as exc:
                raise _error(f"cannot reach bucket {self.bucket}", exc) from exc
            self._bucket_ready = True
            return created

    # -- objects -----------------------------------------------------------------------------

    def put_file(self, path: Path, key: str, *, sha256: str | None = None) -> str | None:
        """Upload the file at ``path`` as ``key`` (replacing an object there). With
        ``sha256`` (hex, of the file) a single PUT carries it (``x-amz-checksum-sha256``):
        the store refuses bytes that do not match it (``BadDigest``, raised here). Returns
        the SHA-256 (hex) the store's answer names, None when it names none (a store
        without checksums, or a multipart upload: files over 64 MiB)."""
        self.ensure_bucket()
        try:
            if path.stat().st_size > MULTIPART_THRESHOLD:
                self._client.upload_file(str(path), self.bucket, key)
                return None
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if sha256 is not None:
                args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
            with path.open("rb") as fh:
                answer = self._client.put_object(Body=fh, **args)
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"upload of {key} failed", exc) from exc
        named = answer.get("ChecksumSHA256")
        if not named:
            return None
        try:
            return base64.b64decode(str(named)).hex()
        except ValueError:
            return None

    def sha256(self, key: str) -> tuple[str, int]:
        """SHA-256 (hex) and size of the object's bytes as the store returns them."""
        digest = hashlib.sha256()
        size = 0
        for chunk in self.read(key).body:
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size

    def head(self, key: str) -> StoredObject:
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"{key} is not in {self.describe()}") from exc
            raise _error(f"cannot look at {key}", exc) from exc
        except BotoCoreError as exc:
            raise _error(f"cannot look at {key}", exc) from exc
        return StoredObject(
            key=key, size=int(answer["ContentLength"]), etag=str(answer.get("ETag", ""))
        )

    def read(self, key: str, start: int | None = None, end: int | None = None) -> ObjectSlice:
        """The object's bytes, or bytes ``start`` to ``end`` inclusive: S3's ranged GET, so
        only what is asked for crosses the network. The body is read as it is iterated."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            answer = self._client.get_object(**args)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"{key} is not in {self.describe()}") from exc
            raise _error(f"cannot read {key}", exc) from exc
        except BotoCoreError as exc:
            raise _error(f"cannot read {key}", exc) from exc
        length = int(answer["ContentLength"])
        total = length
        content_range = str(answer.get("ContentRange") or "")
        if "/" in content_range:
            total = int(content_range.rsplit("/", 1)[1])
        return ObjectSlice(size=total, length=length, body=_chunks(answer["Body"], key))

    def download(self, key: str, target: Path) -> str:
        """Copy the object to ``target`` (a new file); its SHA-256."""
        digest = hashlib.sha256()
        with target.open("xb") as fh:
            for chunk in self.read(key).body:
                digest.update(chunk)
                fh.write(chunk)
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Remove ``key``; an object already gone is no error (S3 says so too)."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot delete {key}", exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectMissing:
            return False
        return True


def _chunks(body: Any, key: str) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK):
            yield chunk
    except (BotoCoreError, OSError) as exc:
        raise StorageError(f"reading {key} broke off: {exc}") from exc
    finally:
        body.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error(what: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return StorageError(f"{what}: {error.get('Code', '?')} {error.get('Message', '')}".strip())
    return StorageError(f"{what}: {exc}")


class StorageSettings(Protocol):
    """The settings a store is made from (:class:`callrec.config.Settings` has them; this
    package does not import the settings, which import it to check ``storage_url``)."""

    @property
    def storage_url(self) -> str: ...
    @property
    def storage_endpoint(self) -> str: ...
    @property
    def storage_region(self) -> str: ...
    @property
    def storage_access_key(self) -> str: ...
    @property
    def storage_secret_key(self) -> str: ...
    @property
    def storage_timeout(self) -> float: ...


def store_from(settings: StorageSettings) -> ObjectStore | None:
    """The store ``settings`` name; None when ``storage_url`` is empty."""
    if not settings.storage_url:
        return None
    return ObjectStore(
        StorageLocation.parse(settings.storage_url),
        endpoint=settings.storage_endpoint,
        region=settings.storage_region,
        access_key=settings.storage_access_key,
        secret_key=settings.storage_secret_key,
        timeout=settings.storage_timeout,
    )
