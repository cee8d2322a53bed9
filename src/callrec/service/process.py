"""Process-wide set-up of a recording process (``callrec serve`` or a media worker)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, Final

#: Seconds a thread waits for the GIL before the holder is asked to let go (Python: 0.005).
SWITCH_INTERVAL: Final = 0.0005


def raise_descriptor_limit() -> None:
    """Every call holds a UDP socket, a TCP connection and a file: ask for all we may have."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform dependent
        pass


def prepare_process() -> None:
    """Descriptors and GIL hand-over of a recording process."""
    raise_descriptor_limit()
    # The event loop keeps the GIL busy under load; a catalogue or file thread that waits
    # for it would otherwise wait 5 ms at each of its many releases (SQLite, file I/O), and
    # a start's catalogue insert then takes seconds. Ask for the GIL to change hands sooner.
    sys.setswitchinterval(SWITCH_INTERVAL)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop (asyncio's own loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
