"""Incidents and window figures, on plain events (the fold decides liveness; audit only
reads its changes)."""

from samples import NODES, Log

from membership_log import audit, project
from membership_log.timespec import iso

N0, N1, N2 = NODES
T0 = 1_700_000_000_000_000
S = 1_000_000


def run(events, since, until):
    incidents, nodes, first, last = audit.collect(project.steps(events), until)
    return incidents, audit.report(incidents, nodes, since, until, iso)


def test_failed_then_back_is_one_closed_incident():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 40 * S)]
    incidents, doc = run(es, T0, T0 + 100 * S)
    assert incidents == [audit.Incident(N1, T0 + 10 * S, T0 + 40 * S, "failed", ("o",), 2, 3)]
    n1 = doc["nodes"][N1]
    assert n1["incidents"][0]["duration_s"] == 30.0
    assert (n1["downtime_s"], n1["availability"], n1["mttr_s"], n1["flaps"]) == \
        (30.0, 0.7, 30.0, 1)
    assert doc["nodes"][N0] == {"incidents": [], "downtime_s": 0.0, "availability": 1.0,
                                "mttr_s": None, "flaps": 0}
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


def test_collect_stops_at_until():
    log = Log(T0)
    es = [log.catalog(at=T0),
          log.member("member-failed", ("node1", "192.168.100.51"), at=T0 + 10 * S),
          log.member("member-join", ("node1", "192.168.100.51"), at=T0 + 40 * S)]
    incidents, _, first, last = audit.collect(project.steps(es), T0 + 20 * S)
    assert incidents[0].up_at is None and (first, last) == (T0, T0 + 10 * S)
