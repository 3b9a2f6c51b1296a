"""The one cluster-wide merge, held to one answer (issue 19): over random logs of several
observers, with equal receive times drawn on purpose, on a real central store (SQLite, and
the real PostgreSQL once), the merged state at every moment is what the merged replay's
changes imply, the merged incidents are exactly the replay's dead stretches, and no answer
depends on how the observers are named."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import CATALOG_V2, NODES

from membership_log import settings as where
from membership_log.core import merge
from membership_log.core.fold import Change, NodeView
from membership_log.core.timespec import Point, iso
from membership_log.history import api as history
from membership_log.history import setup, transfer
from membership_log.stores import setup as stores

T0 = 1_764_000_000_000_000
MEMBERS = [("node0", "192.168.100.50"), ("node1", "192.168.100.51"),
           ("node2", "192.168.100.52")]

# -- the pure merge ---------------------------------------------------------------------------


def test_changes_at_the_same_time_are_taken_together():
    """Observer a sees n1 fail at 1 and rejoin at 10; b sees it fail at 10 and rejoin at 20:
    one dead stretch from 1 to 20, no live moment at 10 (the issue's own case)."""
    steps = [(1, "a", "a1", [Change("n1", "live", "dead")]),
             (10, "a", "a2", [Change("n1", "dead", "live")]),
             (10, "b", "b1", [Change("n1", "live", "dead")]),
             (20, "b", "b2", [Change("n1", "dead", "live")])]
    cluster = merge.Cluster()
    cluster.seed("a", {"n1": "live"})
    cluster.seed("b", {"n1": "live"})
    got = list(merge.merge(steps, cluster))
    assert got == [("a1", (Change("n1", "live", "dead"),)), ("a2", ()), ("b1", ()),
                   ("b2", (Change("n1", "dead", "live"),))]
    rows = {"a": [("n1", 1, 10, "failed", "a", 1, 2)], "b": [("n1", 10, 20, "left", "b", 1, 2)]}
    (inc,) = merge.incidents(rows)
    assert (inc.down_at, inc.up_at, inc.cause, inc.observers) == (1, 20, "failed", ("a", "b"))


def test_merged_views_choose_their_details_by_content_not_by_name():
    def view(serf, live):
        return NodeView("n1", live, serf, False, "10.0.0.1", "n1", True)

    one = {"a": {"n1": view("failed", False)}, "b": {"n1": view("left", False)}}
    other = {"z": one["a"], "y": one["b"]}
    assert merge.views(one) == merge.views(other)
    assert not merge.views(one)["n1"].live


# -- random logs of several observers on a real central store -----------------------------------


def _line(at: int, observer: str, kind: str, stdin: bytes, **env) -> str:
    env = {"SERF_EVENT": kind, "SERF_SELF_NAME": observer, **env}
    return json.dumps({"seq": 0, "received": iso(at), "observer": observer, "source": "serf",
                       "env": env, "stdin_b64": base64.b64encode(stdin).decode(),
                       "hash": ""})


def _catalog(at: int, observer: str) -> str:
    return json.dumps({"seq": 0, "received": iso(at), "observer": observer,
                       "source": "catalog", "env": {},
                       "stdin_b64": base64.b64encode(json.dumps(CATALOG_V2).encode()).decode(),
                       "hash": ""})


event = st.tuples(st.sampled_from(["member-failed", "member-join", "member-leave",
                                   "member-update", "membership-down", "membership-up"]),
                  st.sampled_from(range(3)))
# Few distinct times, so that events of several observers (and of one) share them.
step = st.sampled_from([0, 0, 0, 1_000_000, 1_000_000, 2_500_000])
one_log = st.lists(st.tuples(step, event), min_size=1, max_size=14)


def _lines(name: str, log: list) -> list[str]:
    at = T0
    out = [_catalog(T0 - 5_000_000, name)]
    ltime = 0
    for delta, (kind, m) in log:
        at += delta
        member, address = MEMBERS[m]
        if kind.startswith("membership-"):
            ltime += 1
            out.append(_line(at, name, "user", member.encode(), SERF_USER_EVENT=kind,
                             SERF_USER_LTIME=str(ltime)))
        else:
            out.append(_line(at, name, kind, f"{member}\t{address}\t\t\n".encode()))
    return out


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    """An empty node store and an empty central store, made once and copied per example:
    set-up (Alembic) would otherwise be most of each example's time."""
    d = tmp_path_factory.mktemp("templates")
    setup.init(where.resolve(str(d / "node")), record_catalog=False)
    stores.prepare(f"sqlite:///{d / 'central.db'}", "central")
    return d


def _central(templates: Path, tmp: Path, logs: dict, url: str | None = None) -> str:
    if url is None:
        url = f"sqlite:///{tmp / 'central.db'}"
        shutil.copy(templates / "central.db", tmp / "central.db")
    for name, log in logs.items():
        base = tmp / name
        base.mkdir()
        shutil.copy(templates / "node" / "membership.db", base / "membership.db")
        s = where.resolve(str(base))
        transfer.import_(s, _lines(name, log))
        transfer.ship(s, url)
    return url


def _answers(url: str) -> tuple[list, dict, list, list]:
    """The merged replay's changes per time, the liveness they imply at every time, the
    merged state at every time, and the merged incidents."""
    with history.open_store(url) as store:
        replayed = list(history.replay(store))
        times = sorted({r.raw.received_us for r in replayed})
        states = [(t, {n: v.live for n, v in history.state_at(
            store, Point("t", t, None)).nodes.items()}) for t in times]
        found = history.incidents_of(store)
    by_time: dict[int, list] = {}
    for r in replayed:
        by_time.setdefault(r.raw.received_us, []).extend(r.changes)
    return by_time, times, states, found


def _check_one_answer(url: str) -> dict:
    by_time, times, states, found = _answers(url)
    live: dict[str, bool] = {}
    dead_since: dict[str, int] = {}
    stretches = []
    for t in times:
        for c in by_time.get(t, ()):
            assert c.before == ({True: "live", False: "dead"}[live[c.node]]
                                if c.node in live else None), (t, c)
            if c.after is None:
                live.pop(c.node, None)
            else:
                live[c.node] = c.after == "live"
            if c.after == "dead":
                dead_since[c.node] = t
            elif c.before == "dead":
                stretches.append((c.node, dead_since.pop(c.node), t))
        state = dict(next(s for at, s in states if at == t))
        assert state == live, (t, state, live)  # the state at t is what the replay implies
    stretches += [(n, since, None) for n, since in dead_since.items()]
    assert sorted(stretches, key=lambda s: (s[1], s[0])) == \
        [(i.node, i.down_at, i.up_at) for i in found]  # the incidents: its dead stretches
    return {t: sorted(cs) for t, cs in by_time.items() if cs}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(one_log, min_size=2, max_size=3))
@pytest.mark.e2e
def test_the_three_merged_views_give_one_answer(templates, tmp_path_factory, logs):
    tmp = tmp_path_factory.mktemp("merge")
    names = ["a", "b", "c"][:len(logs)]
    changes = _check_one_answer(_central(templates, tmp, dict(zip(names, logs, strict=True))))
    # Renamed observers (in the other order) give the same answer.
    tmp2 = tmp_path_factory.mktemp("renamed")
    renamed = dict(zip(["zz", "yy", "xx"][:len(logs)], logs, strict=True))
    assert _check_one_answer(_central(templates, tmp2, renamed)) == changes


@pytest.mark.postgres
def test_the_merged_views_give_one_answer_on_postgresql(templates, tmp_path, pg_url):
    stores.prepare(pg_url, "central")
    logs = {"a": [(0, ("member-failed", 1)), (1_000_000, ("member-join", 1))],
            "b": [(1_000_000, ("member-failed", 1)), (2_500_000, ("member-join", 1)),
                  (0, ("member-leave", 2))]}
    changes = _check_one_answer(_central(templates, tmp_path, logs, pg_url))
    node1 = NODES[1]
    assert changes[T0] == [Change(node1, "live", "dead")]
    assert T0 + 1_000_000 not in changes, "no live moment where one recovers as one fails"
    assert changes[T0 + 3_500_000] == sorted([Change(node1, "dead", "live"),
                                              Change(NODES[2], "live", "dead")])
