"""Issue 18, "an operator's day": what no command does by accident (SPEC "Safety"). Each
point through the real CLI, the real SQLite and PostgreSQL, and the real Alertmanager where
it touches it."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from conftest import cli
from samples import CATALOG_V2, NODES

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES
JOIN = b"node0\t192.168.100.50\t\t\nnode1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n"


def run(membership, *args, code: int = 0, input: bytes | None = None):
    r = cli(membership, *args, input=input)
    assert r.returncode == code, (r.returncode, r.stdout.decode(), r.stderr.decode())
    if code:
        err = r.stderr.decode()
        assert err.startswith("membership: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    return r


# -- never an outage by accident -----------------------------------------------------------------


def test_init_with_an_unusable_catalog_exits_1_and_keeps_the_live_file(membership, tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    (base / "catalog.json").write_text(json.dumps(CATALOG_V2))
    assert "3 live node(s)" in run(membership, "init", "--base-dir", str(base)).stdout.decode()
    before = (base / "live-nodes.json").read_bytes()
    (base / "catalog.json").write_text('{"version": 2, "datasets": ')
    r = run(membership, "init", "--base-dir", str(base), code=1)
    assert b"is unusable" in r.stderr and b"was left as it was" in r.stderr
    assert (base / "live-nodes.json").read_bytes() == before


def test_init_with_an_unusable_catalog_and_none_before_writes_no_live_file(membership,
                                                                          tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    (base / "catalog.json").write_text('{"version": 2, "datasets": {}}')
    r = run(membership, "init", "--base-dir", str(base), code=1)
    assert b"was not written" in r.stderr
    assert not (base / "live-nodes.json").exists()


def test_without_a_catalog_no_live_file_until_a_member_is_seen(membership, tmp_path):
    base = tmp_path / "b"
    out = run(membership, "init", "--base-dir", str(base)).stdout.decode()
    assert ": not written yet: no catalog at" in out, out
    assert not (base / "live-nodes.json").exists()
    run(membership, "state", "--base-dir", str(base), "--at", "now", "--as-live-file", code=1)
    env = {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "n0"}
    import os
    import subprocess

    r = subprocess.run([membership, "handle", "--base-dir", str(base)], input=b"n1\t10.0.0.1\t\t\n",
                       env={**os.environ, **env}, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((base / "live-nodes.json").read_bytes()) == {
        "n1": {"serfAddress": "10.0.0.1"}}


def test_state_before_the_first_event_is_an_error_naming_the_first_time(membership, handle,
                                                                        base):
    assert handle("member-join", JOIN).returncode == 0
    for option in (["--at", "2020-01-01"], ["--at", "2020-01-01", "--as-live-file"],
                   ["--at", "2020-01-01", "--json"]):
        r = run(membership, "state", "--base-dir", str(base), *option, code=1)
        assert re.search(rb"is before the log's first event: the earliest time it holds is "
                         rb"\d{4}-\d\d-\d\dT", r.stderr), r.stderr
        assert r.stdout == b""
    for command in ("replay", "audit", "export"):
        r = run(membership, command, "--base-dir", str(base), "--since", "2020-01-01", code=1)
        assert b"before the log's first event" in r.stderr


def test_a_failed_import_into_a_new_base_dir_leaves_nothing_behind(membership, tmp_path):
    base = tmp_path / "new"
    r = run(membership, "import", "--base-dir", str(base), "-", code=1,
            input=b'{"not": "an event"}\n')
    assert b"line 1: missing" in r.stderr
    assert not (base / "membership.db").exists() and not (base / "live-nodes.json").exists()
    assert [p.name for p in base.iterdir()] == [], list(base.iterdir())


# -- names and points must exist -----------------------------------------------------------------


def test_unknown_nodes_and_observers_name_what_exists(membership, handle, base):
    assert handle("member-join", JOIN).returncode == 0
    assert handle("member-failed", b"node1\t192.168.100.51\t\t\n").returncode == 0
    for command in ("replay", "audit"):
        r = run(membership, command, "--base-dir", str(base), "--node", "node9", code=1)
        assert b"no node 'node9'; did you mean " in r.stderr, r.stderr
        assert all(f"'{n}'".encode() in r.stderr for n in ("node0", "node1", "node2"))
    for command in ("state", "replay", "audit", "metrics", "export"):
        r = run(membership, command, "--base-dir", str(base), "--observer", "nodeX", code=1)
        assert b"holds no event of observer 'nodeX'" in r.stderr and b"node0" in r.stderr, \
            (command, r.stderr)
    # --observer is honoured: the log's own observer answers as the whole log does.
    whole = run(membership, "state", "--base-dir", str(base), "--json").stdout
    assert run(membership, "state", "--base-dir", str(base), "--json", "--observer",
               "node0").stdout == whole
    r = run(membership, "state", "--base-dir", str(base), "--at", "@999", code=1)
    assert b"there is no event 999: the log's last event is 3 (@3)" in r.stderr


def test_unknown_observer_on_the_central_store_names_its_logs(membership, handle, base,
                                                             pg_url):
    assert handle("member-join", JOIN).returncode == 0
    run(membership, "db", "upgrade", "--db", pg_url)
    run(membership, "ship", "--base-dir", str(base), "--to", pg_url)
    for command in ("state", "replay", "audit", "metrics", "export"):
        r = run(membership, command, "--db", pg_url, "--observer", "nod0", code=1)
        assert b"holds no log of 'nod0'; did you mean 'node0'?" in r.stderr, r.stderr
    assert b"192.168.100.51" in run(membership, "state", "--db", pg_url, "--observer",
                                    "node0").stdout


# -- a safe compact -------------------------------------------------------------------------------


def test_compact_shows_first_and_refuses_without_shipping_unless_forced(membership, handle,
                                                                        base):
    for _ in range(3):
        assert handle("member-join", JOIN).returncode == 0
    db = base / "membership.db"
    size = db.stat().st_size
    out = run(membership, "compact", "--base-dir", str(base), "--before", "now",
              "--dry-run").stdout.decode()
    assert re.match(r"would drop 4 event\(s\): 1\.\.4, received \S+Z to \S+Z, about [\d,]+ "
                    r"bytes \(nothing changed: --dry-run\)", out), out
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM event").fetchone() == (4,)
    r = run(membership, "compact", "--base-dir", str(base), "--before", "now", code=1)
    assert b"compact would drop 4 event(s)" in r.stderr and b"--force" in r.stderr
    assert b"membership ship --to URL" in r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM event").fetchone() == (4,)
    out = run(membership, "compact", "--base-dir", str(base), "--before", "now",
              "--force").stdout.decode()
    assert out.startswith("dropped 4 event(s)")
    assert db.stat().st_size <= size * 2


# -- usage errors exit 2; one parser for durations ------------------------------------------------


def test_usage_errors_exit_2(membership, handle, base):
    assert handle("member-join", JOIN).returncode == 0
    r = run(membership, "replay", "--base-dir", str(base), "--since", "now", "--until",
            "1h ago", code=2)
    assert b"is after --until" in r.stderr
    assert cli(membership, "audit", "--base-dir", str(base), "--since", "@3", "--until",
               "@2").returncode == 2
    assert cli(membership, "state", "--base-dir", str(base), "--at", "soon").returncode == 2
    assert cli(membership, "audit", "--base-dir", str(base), "--flap-window",
               "ten").returncode == 2
    r = cli(membership, "ship", "--base-dir", str(base), "--to", "nosuch://db")
    assert r.returncode == 2 and b"unknown database kind" in r.stderr, r.stderr
    r = cli(membership, "alerts", "--base-dir", str(base), "--to", "ftp://am")
    assert r.returncode == 2 and b"bad Alertmanager URL" in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["90", "90s", "1.5m", "2h", "1d"])
def test_every_duration_option_takes_every_form(membership, handle, base, value):
    assert handle("member-join", JOIN).returncode == 0
    run(membership, "audit", "--base-dir", str(base), "--detection-delay", value,
        "--flap-window", value)
    run(membership, "timeline", "--base-dir", str(base), "--flap-window", value, "-o",
        str(base / "t.svg"))


def test_help_shows_no_type_placeholders_and_whole_summaries(membership):
    top = run(membership, "--help").stdout.decode()
    assert "..." not in top.split("Commands:")[1], top
    commands = re.findall(r"^  (\w[\w-]*)\s{2,}", top.split("Commands:")[1], flags=re.M)
    assert {"init", "audit", "compact", "alerts"} <= set(commands)
    for command in commands:
        text = run(membership, command, "--help").stdout.decode()
        for placeholder in ("<float range>", "<int range>", "[[FILE]]", "<str>", "<float>",
                            "<int>", "<bool>"):
            assert placeholder not in text, (command, placeholder)


def test_ship_to_takes_a_plain_path_as_db_does(membership, handle, base, tmp_path):
    assert handle("member-join", JOIN).returncode == 0
    central = tmp_path / "central.db"
    run(membership, "db", "upgrade", "--db", str(central), "--role", "central")
    out = run(membership, "ship", "--base-dir", str(base), "--to", str(central)).stdout
    assert b"holds its events up to 2" in out
    assert b"2 events, hash chain intact" in run(membership, "verify", "--db",
                                                 str(central)).stdout


# -- the audit's observers, and causes left out --------------------------------------------------


def test_audit_names_every_observer_of_the_window(membership, handle, base):
    """An observer that never saw its own join (its agent started before the log) is in
    ``observers`` all the same, with no session start."""
    assert handle("member-join", b"node1\t192.168.100.51\t\t\n").returncode == 0
    doc = json.loads(run(membership, "audit", "--base-dir", str(base), "--json").stdout)
    assert doc["observers"] == {"node0": {"sessions": [], "unobserved": []}}


def test_exclude_cause_leaves_planned_leaves_out_of_the_figures(membership, handle, base):
    assert handle("member-join", JOIN).returncode == 0
    assert handle("member-leave", b"node2\t192.168.100.52\t\t\n").returncode == 0
    assert handle("member-failed", b"node1\t192.168.100.51\t\t\n").returncode == 0
    doc = json.loads(run(membership, "audit", "--base-dir", str(base), "--json",
                         "--exclude-cause", "left").stdout)
    assert doc["nodes"][N2]["incidents"] == [] and doc["nodes"][N2]["availability"] == 1.0
    assert [i["cause"] for i in doc["nodes"][N1]["incidents"]] == ["failed"]
    text = run(membership, "metrics", "--base-dir", str(base), "--exclude-cause",
               "left,operator").stdout.decode()
    assert f'membership_node_incidents_total{{cause="left",node="{N2}"}} 0.0' in text
    assert f'membership_node_incidents_total{{cause="failed",node="{N1}"}} 1.0' in text
    assert cli(membership, "audit", "--base-dir", str(base), "--exclude-cause",
               "planned").returncode == 2


def test_alerts_carry_severity_by_cause_and_a_generator_url(membership, handle, base,
                                                            alertmanager):
    assert handle("member-join", JOIN).returncode == 0
    assert handle("member-leave", b"node2\t192.168.100.52\t\t\n").returncode == 0
    assert handle("member-failed", b"node1\t192.168.100.51\t\t\n").returncode == 0
    run(membership, "alerts", "--base-dir", str(base), "--to", alertmanager.url,
        "--dashboard-url", "http://monitor.example:9137/", "--severity", "left=info")
    got = {a["labels"]["node"]: a for a in alertmanager.alerts()}
    assert got[N1]["labels"]["severity"] == "critical"
    assert got[N2]["labels"]["severity"] == "info"
    assert got[N1]["generatorURL"] == "http://monitor.example:9137/"
