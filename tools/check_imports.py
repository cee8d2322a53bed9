"""Check that the imports inside ``src/callrec`` keep the shape docs/architecture.md draws.

Every import counts, at module level or inside a function, under ``TYPE_CHECKING`` or not: a
dependency is a dependency. The check fails (exit status 1, one line per finding) on:

* a cycle between callrec's subpackages (``engine`` -> ``web`` -> ``engine``);
* a cycle between modules (two modules of a package importing each other);
* a forbidden arrow: a front end reaching another front end (the web or SIP reaching the phone
  server's modules, and so on), anything but the command line reaching the composition root,
  the engine reaching a front end, the catalogue reaching past its own values;
* a protocol core (``control``, ``rtp``, ``codecs``, ``media``, and the sans-I/O modules of
  ``sip``) importing the event loop, sockets, or the layers above it.

Run by ``make check``; ``python tools/check_imports.py --graph`` prints the subpackage graph.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "callrec"

#: Subpackage -> subpackages it must never import.
FRONT_ENDS = {"server", "sip", "web", "usb"}
FORBIDDEN: dict[str, set[str]] = {
    "engine": FRONT_ENDS | {"service", "cli", "sim", "jobs"},
    "server": (FRONT_ENDS - {"server"}) | {"service", "cli", "sim", "jobs"},
    "sip": (FRONT_ENDS - {"sip"}) | {"service", "cli", "sim", "jobs"},
    "web": {"server", "sip", "service", "cli", "sim", "jobs"},
    "usb": (FRONT_ENDS - {"usb"}) | {"service", "cli", "sim", "jobs"},
    "service": {"cli", "sim"},
    # Work after a call: the catalogue and the engine's observers, never a front end; only
    # the composition root and the command line build a runner.
    "jobs": FRONT_ENDS | {"service", "cli", "sim"},
    # The object store (issue 17): a client of the store and the catalogue, used by the jobs,
    # the web and the command line; it knows no front end and no runner.
    "storage": FRONT_ENDS | {"engine", "service", "cli", "sim", "jobs"},
    # The simulators are clients: they may read the catalogue to check what was recorded.
    "sim": {"engine", "server", "sip", "web", "usb", "service", "jobs"},
    "catalog": {"engine", "server", "sip", "web", "usb", "service", "cli", "sim", "jobs"}
    | {"storage", "control", "codecs", "media", "transcribe"},
    # Speech to text: engines over PCM and the recording files; the job stores what they hear.
    "transcribe": {"engine", "server", "sip", "web", "usb", "service", "cli", "sim", "jobs"}
    | {"catalog", "net", "control", "rtp"},
    # Addresses and sockets, under every layer that touches the network.
    "net": {"engine", "server", "sip", "web", "usb", "service", "cli", "sim", "catalog", "jobs"}
    | {"control", "rtp", "codecs", "media"},
}
#: Modules a subpackage may import although their subpackage is forbidden to it: the web's
#: delete paths emit webhook events (a job queued in their transaction), without a runner.
ALLOWED: dict[str, set[str]] = {"web": {f"{PACKAGE}.jobs.events"}}
#: Only these subpackages may import the composition root.
ROOT_USERS = {"cli", "service"}
#: Protocol cores: no event loop, no sockets, nothing from the layers above.
CORE_PACKAGES = {"control", "rtp", "codecs", "media"}
CORE_MODULES = {
    f"{PACKAGE}.sip.{name}"
    for name in (
        "accounts",
        "auth",
        "core",
        "dialog",
        "errors",
        "events",
        "headers",
        "limits",
        "message",
        "peer",
        "recorder",
        "registrar",
        "sdp",
        "transaction",
    )
}
CORE_MAY_NOT = {"asyncio", "socket", "selectors", "uvloop", "sqlalchemy"}
CORE_MAY_NOT_SUBPACKAGES = {
    "catalog",
    "engine",
    "server",
    "sip",
    "web",
    "usb",
    "service",
    "cli",
    "jobs",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            # ``from callrec.sip import server`` imports the module callrec.sip.server.
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def subpackage(module: str) -> str:
    """``callrec.engine.live`` -> ``engine``; a top-level module is its own subpackage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check(root: Path = ROOT) -> tuple[list[str], dict[str, set[str]]]:
    """The problems in the ``callrec`` package under ``root``, and its subpackage graph."""
    modules = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    problems: list[str] = []
    module_graph: dict[str, set[str]] = {m: set() for m in modules}
    package_graph: dict[str, set[str]] = {}
    for name, path in sorted(modules.items()):
        rel = path.relative_to(root.parent)
        own = subpackage(name)
        package_graph.setdefault(own, set())
        core = own in CORE_PACKAGES or name in CORE_MODULES
        for target, line in imports(path, name):
            top = target.split(".")[0]
            if core and top in CORE_MAY_NOT:
                problems.append(f"{rel}:{line}: protocol core imports {target}")
            if top != PACKAGE:
                continue
            # The deepest module of ours that the import names (a name inside it is no module).
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target not in modules or target == name or name.startswith(f"{target}."):
                # A module's own packages are imported with it anyway: no edge.
                continue
            module_graph[name].add(target)
            theirs = subpackage(target)
            if theirs == own:
                continue
            package_graph[own].add(theirs)
            if theirs in FORBIDDEN.get(own, ()) and target not in ALLOWED.get(own, ()):
                problems.append(f"{rel}:{line}: {own}/ must not import {target}")
            if theirs == "service" and own not in ROOT_USERS:
                problems.append(f"{rel}:{line}: only the command line imports {target}")
            if core and theirs in CORE_MAY_NOT_SUBPACKAGES:
                problems.append(f"{rel}:{line}: protocol core imports {target}")
    for cycle in find_cycles(package_graph):
        problems.append(f"import cycle between subpackages: {' <-> '.join(cycle)}")
    for cycle in find_cycles(module_graph):
        problems.append(f"import cycle between modules: {' <-> '.join(cycle)}")
    return problems, package_graph


def main(argv: list[str]) -> int:
    problems, graph = check()
    if "--graph" in argv:
        for node in sorted(graph):
            print(f"{node} -> {', '.join(sorted(graph[node])) or '-'}")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} import problem(s); see tools/check_imports.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
