"""The import check `make check` runs (tools/check_imports.py): the tree passes it, and it
finds what it is there to find."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_imports.py"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"callrec/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_source_tree_keeps_its_shape(tool: ModuleType) -> None:
    problems, graph = tool.check()
    assert problems == []
    # The arrows the architecture is about, as they are.
    assert "engine" in graph["server"] and "engine" in graph["sip"] and "engine" in graph["web"]
    assert not graph["engine"] & {"server", "sip", "web", "usb", "service"}
    assert {"server", "sip", "web", "usb", "engine", "jobs"} <= graph["service"]
    assert not graph["jobs"] & {"server", "sip", "web", "usb", "service", "cli"}


def test_a_cycle_between_subpackages_is_found(tool: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "callrec/media/__init__.py": "",
            "callrec/media/a.py": "from callrec.codecs.b import x\n",
            "callrec/codecs/__init__.py": "",
            "callrec/codecs/b.py": "def f():\n    import callrec.media.a\n",
        },
    )
    problems, _ = tool.check(root)
    assert "import cycle between subpackages: codecs <-> media" in problems
    assert "import cycle between modules: callrec.codecs.b <-> callrec.media.a" in problems


def test_forbidden_arrows_are_found(tool: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "callrec/server/__init__.py": "",
            "callrec/server/listener.py": "",
            "callrec/web/__init__.py": "",
            "callrec/web/live.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from callrec.server.listener import PhoneServer\n"
            ),
            "callrec/service/__init__.py": "",
            "callrec/engine/__init__.py": "import callrec.service\n",
            "callrec/rtp/__init__.py": "",
            "callrec/rtp/stream.py": "import asyncio\nfrom callrec import engine\n",
        },
    )
    problems, _ = tool.check(root)
    # Paths are given from the folder above the package (src/ in the real tree).
    found = {p.removeprefix(f"{tmp_path.name}/") for p in problems}
    assert "callrec/web/live.py:3: web/ must not import callrec.server.listener" in found
    assert "callrec/engine/__init__.py:1: engine/ must not import callrec.service" in found
    assert "callrec/engine/__init__.py:1: only the command line imports callrec.service" in found
    assert "callrec/rtp/stream.py:1: protocol core imports asyncio" in found
    assert "callrec/rtp/stream.py:2: protocol core imports callrec.engine" in found


def test_a_package_importing_its_own_parent_is_no_cycle(tool: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "callrec/web/__init__.py": "from callrec.web.app import create\n",
            "callrec/web/app.py": "from callrec.web import pages\n",
            "callrec/web/pages.py": "",
        },
    )
    assert tool.check(root)[0] == []


def test_the_web_may_emit_events_but_not_run_jobs(tool: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "callrec/jobs/__init__.py": "",
            "callrec/jobs/events.py": "",
            "callrec/jobs/runner.py": "",
            "callrec/web/__init__.py": "",
            "callrec/web/delete.py": "from callrec.jobs.events import DELETED, emit_in\n",
            "callrec/web/run.py": "from callrec.jobs.runner import JobRunner\n",
            "callrec/engine/__init__.py": "import callrec.jobs.events\n",
        },
    )
    problems, _ = tool.check(root)
    found = {p.removeprefix(f"{tmp_path.name}/") for p in problems}
    assert found == {
        "callrec/web/run.py:1: web/ must not import callrec.jobs.runner",
        "callrec/engine/__init__.py:1: engine/ must not import callrec.jobs.events",
    }
