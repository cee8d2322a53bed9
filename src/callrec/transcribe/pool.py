"""Transcription off the recording path: a few worker processes at low CPU priority.

``callrec serve`` records in its own processes; an engine decoding a call takes a whole core
while it runs. So engines run in :data:`NICE`-niced worker processes, at most
``transcribe_workers`` of them, each loading its engine once: the kernel gives recording the
CPU first, and transcription the rest. The workers are started with ``spawn`` (not ``fork``:
the server has threads, and a forked child of a threaded process may hang on a lock).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Final

from callrec.transcribe.audio import Transcription, transcribe_file
from callrec.transcribe.base import Engine
from callrec.transcribe.registry import load_engine

#: Added to the workers' nice value: below every process that records.
NICE: Final = 10

_engine: Engine | None = None


def _start_worker(name: str, model_dir: str, language: str, nice: int) -> None:
    global _engine
    if nice:
        os.nice(nice)
    _engine = load_engine(name, model_dir=model_dir, language=language)


def _run(path: str, extra: Mapping[str, Any]) -> Transcription:
    assert _engine is not None, "the worker's initializer loads the engine"
    return transcribe_file(_engine, Path(path), extra)


class TranscriberPool:
    """``workers`` niced processes, each with the engine loaded; started at the first
    transcription (a server that never transcribes starts no process and opens no pipe)."""

    def __init__(
        self,
        name: str,
        *,
        model_dir: str = "",
        language: str = "en",
        workers: int = 1,
        nice: int = NICE,
    ) -> None:
        self.engine = name
        self.workers = workers
        self._args = (name, model_dir, language, nice)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=self._args,
                )
            return self._executor

    async def transcribe(self, path: Path, extra: Mapping[str, Any]) -> Transcription:
        """Transcribe the recording at ``path`` in a worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), _run, str(path), dict(extra))

    def transcribe_blocking(self, path: Path, extra: Mapping[str, Any]) -> Transcription:
        return self._pool().submit(_run, str(path), dict(extra)).result()

    def submit(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker (tests: what a worker's process is like)."""
        return self._pool().submit(fn, *args).result(timeout=120)

    def close(self) -> None:
        """Stop the workers (a transcription under way is abandoned: its job runs again)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            # The processes as they are now: shutdown forgets them. A decode under way would
            # otherwise hold the interpreter's exit for as long as it runs.
            processes = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                if process.is_alive():
                    process.terminate()
