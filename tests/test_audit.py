"""Incidents and window figures, on plain events (the fold decides liveness; the one
incident reducer reads its changes; the audit report only computes figures)."""

import pytest
from samples import NODES, Log

from membership_log.core import figures as audit
from membership_log.core import fold as project
from membership_log.core import incidents, merge
from membership_log.core.incidents import Incident
from membership_log.core.timespec import iso
from membership_log.render.jsondoc import audit_doc

N0, N1, N2 = NODES
T0 = 1_700_000_000_000_000
S = 1_000_000


def collect(events, until=None):
    """Every incident of ``events`` up to ``until``, and the catalog nodes."""
    state = project.State()
    reducer = incidents.Reducer()
    found = {}
    for e in events:
        if until is not None and e.at > until:
            break
        effect = state.apply(e)
        opened, closed = reducer.feed(e, effect.changes, state.nodes)
        for r in opened + closed:
            found[(r.node, r.down_seq)] = incidents.record(r)
    found = sorted(found.values(), key=lambda i: (i.down_at, i.node))
    return found, {n for n, v in state.nodes.items() if v.in_catalog}


def report(*args, **kw) -> dict:
    """The audit document, as ``audit --json`` writes it."""
    return audit_doc(audit.report(*args, **kw))


def run(events, since, until, **kw):
    found, nodes = collect(events, until)
    return found, report(found, nodes, since, until, **kw)


def test_failed_then_back_is_one_closed_incident():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 40 * S)]
    incidents, doc = run(es, T0, T0 + 100 * S)
    assert incidents == [Incident(N1, T0 + 10 * S, T0 + 40 * S, "failed", ("o",), 2, 3)]
    n1 = doc["nodes"][N1]
    assert n1["incidents"][0]["duration_s"] == 30.0
    assert (n1["downtime_s"], n1["availability"], n1["mttr_s"], n1["flaps"]) == \
        (30.0, 0.7, 30.0, 1)
    assert doc["nodes"][N0] == {"incidents": [], "downtime_s": 0.0, "availability": 1.0,
                                "mttr_s": None, "flaps": 0, "flapping": [], "roles": []}
    assert list(doc["nodes"])[0] == N1, "the worst node comes first"


def test_causes_left_operator_and_an_open_incident_at_the_window_end():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-join", ("node2", "192.168.100.52"), at=T0 + S),
          log.user("membership-down", "node2", 1, at=T0 + 10 * S),
          log.user("membership-up", "node2", 2, at=T0 + 20 * S),
          log.member("member-leave", ("node2", "192.168.100.52"), at=T0 + 50 * S)]
    _, doc = run(es, T0, T0 + 100 * S)
    incs = doc["nodes"][N2]["incidents"]
    assert [(i["cause"], i["duration_s"], i["up_at"] is None) for i in incs] == [
        ("operator", 10.0, False), ("left", 50.0, True)]
    assert doc["nodes"][N2]["downtime_s"] == 60.0
    assert doc["nodes"][N2]["mttr_s"] == 10.0, "open incidents have no repair time yet"


def test_window_clips_downtime_and_reports_what_overlaps():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 20 * S),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 50 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 90 * S)]
    _, doc = run(es, T0 + 30 * S, T0 + 70 * S)
    n1 = doc["nodes"][N1]
    assert len(n1["incidents"]) == 1, "the incident that ended before the window is left out"
    assert n1["incidents"][0]["up_at"] is None, "still down at the end of the window: open"
    assert n1["downtime_s"] == 20.0 and n1["availability"] == 0.5


def test_incident_spanning_the_window_start_counts_only_its_overlap():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 40 * S)]
    _, doc = run(es, T0 + 20 * S, T0 + 60 * S)
    n1 = doc["nodes"][N1]
    assert n1["downtime_s"] == 20.0 and n1["flaps"] == 0
    assert n1["incidents"][0]["duration_s"] == 30.0


def test_a_redelivered_mark_is_not_a_second_incident():
    log = Log(T0)
    down = log.user("membership-down", "192.168.100.51", 7, at=T0 + 10 * S)
    es = [log.catalog(at=T0), down, log.user("membership-up", "192.168.100.51", 8,
                                             at=T0 + 20 * S)]
    es.append(down._replace(seq=log._next(T0 + 30 * S)[0], at=T0 + 30 * S))
    incidents, _ = run(es, T0, T0 + 100 * S)
    assert len(incidents) == 1


def test_an_incident_still_open_at_until_is_reported_open():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 40 * S)]
    found, doc = run(es, T0, T0 + 20 * S)
    assert found[0].up_at is None
    assert doc["nodes"][N1]["incidents"][0]["up_at"] is None


def test_a_clock_that_steps_back_never_gives_negative_figures():
    """An incident 'ending' before it began (the clock stepped back) lasted 0 s, and no
    availability leaves [0, 1] (issue 11, item 8)."""
    inc = Incident(N1, T0 + 50 * S, T0 + 20 * S, "failed", ("o",), 2, 3)
    doc = report([inc], {N1}, T0, T0 + 100 * S)
    n1 = doc["nodes"][N1]
    assert n1["incidents"][0]["duration_s"] == 0.0
    assert n1["downtime_s"] == 0.0 and n1["availability"] == 1.0
    late = Incident(N1, T0 - 50 * S, None, "failed", ("o",), 2, None)
    doc = report([late], {N1}, T0, T0 + 100 * S)
    assert 0.0 <= doc["nodes"][N1]["availability"] <= 1.0


def test_unobserved_time_is_reported_and_availability_counts_observed_time_only():
    """An observer's agent down from 30 s to 50 s: an incident 20-60 s overlaps the gap by
    20 s; availability is over the 80 s observed."""
    inc = Incident(N1, T0 + 20 * S, T0 + 60 * S, "failed", ("o",), 2, 3)
    sessions = [("o", T0 + 50 * S, T0 + 30 * S)]
    gaps = audit.unobserved(sessions, T0, T0 + 100 * S)
    assert gaps == [(T0 + 30 * S, T0 + 50 * S)]
    doc = report([inc], {N1}, T0, T0 + 100 * S, gaps)
    i = doc["nodes"][N1]["incidents"][0]
    assert i["unobserved_s"] == 20.0 and i["duration_s"] == 40.0
    assert doc["nodes"][N1]["downtime_s"] == 20.0
    assert doc["nodes"][N1]["availability"] == 0.75
    assert doc["observed_s"] == 80.0


def test_flapping_stretches_and_detection_delay():
    starts = [T0 + k * 60 * S for k in (0, 2, 4, 30, 31, 32, 33, 100)]
    incs = [Incident(N1, t, t + 10 * S, "failed", ("o",), i, i + 1)
            for i, t in enumerate(starts)]
    doc = report(incs, {N1}, T0, T0 + 200 * 60 * S, flap_window_us=600 * S,
                       flap_threshold=3, detection_delay_us=5 * S)
    flapping = doc["nodes"][N1]["flapping"]
    assert [(f["from"], f["to"], f["incidents"]) for f in flapping] == [
        (iso(starts[0]), iso(starts[2]), 3), (iso(starts[3]), iso(starts[6]), 4)]
    first = doc["nodes"][N1]["incidents"][0]
    assert first["est_down_at"] == iso(starts[0] - 5 * S)
    assert first["est_duration_s"] == 15.0
    assert "lower bound" in doc["note"]


def test_merging_observers_unions_overlapping_incidents():
    a = [Incident(N1, 10, 40, "failed", ("a",), 1, 2),
         Incident(N1, 100, None, "failed", ("a",), 5, None)]
    b = [Incident(N1, 20, 60, "failed", ("b",), 3, 4),
         Incident(N2, 0, 5, "left", ("b",), 1, 2)]
    merged = merge.incidents({o: [(i.node, i.down_at, i.up_at, i.cause, i.observers[0],
                                   i.down_seq, i.up_seq) for i in rows]
                              for o, rows in (("a", a), ("b", b))})
    assert [(i.node, i.down_at, i.up_at, i.observers) for i in merged] == [
        (N2, 0, 5, ("b",)), (N1, 10, 60, ("a", "b")), (N1, 100, None, ("a",))]


# -- the audit's JSON: written directly, byte for byte what the one encoder writes -----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from membership_log.core.figures import NodeFigures, Reported  # noqa: E402
from membership_log.render import jsondoc  # noqa: E402

names = st.text(min_size=0, max_size=8)
times = st.integers(min_value=-10**12, max_value=10**16)
incident_tuples = st.tuples(
    names, times, st.none() | times, st.sampled_from(["failed", "left", "operator", "x\u2028"]),
    names | st.lists(names, max_size=3).map(tuple), st.none() | st.integers(0, 10**12),
    st.none() | st.integers(0, 10**12))
reported = st.tuples(incident_tuples, st.integers(0, 10**13),
                     st.integers(0, 10**9) | st.just(0)).map(
    lambda t: tuple.__new__(Reported, t))


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=300, deadline=None)
@given(st.lists(reported, max_size=20), st.none() | st.integers(0, 10**8), names)
def test_the_direct_writer_equals_the_encoder(items, delay, name):
    figures = NodeFigures(items, 5, 0.5, None, len(items), [(1, 2, 3)])
    want = jsondoc.encode(name) + ":" + jsondoc.encode(jsondoc.node_doc(figures, delay))
    assert jsondoc.node_fragment(name, figures, delay) == want
