"""The throwaway PostgreSQL cluster of the fault-injection tests (``pg_cluster``): it starts on
a port of its own, stops, hangs (SIGSTOP), resumes and restarts, keeps its data across, is
always cleaned up, and carries the real catalogue."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from callrec.catalog import Catalog
from callrec.exceptions import CatalogError
from tests.support import pgcluster
from tests.support.catalog import finish_values, get_row, new_recording
from tests.support.pgcluster import PgCluster, StopMode

#: Seconds within which a running server answers a test's query: never reached.
ANSWER = 10.0
#: Seconds a paused server is given to answer, to show that it does not.
SILENCE = 0.3


def _write_row(cluster: PgCluster, value: str) -> None:
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS note (value text PRIMARY KEY)")
        conn.execute("INSERT INTO note VALUES (%s)", (value,))


def _rows(cluster: PgCluster) -> list[str]:
    with cluster.connect() as conn:
        return [row[0] for row in conn.execute("SELECT value FROM note ORDER BY value")]


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _query_in_thread(
    conn: psycopg.Connection[tuple[object, ...]],
) -> tuple[threading.Thread, list[object]]:
    """``SELECT 42`` on ``conn`` in a thread; the list gets its result or exception."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(conn.execute("SELECT 42").fetchone())
        except psycopg.Error as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_cluster_of_its_own_takes_a_write(pg_cluster: PgCluster) -> None:
    assert pg_cluster.is_running and not pg_cluster.is_paused
    assert pg_cluster.port not in (0, pgcluster.SHARED_PORT)
    assert pg_cluster.url == f"postgresql+psycopg://callrec@127.0.0.1:{pg_cluster.port}/callrec"
    # The server is this cluster's: its data directory, its socket, under the cluster's root.
    pid = pg_cluster.postmaster_pid
    assert pid is not None and pid in pg_cluster.pids()
    assert str(pg_cluster.data_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert (pg_cluster.root / f".s.PGSQL.{pg_cluster.port}").is_socket()
    if os.geteuid() == 0:  # PostgreSQL refuses root: the server runs as an unprivileged user
        assert Path(f"/proc/{pid}").stat().st_uid != 0
        assert pg_cluster.data_dir.stat().st_uid != 0

    _write_row(pg_cluster, "first")
    assert _rows(pg_cluster) == ["first"]
    with pg_cluster.connect() as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("callrec", "callrec")


def test_paused_server_hangs_until_resumed(pg_cluster: PgCluster) -> None:
    with pg_cluster.connect(autocommit=True) as conn:
        conn.execute("SELECT 1")
        pg_cluster.pause()
        try:  # resumed whatever happens: the connection's exit needs an answering server
            assert pg_cluster.is_paused and pg_cluster.is_running
            assert {_proc_state(pid) for pid in pg_cluster.pids()} == {"T"}

            # An open connection's query waits, without error, as long as the server hangs.
            thread, outcome = _query_in_thread(conn)
            thread.join(SILENCE)
            assert thread.is_alive() and not outcome
            # A new connection: the kernel takes it, the server never answers;
            # connect_timeout (2 s at the least) ends the wait.
            with pytest.raises(psycopg.errors.ConnectionTimeout):
                pg_cluster.connect(connect_timeout=2)
        finally:
            pg_cluster.resume()
        assert not pg_cluster.is_paused
        thread.join(ANSWER)
        assert outcome == [(42,)]
    _write_row(pg_cluster, "after the hang")
    assert _rows(pg_cluster) == ["after the hang"]


def test_a_query_stuck_on_a_paused_server_fails_once_its_socket_is_shut(
    pg_cluster: PgCluster,
) -> None:
    """What releases a client stuck on a hung server (keepalives, tcp_user_timeout and
    statement_timeout do not): shutting its socket down from another thread."""
    with pg_cluster.connect(autocommit=True) as conn:
        conn.execute("SELECT 1")
        pg_cluster.pause()
        try:
            thread, outcome = _query_in_thread(conn)
            thread.join(SILENCE)
            assert thread.is_alive()
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            thread.join(ANSWER)
            assert not thread.is_alive()
            assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError)
        finally:
            pg_cluster.resume()
    _write_row(pg_cluster, "still serving")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_stopped_server_refuses_then_restarts_with_its_data(
    pg_cluster: PgCluster, mode: StopMode
) -> None:
    _write_row(pg_cluster, "before")
    url = pg_cluster.url
    with pg_cluster.connect(autocommit=True) as conn:
        pg_cluster.stop(mode)
        assert not pg_cluster.is_running and pg_cluster.postmaster_pid is None
        with pytest.raises(psycopg.OperationalError):  # the session was ended
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="refused"):
        pg_cluster.connect()
    pg_cluster.stop(mode)  # already stopped: nothing to do

    pg_cluster.start()
    assert pg_cluster.url == url
    assert _rows(pg_cluster) == ["before"]
    pg_cluster.restart(mode)
    _write_row(pg_cluster, "after")
    assert _rows(pg_cluster) == ["after", "before"]


def test_stop_resumes_a_paused_server(pg_cluster: PgCluster) -> None:
    pg_cluster.pause()
    pg_cluster.stop()
    assert not pg_cluster.is_running and not pg_cluster.is_paused
    pg_cluster.start()
    _write_row(pg_cluster, "x")


@pytest.mark.parametrize("state", ["never started", "running", "paused", "stopped"])
def test_cleanup_leaves_no_process_and_no_directory(pg_cluster: PgCluster, state: str) -> None:
    """A cluster of the test's own beside the fixture's, cleaned up in each state."""
    cluster = PgCluster()
    if state != "never started":
        cluster.start()
    pids = cluster.pids()
    if state == "paused":
        cluster.pause()
    elif state == "stopped":
        cluster.stop()
    cluster.cleanup()
    cluster.cleanup()  # idempotent
    assert not cluster.is_running
    assert not cluster.root.exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    # The other cluster never noticed.
    _write_row(pg_cluster, "untouched")


def test_the_catalogue_migrates_writes_and_outlives_a_restart(pg_cluster: PgCluster) -> None:
    with Catalog(pg_cluster.url) as catalog:
        catalog.migrate()
        assert catalog.revision() is not None
        rec_id = catalog.create_recording(new_recording())
        pg_cluster.restart("immediate")
        # The pooled connection died with the server; the pre-ping replaces it.
        catalog.finish_recording(rec_id, **finish_values())
        assert get_row(catalog, rec_id).status == "complete"

        pg_cluster.stop()
        with pytest.raises(CatalogError):
            catalog.get(rec_id)
        pg_cluster.start()
        assert get_row(catalog, rec_id).status == "complete"


def test_settings_override_the_defaults(pg_cluster: PgCluster) -> None:
    with PgCluster(settings={"max_connections": "20"}) as cluster:
        cluster.start()
        with cluster.connect() as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("20",)
    with pg_cluster.connect() as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("100",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def test_no_server_programs_is_a_reason_to_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(pgcluster.BINDIR_VARIABLE, str(tmp_path))
    reason = pgcluster._find_installation()
    assert isinstance(reason, str)
    assert "no PostgreSQL server programs" in reason and str(tmp_path) in reason


def test_what_a_killed_test_process_left_is_swept_away(tmp_path: Path) -> None:
    """A test process killed with its cluster paused: the next one ends that server and
    removes its directory."""
    script = (
        "import os, signal\n"
        "from tests.support.pgcluster import PgCluster\n"
        "cluster = PgCluster()\n"
        "cluster.start()\n"
        "cluster.pause()\n"
        "print(cluster.root, *cluster.pids(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    root, *pids = done.stdout.split()
    left = Path(root)
    assert left.exists() and all(_proc_state(int(pid)) == "T" for pid in pids)

    pgcluster._sweep(left.parent)
    assert not left.exists()
    # Dead; zombies at most, their parent gone and init left to reap them.
    assert not any(pgcluster._alive(int(pid)) for pid in pids)
