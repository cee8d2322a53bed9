"""The catalogue's side of several nodes (docs/scaling.md): each recording names its node,
the list filters by it, start-up recovery keeps to its own node's open rows, and the live
calls each node publishes expire when the node stops refreshing them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from callrec.catalog import Catalog, SearchQuery
from callrec.catalog.livecalls import LiveCallStore
from callrec.engine.recovery import recover_unfinished
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
