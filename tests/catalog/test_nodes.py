"""The catalogue's side of several nodes (docs/scaling.md): each recording names its node,
the list filters by it, start-up recovery keeps to its own node's open rows, and the live
calls each node publishes expire when the node stops refreshing them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from callrec.catalog import Catalog, SearchQuery
from callrec.catalog.livecalls import LiveCallStore, NodeHolder, NodeNameInUse
from callrec.config import Settings
from callrec.engine.recovery import recover_unfinished
from callrec.retention.sweep import finish_pending, quota_sweep
from tests.support.catalog import T0, finish_values, new_recording


def test_a_recording_keeps_its_node_and_the_search_filters_by_it(catalog: Catalog) -> None:
    a = catalog.create_recording(new_recording(1, node="alpha"))
    b = catalog.create_recording(new_recording(2, node="beta"))
    old = catalog.create_recording(new_recording(3))  # from before nodes
    for rec_id in (a, b, old):
        catalog.finish_recording(rec_id, **finish_values())
    assert [(r.id, r.node) for r in catalog.find()] == [(old, None), (b, "beta"), (a, "alpha")]
    page = catalog.search(SearchQuery(node="beta"))
    assert [r.id for r in page.items] == [b]
    assert catalog.nodes_seen() == ["alpha", "beta"]


def test_recovery_keeps_to_its_own_nodes_open_rows(catalog: Catalog, tmp_path: Path) -> None:
    mine = catalog.create_recording(new_recording(1, node="alpha"))
    theirs = catalog.create_recording(new_recording(2, node="beta"))
    legacy = catalog.create_recording(new_recording(3))
    assert [r.id for r in catalog.unfinished("alpha")] == [mine, legacy]
    # Neither file is on alpha's disk: its own rows are marked failed, beta's is its own
    # call in progress (or beta's to recover when it restarts), and stays open.
    report = recover_unfinished(catalog, tmp_path, node="alpha")
    assert len(report) == 2
    states = {r.id: r.status for r in catalog.find()}
    assert states == {mine: "failed", theirs: "recording", legacy: "failed"}


def test_live_calls_are_shared_and_a_silent_nodes_expire(catalog: Catalog) -> None:
    store = LiveCallStore(catalog)
    stale = T0 - timedelta(seconds=15)
    call = {"session_id": "1", "started_at": T0.isoformat(), "duration": 1.0}
    assert store.publish("alpha", {"a" * 32: call}, now=T0, stale_before=stale) == []
    seen = store.publish("beta", {"b" * 32: call}, now=T0, stale_before=stale)
    assert [(r.uid, r.node, r.data["session_id"]) for r in seen] == [("a" * 32, "alpha", "1")]
    # alpha refreshes its call; beta's ended (it publishes none): its row goes.
    later = T0 + timedelta(seconds=2)
    changed = {**call, "duration": 3.0}
    assert store.publish("beta", {}, now=later, stale_before=later - timedelta(seconds=15)) == [
        seen[0]
    ]
    store.publish("alpha", {"a" * 32: changed}, now=later, stale_before=stale)
    (row,) = store.all()
    assert (row.node, row.data["duration"], row.seen_at) == ("alpha", 3.0, later)
    # alpha dies: nobody refreshes its row, and the next look after the limit deletes it.
    much_later = later + timedelta(seconds=16)
    assert (
        store.publish("beta", {}, now=much_later, stale_before=much_later - timedelta(seconds=15))
        == []
    )
    assert store.all() == []
    # A clean stop withdraws a node's calls at once.
    store.publish("beta", {"c" * 32: call}, now=much_later, stale_before=much_later)
    assert store.withdraw("beta") == 1 and store.all() == []


def _settings(tmp_path: Path, catalog: Catalog, node: str, **extra: object) -> Settings:
    return Settings(
        node_name=node,
        recordings_dir=tmp_path / node,
        database_url="sqlite://",  # not opened: the functions are given the catalogue
        **extra,  # type: ignore[arg-type]
    )


def test_the_disk_quota_and_file_removal_keep_to_each_nodes_disk(
    catalog: Catalog, tmp_path: Path
) -> None:
    ids: dict[str, list[int]] = {"alpha": [], "beta": []}
    for n, node in enumerate(["alpha", "beta", "alpha", "beta", "beta"]):
        rec_id = catalog.create_recording(new_recording(n, node=node))
        catalog.finish_recording(rec_id, **finish_values(size_bytes=1000))
        path = tmp_path / node / f"2026-03-01/in_{n}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        ids[node].append(rec_id)
    alpha = _settings(tmp_path, catalog, "alpha", disk_quota="1500")
    beta = _settings(tmp_path, catalog, "beta")
    assert catalog.catalogued_bytes("alpha") == 2000 and catalog.catalogued_bytes() == 5000
    # alpha's quota is of alpha's disk: its oldest recording goes, none of beta's.
    result = quota_sweep(catalog, alpha)
    assert (result.deleted, result.used) == (1, 1000)
    assert {r.id for r in catalog.find()} == {ids["alpha"][1], *ids["beta"]}
    assert not (tmp_path / "alpha/2026-03-01/in_0.wav").exists()
    # A recording of beta deleted on alpha: its files are beta's to remove.
    _, tomb = catalog.retire_recording(ids["beta"][0], by="admin")
    assert tomb.node == "beta"
    assert finish_pending(catalog, alpha) == (0, 0)
    assert [t.id for t in catalog.pending_tombstones()] == [tomb.id]
    assert (tmp_path / "beta/2026-03-01/in_1.wav").exists()
    assert finish_pending(catalog, beta) == (1, 1)
    assert catalog.pending_tombstones() == []
    assert not (tmp_path / "beta/2026-03-01/in_1.wav").exists()


def test_a_path_another_node_holds_is_never_taken_from_it(catalog: Catalog) -> None:
    """Two nodes, two recordings directories, one relative path: the journal of the second
    marks its own row's path instead of renaming the first node's (which it does to a stale
    row of its own node)."""
    from callrec.catalog.replay import JournalStart

    first = catalog.create_recording(new_recording(1, node="alpha", uid="a" * 32))
    known = catalog.apply_journal([JournalStart(new_recording(1, node="beta", uid="b" * 32))])
    rows = {r.id: r for r in catalog.find()}
    assert (rows[first].path, rows[first].node) == ("2026-03-01/in_1.wav", "alpha")
    second = rows[known["b" * 32]]
    assert (second.path, second.node) == ("2026-03-01/in_1.wav#node-bbbbbbbbbbbb", "beta")
    # Within one node, the newer start is the true one, as ever.
    again = catalog.apply_journal([JournalStart(new_recording(1, node="alpha", uid="c" * 32))])
    rows = {r.id: r for r in catalog.find()}
    assert rows[again["c" * 32]].path == "2026-03-01/in_1.wav"
    assert rows[first].path == f"2026-03-01/in_1.wav#missing-{first}"


def test_a_node_name_another_running_server_holds_is_refused(catalog: Catalog) -> None:
    store = LiveCallStore(catalog)
    first = NodeHolder("1" * 32, "host-a", 100, T0)
    second = NodeHolder("2" * 32, "host-b", 200, T0)
    call = {"session_id": "1", "started_at": T0.isoformat(), "duration": 1.0}
    stale = T0 - timedelta(seconds=15)
    store.publish("alpha", {"a" * 32: call}, now=T0, stale_before=stale, holder=first)
    with pytest.raises(NodeNameInUse, match=r"host host-a, pid 100") as refused:
        store.publish("alpha", {"b" * 32: call}, now=T0, stale_before=stale, holder=second)
    assert refused.value.holder == first
    # Nothing of the refused server's was written, and its stop removes nothing of the other's.
    assert [r.uid for r in store.all()] == ["a" * 32]
    assert store.withdraw("alpha", second) == 0
    assert [r.uid for r in store.all()] == ["a" * 32]
    # The holder refreshes its claim; once it stops refreshing, the name can be taken.
    later = T0 + timedelta(seconds=10)
    store.publish("alpha", {"a" * 32: call}, now=later, stale_before=stale, holder=first)
    much_later = later + timedelta(seconds=16)
    recent = much_later - timedelta(seconds=15)
    store.publish("alpha", {"b" * 32: call}, now=much_later, stale_before=recent, holder=second)
    with pytest.raises(NodeNameInUse, match="host-b"):
        store.publish("alpha", {}, now=much_later, stale_before=recent, holder=first)
    # A clean stop gives the name up: another run takes it at once.
    assert store.withdraw("alpha", second) == 1
    store.publish("alpha", {}, now=much_later, stale_before=recent, holder=first)
