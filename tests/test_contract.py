"""One contract, every store: the reader protocol and the history API behave the same on a
node store (SQLite, stdlib) and on the central store (SQLAlchemy, on SQLite and on the real
PostgreSQL). The same log goes into each; every answer must agree (as eventsourcing runs one
recorder test case over every backend)."""

import marshal

import pytest

from membership_log import settings
from membership_log.core import fold as project
from membership_log.core import incidents
from membership_log.core.errors import MembershipError
from membership_log.core.raw import encode_env
from membership_log.core.timespec import Point
from membership_log.demo.synthetic import make_store
from membership_log.history import api as history
from membership_log.history import driver as derive
from membership_log.history import setup as hsetup
from membership_log.history import transfer
from membership_log.history.publish import publisher
from membership_log.render.jsondoc import audit_doc
from membership_log.stores import setup as admin
from membership_log.stores.node import NODE, NodeStore

N_EVENTS = 3_000
START = 1_700_000_000_000_000


def _extra_events(s):
    """Marks out of Lamport order, a redelivery, and an agent restart, on top of the
    synthetic log."""
    at = START + (N_EVENTS + 10) * 1000

    def env(**kw):
        return encode_env({"SERF_SELF_NAME": "node0", **{f"SERF_{k}": v for k, v in kw.items()}})

    items = [
        (at + 1, "node0", "serf", env(EVENT="user", USER_EVENT="membership-up",
                                      USER_LTIME="6"), b"node1\n"),
        (at + 2, "node0", "serf", env(EVENT="user", USER_EVENT="membership-down",
                                      USER_LTIME="5"), b"node1\n"),
        (at + 3, "node0", "serf", env(EVENT="user", USER_EVENT="membership-down",
                                      USER_LTIME="7"), b"node2\n"),
        (at + 4, "node0", "serf", env(EVENT="user", USER_EVENT="membership-down",
                                      USER_LTIME="7"), b"node2\n"),
        (at + 5_000_000, "node0", "serf", env(EVENT="member-join"),
         b"node0\t192.168.0.1\t\t\n"),
        (at + 5_000_001, "node0", "serf", env(EVENT="user", USER_EVENT="membership-up",
                                              USER_LTIME="1"), b"node2\n"),
        # node1's published heads: one, then another root at its size (a fork: a conflict).
        (at + 5_000_002, "node0", "serf", env(EVENT="user", USER_EVENT="membership-head",
                                              USER_LTIME="8"), b"node1 40 " + b"ab" * 32),
        (at + 5_000_003, "node0", "serf", env(EVENT="user", USER_EVENT="membership-head",
                                              USER_LTIME="9"), b"node1 40 " + b"cd" * 32),
    ]
    with NodeStore(s.sqlite_path) as store:
        with store.write():
            store.append(items)
        derive.catch_up(store, NODE, publisher(s.live_file))


@pytest.fixture(scope="module")
def node_log(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract") / "node0"
    s = make_store(str(base), "node0", N_EVENTS, START, flap_rate=0.05)
    _extra_events(s)
    return s


def _central_url(kind, tmp_path, request):
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    return request.getfixturevalue("pg_url")


# e2e too: each central-postgres case creates and migrates a database (1.3-1.7 s), 20 s of the
# quick loop; there, test_central.py and test_bulk.py keep the PostgreSQL store covered.
@pytest.fixture(params=["node", "central-sqlite", pytest.param(
    "central-postgres", marks=[pytest.mark.postgres, pytest.mark.e2e])])
def store(request, node_log, tmp_path):
    """(store, origin) holding the same log, in each role."""
    if request.param == "node":
        st = history.open_store(node_log.db_url)
        yield st, NODE
        st.close()
        return
    url = _central_url(request.param.split("-")[1], tmp_path, request)
    admin.upgrade(url, "central")
    # Shipped in small batches, so the derived tables are kept across many transactions.
    transfer.ship(node_log, url, batch=700)
    st = history.open_store(url)
    assert st.role == "central"
    yield st, "node0"
    st.close()


@pytest.fixture(scope="module")
def reference(node_log):
    """The node store's answers, computed by a plain fold of every event."""
    with NodeStore(node_log.sqlite_path) as st:
        raws = list(st.events(NODE, 0))
    return raws


def test_the_log_reads_back_the_same(store, reference):
    st, origin = store
    assert st.head_seq(origin) == len(reference)
    assert st.first_seq(origin) == 1
    got = list(st.events(origin, 10, 20))
    assert [r.seq for r in got] == list(range(11, 21))
    assert got == reference[10:20]
    assert st.received_at(origin, 15) == reference[14].received_us
    last = reference[-3]
    assert st.last_received_by(origin, last.received_us, 0, len(reference)) == last.seq
    assert st.last_received_by(origin, reference[0].received_us - 1, 0, len(reference)) is None


def test_checkpoints_hold_the_fold_of_their_prefix(store, reference):
    st, origin = store
    point = st.checkpoint_at_or_before(origin, 2_600)
    assert point is not None and 2_000 <= point[0] <= 2_600
    seq, max_at, state = point
    fresh = project.fold(derive.parse(r) for r in reference[:seq])
    assert state == fresh
    assert max_at == max(r.received_us for r in reference[:seq])


@pytest.mark.e2e
@pytest.mark.parametrize("seq", [0, 1, 999, 1000, 2_345, N_EVENTS + 5])
def test_state_at_any_event_equals_a_fold_of_the_prefix(store, reference, seq):
    st, origin = store
    observer = origin or None
    got = history.state_at(st, Point(f"@{seq}", None, seq), observer)
    with pytest.raises(MembershipError, match=f"the log's last event is {len(reference)}"):
        history.state_at(st, Point("@", None, len(reference) + 1), observer)
    fresh = project.fold(derive.parse(r) for r in reference[:seq])
    assert got.seq == seq
    assert got.nodes == fresh.nodes


def test_state_at_a_time_is_the_prefix_received_by_then(store, reference):
    st, origin = store
    t = reference[1_500].received_us
    got = history.state_at(st, Point("t", t, None), origin or None)
    assert got.seq == 1_501


def test_marks_by_lamport_time_and_sessions_survive_every_store(store, reference):
    st, origin = store
    now = history.state_at(st, None, origin or None)
    fresh = project.fold(derive.parse(r) for r in reference)
    assert now.nodes == fresh.nodes
    # membership-up ltime 6 beats the later-arriving down ltime 5: node1's mark is up.
    assert not fresh.nodes["node1"].marked
    # node2: down at ltime 7 (then redelivered), the agent restarted, then up at ltime 1.
    assert not fresh.nodes["node2"].marked
    replayed = list(history.replay(st, Point("@", None, N_EVENTS + 3), None, None,
                                   origin or None))
    assert [r.redelivery for r in replayed[:2]] == [False, True]
    sessions = st.sessions(origin)
    assert sessions and sessions[-1][0] == N_EVENTS + 5


def test_incidents_are_those_of_a_full_fold(store, reference):
    st, origin = store
    fresh = project.State()
    rows = {}
    reducer = incidents.Reducer()
    for raw in reference:
        event = derive.parse(raw)
        effect = fresh.apply(event)
        opened, closed = reducer.feed(event, effect.changes, fresh.nodes)
        for r in opened + closed:
            rows[(r.node, r.down_seq)] = r
    want = sorted(tuple(r) for r in rows.values())
    assert sorted(tuple(r) for r in st.incidents(origin)) == want
    assert len(want) > 20


def test_replay_since_until_agrees_with_the_full_replay(store, reference):
    st, origin = store
    observer = origin or None
    whole = list(history.replay(st, None, None, None, observer))
    part = list(history.replay(st, Point("@", None, 1_234), Point("@", None, 2_345), None,
                               observer))
    assert [(r.raw.seq, r.changes, r.redelivery) for r in part] == \
        [(r.raw.seq, r.changes, r.redelivery) for r in whole[1_233:2_345]]


def test_audit_agrees_across_stores(store, node_log):
    st, origin = store
    until = Point("t", START + 10 * N_EVENTS * 1000, None)
    got = history.audit(st, None, until, None, origin or None)
    with history.open_store(node_log.db_url) as node:
        want = history.audit(node, None, until)
    assert got == want
    assert any(n.incidents for n in got.nodes.values())


def test_refolding_the_derived_tables_gives_the_same_rows(store):
    st, origin = store
    def rows():
        # marshal's bytes depend on object sharing, not only values: compare what they say
        cps = [(s, m, lo, f, marshal.loads(b)) for s, m, lo, f, b in st.checkpoints(origin)]
        snap = st.snapshot(origin)
        return ([tuple(r) for r in st.incidents(origin)], [tuple(r) for r in st.sessions(origin)],
                cps, (snap[0], snap[1], marshal.loads(bytes(snap[2])), bytes(snap[3])))

    before = rows()
    with st.write():
        st.truncate_derived(origin, 0)
    derive.catch_up(st, origin, chunk=800)
    assert rows() == before


def test_central_merge_of_two_observers_equals_the_union_of_their_incidents(node_log,
                                                                           tmp_path):
    """Two nodes shipped to one central store: the merged audit's incidents are the union of
    each observer's, merged where they overlap."""
    other = make_store(str(tmp_path / "node9"), "node9", 2_000, START + 500, flap_rate=0.05)
    url = f"sqlite:///{tmp_path / 'central.db'}"
    admin.upgrade(url, "central")
    transfer.ship(node_log, url)
    transfer.ship(other, url)
    until = Point("t", START + 10 * N_EVENTS * 1000, None)
    with history.open_store(url) as st:
        merged = audit_doc(history.audit(st, None, until))
        per = [audit_doc(history.audit(st, None, until, None, o)) for o in ("node0", "node9")]
        assert set(st.origins()) == {"node0", "node9"}
    for node, n in merged["nodes"].items():
        spans = [(i["down_at"], i["up_at"] or "~") for p in per
                 for i in p["nodes"].get(node, {"incidents": []})["incidents"]]
        for inc in n["incidents"]:
            # every merged incident starts with some observer's and ends with some observer's
            assert any(s == inc["down_at"] for s, _ in spans)
            assert any(u == (inc["up_at"] or "~") for _, u in spans)
        assert len(n["incidents"]) <= len(spans)


def test_settings_roles_are_recorded_not_guessed(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    admin.upgrade(url, "central")
    assert admin.open_store(url).role == "central"
    s = settings.resolve(str(tmp_path / "n"))
    hsetup.init(s)
    assert admin.open_store(s.db_url).role == "node"


# -- every method of the protocol, on every store ----------------------------------------------

#: The protocol's methods this file holds to one answer on every store (a new abstract
#: method of Store fails test_every_protocol_method_is_covered until it is added here, with
#: a test).
COVERED = {"close", "write", "read", "origins", "scope", "head", "first_seq", "anchor",
           "events", "rows", "hashes", "received_at", "last_received_by", "latest_anchors",
           "snapshot", "checkpoint_at_or_before", "stretch_received_by", "last_checkpoint",
           "checkpoints", "incidents", "sessions", "write_derived", "truncate_derived",
           "alert_deliveries", "record_alert_deliveries", "tree", "put_tree",
           "witnessed_heads"}


def test_every_protocol_method_is_covered():
    from membership_log.stores.protocol import Store

    assert set(Store.__abstractmethods__) == COVERED


def test_the_kept_tree_is_the_logs_and_the_witnessed_heads_read_alike(store, reference):
    from membership_log.core import frontier, merkle
    from membership_log.core.witness import CONFLICT

    st, origin = store
    size, blob = st.tree(origin)
    assert size == len(reference)
    got_size, front, roots = st.log_tree(origin, at=(7, 1_000))
    assert (got_size, frontier.encode(front, got_size)) == (size, blob)
    leaves = [merkle.leaf_hash(r.hash) for r in reference]
    assert roots[7] == merkle.root_of(leaves[:7]) and roots[1_000] == merkle.root_of(
        leaves[:1_000]) and roots[size] == merkle.root_of(leaves)
    heads = st.witnessed_heads()
    assert [(h[0], h[3], h[4], h[5], bytes(h[6])) for h in heads] == [
        (origin, "node0", "node1", 40, b"\xab" * 32), (origin, "node0", "node1", 40, b"\xcd" * 32)]
    assert heads[0][7] is None and heads[1][7].startswith(CONFLICT)
    assert [h[1] for h in heads] == [len(reference) - 1, len(reference)]
    assert st.witnessed_heads("node1", after=40) == [] == st.witnessed_heads("node9")
    assert len(st.witnessed_heads("node1", through=40, log=origin)) == 2
    with st.write():  # put_tree replaces the kept frontier (restored after)
        st.put_tree(origin, 0, frontier.EMPTY_BLOB)
    assert st.tree(origin) == (0, frontier.EMPTY_BLOB)
    with st.write():
        st.put_tree(origin, size, blob)
    assert st.tree(origin) == (size, blob)


def test_the_store_knows_its_logs_and_scopes(store):
    st, origin = store
    assert st.origins() == [origin]
    mine = st.scope(None)
    assert mine.origins == (origin,) and mine.merged == (st.role == "central")
    if st.role == "central":
        assert st.scope(origin).origins == (origin,) and not st.scope(origin).merged
        with pytest.raises(MembershipError, match="holds no log of 'nobody'"):
            st.scope("nobody")
    else:
        assert st.scope("node0").observer == "node0"  # checked against the log by the API
    assert st.label and "s3cret" not in st.label


def test_rows_hashes_and_head_are_the_chain(store, reference):
    from membership_log.core.raw import GENESIS, chain_hash

    st, origin = store
    head = st.head(origin)
    assert head == (reference[-1].seq, reference[-1].hash)
    rows = list(st.rows(origin, 0))
    prev = GENESIS
    for r in rows:
        assert r[6] == chain_hash(prev, *r[:6])
        prev = r[6]
    assert [r[0] for r in st.rows(origin, 5, 9)] == [6, 7, 8, 9]
    assert st.hashes(origin, 2, 4) == [(r.seq, r.hash) for r in reference[1:4]]
    assert st.anchor(origin) is None and st.latest_anchors(origin) == []


def test_time_searches_find_the_stretch_and_the_event(store, reference):
    st, origin = store
    after, through = st.stretch_received_by(origin, reference[1_600].received_us)
    assert after < 1_601 <= through
    assert st.last_received_by(origin, reference[1_600].received_us, after, through) == 1_601
    seq, size = st.last_checkpoint(origin)
    assert seq == max(c[0] for c in st.checkpoints(origin)) and size > 0
    assert all(c[2] <= c[1] for c in st.checkpoints(origin)), "min_at <= max_at"


def test_windowed_incidents_are_the_whole_tables_overlap(store):
    st, origin = store
    whole = st.incidents(origin)
    assert whole == sorted(whole, key=lambda r: (r[1], r[0]))
    assert sorted(st.incidents(origin, by_node=True)) == sorted(whole)
    lo, hi = whole[len(whole) // 3][1], whole[2 * len(whole) // 3][1]
    want = [r for r in whole if r[1] <= hi and (r[2] is None or r[2] >= lo)]
    assert st.incidents(origin, lo, hi) == want
    some = sorted({r[0] for r in whole})[:2]
    share = st.incidents(origin, None, None, (some[0], some[-1]))
    assert {r[0] for r in share} <= set(some[:-1]) and share


def test_alert_deliveries_are_kept_per_target(store):
    st, origin = store
    st.record_alert_deliveries("http://am:9093", origin, [("n1", 5, 100, None)])
    st.record_alert_deliveries("http://am:9093", origin, [("n1", 5, 999, 200)])
    assert st.alert_deliveries("http://am:9093", origin) == {("n1", 5): (100, 200)}
    assert st.alert_deliveries("http://other", origin) == {}


def test_a_read_transaction_is_one_snapshot(store):
    st, origin = store
    with st.read():
        before = st.head(origin)
        assert list(st.events(origin, before[0])) == []
    assert st.head(origin) == before


# -- two writers at once ------------------------------------------------------------------------


def test_two_writers_at_once_on_a_node_store(tmp_path):
    """Two processes appending through the handler's own path at once: every event once,
    the log gap-free, the chain whole."""
    import subprocess

    from membership_log.history import integrity

    s = make_store(str(tmp_path / "n"), "node0", 10, START)
    code = ("import sys; from membership_log.stores.node import NodeStore\n"
            "from membership_log.core.raw import encode_env\n"
            "st = NodeStore(sys.argv[1])\n"
            "for i in range(200):\n"
            "    with st.write():\n"
            "        st.append([(1, 'node0', 'serf', encode_env({'SERF_EVENT': 'member-update',"
            " 'SERF_SELF_NAME': 'node0'}), b'node1\\t192.168.0.2\\t\\t\\n')])\n")
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", code, s.sqlite_path]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with NodeStore(s.sqlite_path) as st:
        assert [r.seq for r in st.events(NODE, 0)] == list(range(1, 411))
        derive.catch_up(st, NODE, publisher(s.live_file))
    assert integrity.verify(s).problems == []


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@pytest.mark.postgres
def test_two_writers_at_once_on_the_central_store(tmp_path, pg_url):
    """Two ships of two nodes into one PostgreSQL store at once, and a third shipper of the
    first node beside them: each log once, gap-free, verified."""
    import threading

    from membership_log.history import integrity

    admin.upgrade(pg_url, "central")
    logs = [make_store(str(tmp_path / name), name, 1_500, START) for name in ("n0", "n1")]
    errors = []

    def ship(s):
        try:
            transfer.ship(s, pg_url, batch=100)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ship, args=(s,)) for s in logs + logs[:1]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with history.open_store(pg_url) as st:
        assert sorted(st.origins()) == ["n0", "n1"]
        for o in ("n0", "n1"):
            assert [r.seq for r in st.events(o, 0)] == list(range(1, 1_501))
    report = integrity.verify(settings.resolve(str(tmp_path), db=pg_url))
    assert report.problems == [], report.problems
