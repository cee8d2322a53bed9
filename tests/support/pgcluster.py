"""A throwaway PostgreSQL cluster of a test's own, to stop, hang and restart at will (issue 12).

The shared server of the catalogue tests (127.0.0.1:5432, :mod:`tests.support.postgres`) must
never be stopped or paused; a fault-injection test starts a :class:`PgCluster` instead: a data
directory in a new temporary directory, the server on a free port of 127.0.0.1 (never 5432),
its Unix socket in that directory, trust authentication, superuser ``callrec`` and a database
``callrec``, tuned for speed (``fsync=off``: a cluster that lives for one test).

``initdb`` and ``postgres`` refuse to run as root: as root (CI, containers) the cluster belongs
to the ``postgres`` system user (``nobody`` if there is none) and every server command runs as
that user; otherwise it runs as the current user. ``initdb`` runs once per test process (about
0.6 s), into a template that each cluster copies (about 0.03 s in ``/dev/shm``, where clusters
live when it has room, 0.1 to 0.4 s on a disk); the server starts in about 0.02 s. The test
process is the server's parent (no ``pg_ctl``): it reaps it, and knows at once when it exits.
Directories and servers left behind by a test process that was killed are removed by the next
one.

Faults: :meth:`PgCluster.stop` (``fast``: clients are told; ``immediate``: a crash, recovery at
the next start), :meth:`PgCluster.pause` (SIGSTOP to the postmaster and every process it
forked: a hung server whose kernel still accepts TCP connections and acknowledges data) and
:meth:`PgCluster.resume`, :meth:`PgCluster.restart`. :meth:`PgCluster.cleanup` always works,
paused or not, and every wait is bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psycopg

from tests.support.net import free_tcp_port

#: The port of the shared server, which a cluster never takes.
SHARED_PORT = 5432
#: Database, superuser and listen address of every cluster.
DATABASE = "callrec"
SUPERUSER = "callrec"
HOST = "127.0.0.1"
#: Seconds a start (until the server accepts connections) or a stop (until it exits) may take.
START_SECONDS = 30
STOP_SECONDS = 10
#: Seconds a signalled process may take to stop (SIGSTOP) or to exit (SIGKILL).
SIGNAL_SECONDS = 5.0
#: A file system in memory, where clusters live if it has :data:`MEMORY_DIR_ROOM` bytes free
#: (containers often keep it at 64 MiB: then the temporary directory).
MEMORY_DIR = "/dev/shm"
MEMORY_DIR_ROOM = 1 << 30
#: Whom the cluster runs as when the tests run as root, in order of preference.
UNPRIVILEGED_USERS = ("postgres", "nobody")
#: Directories that hold one PostgreSQL version's server programs each (Debian, Ubuntu, RHEL).
BINDIR_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
#: Environment variable naming a ``bin`` directory to use instead of the newest one found.
BINDIR_VARIABLE = "CALLREC_PG_BINDIR"
#: The programs a cluster needs.
PROGRAMS = ("initdb", "postgres")

#: Server settings of every cluster: fast, small, quiet, enough connections for ~20 clients and
#: the pools of a few catalogue engines. ``fsync`` and ``full_page_writes`` only matter when
#: the machine fails; ``synchronous_commit`` stays on: a commit survives ``stop("immediate")``.
SETTINGS: dict[str, str] = {
    "listen_addresses": f"'{HOST}'",
    "max_connections": "100",
    "shared_buffers": "16MB",
    "fsync": "off",
    "full_page_writes": "off",
    "min_wal_size": "2MB",  # two segments of 1 MB (initdb --wal-segsize): less to copy
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
    "dynamic_shared_memory_type": "mmap",  # not /dev/shm, which containers keep small
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}

StopMode = Literal["smart", "fast", "immediate"]
#: The signal of each shutdown mode (what ``pg_ctl stop -m MODE`` sends the postmaster).
STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


class PgClusterError(RuntimeError):
    """A cluster command failed; the message includes the end of the server's log."""


@dataclass(frozen=True)
class Installation:
    """PostgreSQL's server programs, and who runs them."""

    bindir: Path
    version: tuple[int, ...]
    #: The user the server runs as: None for this process's own user.
    user: pwd.struct_passwd | None

    def program(self, name: str) -> str:
        return str(self.bindir / name)


# -- finding the programs ------------------------------------------------------------------


def _version(bindir: Path) -> tuple[int, ...] | None:
    """The version of ``bindir/postgres`` (``postgres (PostgreSQL) 15.20 (Debian ...)``)."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", out)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / p, os.X_OK) and (bindir / p).is_file() for p in PROGRAMS)


def _candidate_bindirs() -> Iterator[Path]:
    for pattern in BINDIR_GLOBS:
        yield from (Path(p) for p in sorted(Path("/").glob(pattern.lstrip("/"))))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                yield Path(out)
    for program in PROGRAMS:
        found = shutil.which(program)
        if found:
            yield Path(found).resolve().parent


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


_found: list[Installation | str] = []
_found_lock = threading.Lock()


def find_installation() -> Installation | str:
    """The newest complete set of server programs (``initdb``, ``postgres``), or
    why there is none. ``$CALLREC_PG_BINDIR`` overrides the search. Looked up once."""
    with _found_lock:
        if not _found:
            _found.append(_find_installation())
        return _found[0]


def _find_installation() -> Installation | str:
    override = os.environ.get(BINDIR_VARIABLE)
    if override:
        candidates: Iterable[Path] = [Path(override)]
    else:
        candidates = dict.fromkeys(_candidate_bindirs())  # in order, without repeats
    best: tuple[tuple[int, ...], Path] | None = None
    for bindir in candidates:
        if not _complete(bindir):
            continue
        version = _version(bindir)
        if version is not None and (best is None or version > best[0]):
            best = (version, bindir)
    if best is None:
        where = override or ", ".join(BINDIR_GLOBS) + ", pg_config --bindir, PATH"
        return (
            f"no PostgreSQL server programs ({', '.join(PROGRAMS)}) in {where};"
            " install them (Debian: apt-get install postgresql) or set $" + BINDIR_VARIABLE
        )
    user = None
    if os.geteuid() == 0:
        user = _unprivileged_user()
        if user is None:
            return (
                "running as root, and no unprivileged user to run PostgreSQL as"
                f" (tried {', '.join(UNPRIVILEGED_USERS)})"
            )
    return Installation(bindir=best[1], version=best[0], user=user)


def unavailable() -> str | None:
    """Why no cluster can be made here (no server programs), or None."""
    found = find_installation()
    return found if isinstance(found, str) else None


def installation() -> Installation:
    found = find_installation()
    if isinstance(found, str):
        raise PgClusterError(found)
    return found


# -- processes -----------------------------------------------------------------------------


def _environment(home: Path) -> dict[str, str]:
    """This process's environment without libpq's variables (``PGPORT``...), C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC", HOME=str(home))
    return env


def _run(
    inst: Installation, args: list[str], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``args`` as the cluster's user, output captured; never raises on a failed command."""
    kwargs: dict[str, Any] = {}
    if inst.user is not None:
        kwargs.update(user=inst.user.pw_uid, group=inst.user.pw_gid, extra_groups=[])
    try:
        return subprocess.run(
            args,
            cwd=cwd,
            env=_environment(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode() if isinstance(exc.output, bytes) else (exc.output or "")
        return subprocess.CompletedProcess(args, -1, out + f"\n(killed after {timeout:g} s)")


def _state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, T, Z...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no /proc (macOS): alive or not
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return "?"
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (the postmaster's backends and workers)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return {int(p) for p in out.split()}
    kids = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.add(int(entry.name))
    return kids


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kill(pids: set[int]) -> None:
    """SIGKILL (which ends stopped processes too), then wait until each is dead or a zombie."""
    _signal(pids, signal.SIGKILL)
    _wait(lambda: not any(_alive(p) for p in pids), "the server processes to die (SIGKILL)")


def _wait(condition: Callable[[], bool], what: str, timeout: float = SIGNAL_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PgClusterError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


# -- the template --------------------------------------------------------------------------


def _base_dir(inst: Installation) -> Path:
    """Where clusters live: :data:`MEMORY_DIR` if it has room (copies and removals take
    several times less there than on a disk), else the temporary directory if the cluster's
    user can reach it, else ``/tmp``."""
    try:
        room = os.statvfs(MEMORY_DIR)
        if room.f_bavail * room.f_frsize >= MEMORY_DIR_ROOM and os.access(MEMORY_DIR, os.W_OK):
            return Path(MEMORY_DIR)
    except OSError:
        pass
    base = Path(tempfile.gettempdir()).resolve()
    if inst.user is None:
        return base
    # Every directory above must let "others" through (the cluster's user is neither owner
    # nor group of a root-owned $TMPDIR); /tmp always does.
    if all(os.stat(p).st_mode & 0o001 for p in (base, *base.parents)):
        return base
    return Path("/tmp")


#: Every cluster directory is named ``callrec-pg-PID-...``, PID that of the test process.
DIR_PREFIX = "callrec-pg-"


def _make_dir(inst: Installation, kind: str) -> Path:
    prefix = f"{DIR_PREFIX}{os.getpid()}-{kind}"
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=_base_dir(inst)))
    if inst.user is not None:
        os.chown(root, inst.user.pw_uid, inst.user.pw_gid)
    return root


def _sweep(base: Path) -> None:
    """Remove the cluster directories of test processes that are gone (killed before their
    clean-up ran), and end any server still running in one (paused ones too)."""
    for root in base.glob(f"{DIR_PREFIX}*"):
        owner = root.name.removeprefix(DIR_PREFIX).split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if _alive(pid) and str(root / "data").encode() in cmdline:
                with contextlib.suppress(PgClusterError):
                    _kill({pid} | _children(pid))
        shutil.rmtree(root, ignore_errors=True)


def _write_settings(data_dir: Path, settings: Mapping[str, str]) -> None:
    """Append ``settings`` to ``postgresql.conf`` (a later line wins over an earlier one)."""
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/support/pgcluster.py\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


_template: list[Path] = []
_template_lock = threading.Lock()


def _template_data_dir(inst: Installation) -> Path:
    """A stopped, configured data directory with the database ``callrec``, made once per
    process (``initdb``, one start to create the database, a stop), removed at exit."""
    with _template_lock:
        if not _template:
            _sweep(_base_dir(inst))
            cluster = PgCluster._empty(inst, _make_dir(inst, "template-"))
            try:
                cluster._initdb()
                cluster.start()
                with cluster.connect(dbname="postgres", autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                cluster.stop()
            except BaseException:
                cluster.cleanup()
                raise
            _template.append(cluster.data_dir)  # cleaned up at exit, with the live clusters
        return _template[0]


# -- the cluster ---------------------------------------------------------------------------

_live: set[PgCluster] = set()


@atexit.register
def _cleanup_all() -> None:
    """A test process interrupted before its fixtures' finalizers ran leaves no server."""
    for cluster in list(_live):
        cluster.cleanup()


class PgCluster:
    """A PostgreSQL cluster in a temporary directory of its own, not started yet.

    ``settings`` are added to (and override) :data:`SETTINGS`. The port is chosen once: a
    restarted server listens on the same one, so :attr:`url` stays valid. Use as a context
    manager, or call :meth:`cleanup`.
    """

    root: Path
    data_dir: Path
    log_path: Path
    port: int

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        inst = installation()
        template = _template_data_dir(inst)
        root = _make_dir(inst, "")
        self._setup(inst, root)
        try:
            copied = _run(
                inst, ["cp", "-a", str(template), str(self.data_dir)], cwd=root, timeout=60
            )
            if copied.returncode != 0:
                raise PgClusterError(f"cannot copy the template cluster: {copied.stdout}")
            self._configure(settings or {})
        except BaseException:
            self.cleanup()
            raise

    @classmethod
    def _empty(cls, inst: Installation, root: Path) -> PgCluster:
        """A cluster in ``root`` without a data directory yet (the template's)."""
        cluster = cls.__new__(cls)
        cluster._setup(inst, root)
        return cluster

    def _setup(self, inst: Installation, root: Path) -> None:
        self._inst = inst
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.port = 0
        self._started_once = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused: set[int] = set()
        self._cleaned = False
        _live.add(self)

    def _initdb(self) -> None:
        done = _run(
            self._inst,
            [
                self._inst.program("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--wal-segsize",
                "1",  # MB: a smaller directory to copy
            ],
            cwd=self.root,
            timeout=120,
        )
        if done.returncode != 0:
            raise PgClusterError(f"initdb failed ({done.returncode}):\n{done.stdout}")
        self._configure({})

    def _configure(self, settings: Mapping[str, str]) -> None:
        self._choose_port()
        _write_settings(self.data_dir, {**SETTINGS, **settings})

    def _choose_port(self) -> None:
        port = SHARED_PORT
        while port == SHARED_PORT:
            port = free_tcp_port()
        self.port = port
        _write_settings(
            self.data_dir, {"port": str(port), "unix_socket_directories": f"'{self.root}'"}
        )

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<PgCluster {HOST}:{self.port} {state} in {self.root}>"

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database ``callrec`` (psycopg 3), for :class:`Catalog`."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{DATABASE}"

    def conninfo(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`psycopg.connect` for the database ``callrec``."""
        return {"host": HOST, "port": self.port, "user": SUPERUSER, "dbname": DATABASE} | overrides

    def connect(self, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """A psycopg connection over TCP; ``connect_timeout`` (whole seconds, at least 2)
        defaults to 5, so a paused server fails it rather than hangs it."""
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(**self.conninfo(**kwargs))

    # -- state -----------------------------------------------------------------------------

    @property
    def postmaster_pid(self) -> int | None:
        """The server's main process while it runs (paused or not), else None."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """The server process exists (a paused server is running, but hung)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return bool(self._paused)

    def pids(self) -> set[int]:
        """The postmaster and every process it forked (backends, background workers)."""
        pid = self.postmaster_pid
        return set() if pid is None else {pid} | _children(pid)

    def log(self, tail: int = 30) -> str:
        """The last ``tail`` lines of the server's log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-tail:])

    # -- control ---------------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        """``postgres -D data``, its output appended to the log, in a session of its own (a
        Ctrl-C of the tests does not reach it; :meth:`cleanup` stops it)."""
        kwargs: dict[str, Any] = {}
        if self._inst.user is not None:
            user = self._inst.user
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        with self.log_path.open("ab") as log:
            if self._inst.user is not None:
                os.fchown(log.fileno(), self._inst.user.pw_uid, self._inst.user.pw_gid)
            return subprocess.Popen(
                [self._inst.program("postgres"), "-D", str(self.data_dir)],
                cwd=self.root,
                env=_environment(self.root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,
            )

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """``postmaster.pid`` names ``proc`` and says ``ready`` (what ``pg_ctl -w`` waits
        for); raises if the server exited."""
        if proc.poll() is not None:
            raise PgClusterError(f"the server exited with status {proc.returncode}")
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) > 7 and lines[0] == str(proc.pid) and lines[7].strip() == "ready"

    def start(self, timeout: float = START_SECONDS) -> None:
        """Start the server and wait until it accepts connections (a no-op if it runs).

        The first start may move to another free port if its own was taken meanwhile."""
        if self.is_running:
            return
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn()
            self._proc = proc
            try:
                _wait(partial(self._ready, proc), "the server to accept connections", timeout)
            except PgClusterError as exc:
                self.kill()
                with self.log_path.open("rb") as log:
                    log.seek(log_size)
                    said = log.read().decode(errors="replace")
                if attempt + 1 < attempts and "Address already in use" in said:
                    self._choose_port()
                    continue
                raise PgClusterError(
                    f"cannot start the cluster on port {self.port}: {exc}\n"
                    f"-- {self.log_path}:\n{said.strip()}"
                ) from None
            self._started_once = True
            return

    def stop(self, mode: StopMode = "fast", timeout: float = STOP_SECONDS) -> None:
        """Stop the server (what ``pg_ctl stop -m MODE`` sends) and wait until it has exited:
        ``fast`` ends every session (the clients are told), ``immediate`` is a crash (no
        checkpoint; recovery at the next start), ``smart`` waits for the clients to leave. A
        paused server is resumed first. A no-op if it is not running."""
        if self._paused:
            self.resume()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(STOP_SIGNALS[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PgClusterError(
                f"the server did not stop ({mode}) within {timeout:g} s\n"
                f"-- {self.log_path}:\n{self.log()}"
            ) from None

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (``mode``), then start on the same port."""
        self.stop(mode)
        self.start()

    def pause(self) -> None:
        """Hang the server: SIGSTOP to the postmaster, then to every process it forked.

        Its sockets stay open, so the kernel still completes TCP handshakes and acknowledges
        what clients send; nothing answers. Returns once every process is stopped."""
        pid = self.postmaster_pid
        if pid is None:
            raise PgClusterError("cannot pause a cluster that is not running")
        # The postmaster first: once it is stopped it forks no more backends.
        os.kill(pid, signal.SIGSTOP)
        self._paused.add(pid)
        _wait(lambda: _state(pid) in ("T", "?"), f"postmaster {pid} to stop (SIGSTOP)")
        while new := _children(pid) - self._paused:
            _signal(new, signal.SIGSTOP)
            self._paused |= new
        _wait(
            lambda: all(_state(p) in (None, "T", "Z", "X", "?") for p in self._paused),
            "every server process to stop (SIGSTOP)",
        )

    def resume(self) -> None:
        """Undo :meth:`pause`: SIGCONT to every server process (a no-op if not paused)."""
        _signal(self._paused | self.pids(), signal.SIGCONT)
        self._paused.clear()

    def kill(self) -> None:
        """SIGKILL to every server process, waiting until they are gone (the last resort of
        :meth:`cleanup`; a test wanting a crash uses ``stop("immediate")``)."""
        pids = self._paused | self.pids()
        self._paused.clear()
        _kill(pids)
        if self._proc is not None:
            self._proc.wait(SIGNAL_SECONDS)  # reaped: no zombie left behind

    def cleanup(self) -> None:
        """Stop the server whatever its state and remove its directory; idempotent, bounded
        (at most about ``STOP_SECONDS`` + ``SIGNAL_SECONDS``)."""
        if self._cleaned:
            return
        try:
            with contextlib.suppress(PgClusterError):
                self.stop("immediate")
            if self.is_running or any(_alive(p) for p in self._paused):
                self.kill()
        finally:
            self._cleaned = True
            _live.discard(self)
            shutil.rmtree(self.root, ignore_errors=True)
