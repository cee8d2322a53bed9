"""A real S3 server (SeaweedFS) for the storage tests: one per module, each test its own
bucket; tests that stop the store start their own."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3 import WeedS3

_buckets = itertools.count(1)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedS3]:
    server = WeedS3(tmp_path_factory.mktemp("weed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(request: pytest.FixtureRequest) -> str:
    """A bucket name no other test of the session uses (it does not exist yet)."""
    return f"rec-{next(_buckets)}-{abs(hash(request.node.name)) % 10**6}"


@pytest.fixture
def own_weed(tmp_path: Path) -> Iterator[WeedS3]:
    """A store of this test's own, which it may kill and start again."""
    server = WeedS3(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        server.stop()
