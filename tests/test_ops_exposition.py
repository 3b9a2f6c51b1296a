"""membership_log.render.exposition: the text Prometheus scrapes, checked by the real promtool and
parsed back with prometheus_client's parser."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from realservers import require

from membership_log.core import labels
from membership_log.render.exposition import CONTENT_TYPE, render

SNAPSHOT = {
    "nodes": {
        "node1": {"up": True, "marked": False, "incidents": {"failed": 2, "left": 1},
                  "downtime_s": 12.5, "last_change_s": 1_795_000_000.123456, "flapping": False},
        "node2": {"up": False, "marked": True, "incidents": {"operator": 1},
                  "downtime_s": 3600.0, "last_change_s": 1_795_000_100.0, "flapping": None},
        "node3": {"up": True, "marked": False, "incidents": {}, "downtime_s": 0.0,
                  "last_change_s": None, "flapping": None},
    },
    "live_nodes": 2, "catalog_nodes": 3,
    "events": [{"observer": "node0", "event": "member-join", "count": 3},
               {"observer": "node0", "event": "member-failed", "count": 2},
               {"observer": "node1", "event": "user", "count": 1}],
    "last_event_s": {"node0": 1_795_000_100.5, "node1": 1_794_999_000.0},
    "observer": "node0",
}

HOSTILE = [
    "esc\x1b[31mred",            # a terminal escape
    "two\nlines",
    'quote"d',
    "back\\slash",
    "bad byte \udcff",           # invalid UTF-8, decoded with surrogateescape
    "lone \ud800 surrogate",     # a surrogate that no byte maps to
    "a\\xff",                    # spelled like the escape of the byte above...
    "a\udcff",                   # ...and that byte: must stay two distinct series
    "ünïcødé ☃",
    "nul\x00",
    "",
]


def samples(data: bytes) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}, through prometheus_client's parser."""
    out = {}
    for family in text_string_to_metric_families(data.decode("utf-8")):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def families(data: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(data.decode("utf-8"))}


def promtool_check(data: bytes) -> subprocess.CompletedProcess:
    promtool = require("promtool")
    return subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True,
                          timeout=60)


def hostile_snapshot() -> dict:
    node = {"up": False, "marked": True, "incidents": {"failed": 1}, "downtime_s": 1.0,
            "last_change_s": 1_795_000_000.0, "flapping": True}
    return {"nodes": {name: dict(node) for name in HOSTILE}, "live_nodes": 0,
            "catalog_nodes": len(HOSTILE),
            "events": [{"observer": name, "event": "member-failed\n\udcfe", "count": 1}
                       for name in HOSTILE],
            "last_event_s": {name: 1_795_000_000.0 for name in HOSTILE},
            "observer": HOSTILE[0]}


def test_promtool_accepts_the_exposition():
    r = promtool_check(render(SNAPSHOT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout + r.stderr == b""  # not even a lint warning


def test_values_parse_back():
    s = samples(render(SNAPSHOT))
    assert s[("membership_node_up", (("node", "node1"),))] == 1
    assert s[("membership_node_up", (("node", "node2"),))] == 0
    assert s[("membership_node_marked_down", (("node", "node2"),))] == 1
    assert s[("membership_node_marked_down", (("node", "node1"),))] == 0
    inc = "membership_node_incidents_total"
    assert s[(inc, (("cause", "failed"), ("node", "node1")))] == 2
    assert s[(inc, (("cause", "left"), ("node", "node1")))] == 1
    # Every cause for every node, zeros included: increase() needs the series beforehand.
    for node in ("node1", "node2", "node3"):
        for cause in ("failed", "left", "operator"):
            assert (inc, (("cause", cause), ("node", node))) in s
    assert s[(inc, (("cause", "operator"), ("node", "node3")))] == 0
    assert s[("membership_node_downtime_seconds_total", (("node", "node2"),))] == 3600
    last = "membership_node_last_change_timestamp_seconds"
    assert s[(last, (("node", "node1"),))] == 1_795_000_000.123456  # no precision lost
    assert (last, (("node", "node3"),)) not in s  # never changed: no sample
    assert s[("membership_node_flapping", (("node", "node1"),))] == 0
    assert ("membership_node_flapping", (("node", "node2"),)) not in s  # None: unknown
    assert s[("membership_live_nodes", ())] == 2
    assert s[("membership_catalog_nodes", ())] == 3
    ev = "membership_events_total"
    assert s[(ev, (("event", "member-join"), ("observer", "node0")))] == 3
    assert s[(ev, (("event", "user"), ("observer", "node1")))] == 1
    assert s[("membership_last_event_timestamp_seconds", (("observer", "node1"),))] \
        == 1_794_999_000
    assert s[("membership_observer_info", (("observer", "node0"),))] == 1


def test_types_names_and_help():
    data = render(SNAPSHOT)
    types = families(data)
    assert types["membership_node_incidents"] == "counter"  # the parser strips _total
    assert types["membership_node_up"] == "gauge"
    text = data.decode()
    for line in text.splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    # No default process_/python_ metrics: they would describe the scraper, not the cluster.
    assert not [m for m in types if not m.startswith("membership_")]
    assert "lower bound" in text  # durations: Serf reports failures after a timeout
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_flapping_family_only_when_known_and_no_observer_info_for_merged_view():
    snap = {**SNAPSHOT, "observer": None,
            "nodes": {"n": {**SNAPSHOT["nodes"]["node3"]}}}
    types = families(render(snap))
    assert "membership_node_flapping" not in types
    assert "membership_observer_info" not in types


def test_empty_snapshot():
    data = render({"nodes": {}, "live_nodes": 0, "catalog_nodes": 0, "events": [],
                   "last_event_s": {}, "observer": None})
    assert promtool_check(data).returncode == 0
    assert samples(data)[("membership_live_nodes", ())] == 0


def test_duplicate_event_rows_are_summed():
    snap = {**SNAPSHOT, "events": [{"observer": "o", "event": "user", "count": 2},
                                   {"observer": "o", "event": "user", "count": 5}]}
    s = samples(render(snap))
    assert s[("membership_events_total", (("event", "user"), ("observer", "o")))] == 7


def test_hostile_names_are_escaped_and_valid_utf8():
    data = render(hostile_snapshot())
    data.decode("utf-8")  # strict: no lone surrogate got through
    r = promtool_check(data)
    assert r.returncode == 0, r.stdout + r.stderr
    up = {dict(k[1])["node"] for k in samples(data) if k[0] == "membership_node_up"}
    assert len(up) == len(HOSTILE)  # still one series per node
    for name in ("esc\x1b[31mred", "two\nlines", 'quote"d', "back\\slash", "ünïcødé ☃",
                 "nul\x00", ""):
        assert name in up  # valid UTF-8 names come back exactly
    assert "bad byte \\xff" in up and "lone \ufffd surrogate" in up
    assert {"a\\xff", "a\\xff#2"} <= up
    # the raw newline never starts a line of its own
    assert not [ln for ln in data.decode().splitlines() if ln.startswith("lines")]


# Any text, plus lone surrogates (invalid UTF-8 from the log) and the characters that
# escaping and de-duplication hinge on.
NAME_CHARS = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from('\\x#f"\n')


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(NAME_CHARS, max_size=12), min_size=1, max_size=6, unique=True))
def test_any_names_give_one_valid_series_each(names):
    node = {"up": True, "marked": False, "incidents": {}, "downtime_s": 0.0,
            "last_change_s": None, "flapping": None}
    snap = {"nodes": {n: node for n in names}, "live_nodes": len(names), "catalog_nodes": 0,
            "events": [], "last_event_s": {n: 1.0 for n in names}, "observer": None}
    s = samples(render(snap))
    up = [dict(k[1])["node"] for k in s if k[0] == "membership_node_up"]
    assert sorted(up) == sorted(labels.unique(names).values())
    assert len(set(up)) == len(names)


@pytest.mark.parametrize("value, label", [
    ("plain", "plain"), ("\udc80x", "\\x80x"), ("\ud83dx", "\ufffdx"), ("é\x00", "é\x00"),
])
def test_clean(value, label):
    assert labels.clean(value) == label


def test_a_cause_beyond_the_three_is_kept():
    snap = {**SNAPSHOT, "nodes": {"n": {**SNAPSHOT["nodes"]["node3"],
                                        "incidents": {"failed": 1, "new\udcff": 2}}}}
    s = samples(render(snap))
    causes = {dict(k[1])["cause"]: v for k, v in s.items()
              if k[0] == "membership_node_incidents_total"}
    assert causes == {"failed": 1, "left": 0, "operator": 0, "new\\xff": 2}
