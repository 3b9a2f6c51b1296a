"""Time travel through the real handler and CLI: the state at any moment, byte-exact;
post-mortem replay filters; audit; coalesced and duplicated Serf deliveries."""

import json
import random
import sqlite3

import pytest
from conftest import invoke
from samples import NODES, collect_incidents
from typer.testing import CliRunner

from membership_log.cli import app

runner = CliRunner()
N0, N1, N2 = NODES
MEMBERS = [("node0", "192.168.100.50"), ("node1", "192.168.100.51"),
           ("node2", "192.168.100.52"), ("stray", "10.9.9.9")]


def random_event(rng, ltime):
    roll = rng.random()
    if roll < 0.6:
        kind = rng.choice(["member-join", "member-failed", "member-leave", "member-update",
                           "member-reap"])
        ms = rng.sample(MEMBERS, rng.randint(1, 3))
        return kind, "".join(f"{n}\t{a}\t\t\n" for n, a in ms).encode(), {}
    if roll < 0.9:
        name = rng.choice(["membership-down", "membership-up", "deploy"])
        payload = " ".join(rng.sample(["node0", "node1", "192.168.100.52", N2], 2))
        kind = rng.choice(["user", "query"])
        var = "SERF_USER" if kind == "user" else "SERF_QUERY"
        extra = {f"{var}_EVENT" if kind == "user" else "SERF_QUERY_NAME": name,
                 f"{var}_LTIME": str(ltime)}
        return kind, payload.encode(), extra
    return rng.choice(["member-join.", "bogus", None]), b"\xff garbage", {}


@pytest.mark.e2e
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_at_every_event_equals_the_live_file_written_right_after_it(handle, base, seed):
    rng = random.Random(seed)
    written = {}
    for i in range(25):
        if i == 12:  # a catalog change mid-log: the past keeps the catalog of its time
            (base / "catalog.json").write_text(
                json.dumps({"version": 1, "zones": [N1, N2]}))
        event, stdin, extra = random_event(rng, i)
        assert handle(event, stdin, extra).returncode == 0
        seq = handle.rows()[-1][0]
        written[seq] = (base / "live-nodes.json").read_bytes()
    with sqlite3.connect(base / "membership.db") as c:
        times = dict(c.execute("SELECT seq, received_us FROM event"))
    for seq, expected in written.items():
        got = runner.invoke(app, ["state", "--base-dir", str(base), "--at", f"@{seq}",
                                  "--as-live-file"])
        assert got.stdout_bytes == expected, f"@{seq}"
        from membership_log.core.timespec import iso
        by_time = runner.invoke(app, ["state", "--base-dir", str(base), "--at",
                                      iso(times[seq])[:-1], "--as-live-file"])
        assert by_time.stdout_bytes == expected, f"at the time of event {seq}"


def test_a_coalesced_1000_member_join_in_one_event(handle, base):
    (base / "catalog.json").unlink()
    stdin = b"".join(f"n{i:04d}\t10.0.{i // 250}.{i % 250}\t\t\n".encode() for i in range(1000))
    assert handle("member-join", stdin).returncode == 0
    assert len(handle.live()) == 1000
    (line,) = invoke("replay", "--base-dir", str(base), "--json").splitlines()
    doc = json.loads(line)
    assert len(doc["members"]) == 1000 and len(doc["changes"]) == 1000
    assert handle("member-failed", b"n0500\t10.0.2.0\t\t\n").returncode == 0
    assert "n0500" not in handle.live() and len(handle.live()) == 999


def test_the_same_user_event_delivered_twice_takes_effect_once(handle, base):
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    down = {"SERF_USER_EVENT": "membership-down", "SERF_USER_LTIME": "7"}
    handle("user", b"node1", down)
    handle("user", b"node1", {"SERF_USER_EVENT": "membership-up", "SERF_USER_LTIME": "8"})
    handle("user", b"node1", down)  # Serf redelivers after a rejoin
    assert list(handle.live()) == NODES, "a redelivery must not mark node1 down again"
    lines = [json.loads(x) for x in invoke("replay", "--base-dir", str(base),
                                           "--json").splitlines()]
    assert len(lines) == 5, "the raw log keeps every delivery"
    assert [x["duplicate"] for x in lines] == [False, False, False, False, True]
    assert lines[4]["changes"] == [] and lines[2]["changes"] != []
    assert "delivered again" in invoke("replay", "--base-dir", str(base))


def test_replay_filters(handle, base):
    handle("member-join", b"node0\t192.168.100.50\t\t\nnode1\t192.168.100.51\t\t\n")
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-failed", b"node2\t192.168.100.52\t\t\n", observer="node9")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")

    def seqs(*args):
        out = invoke("replay", "--base-dir", str(base), "--json", *args)
        return [json.loads(x)["seq"] for x in out.splitlines()]

    assert seqs("--since", "@3", "--until", "@4") == [3, 4]
    assert seqs("--node", "node1") == [1, 2, 3, 5], "node1's node: its catalog event too"
    assert seqs("--node", N1) == [1, 2, 3, 5]
    assert seqs("--observer", "node9") == [4]
    assert seqs("--since", "now") == []
    r = runner.invoke(app, ["replay", "--base-dir", str(base), "--node", "nod1"])
    assert r.exit_code == 1 and "no node 'nod1'; did you mean 'node1'" in r.output, r.output


def test_state_at_before_any_event_and_bad_time(handle, base):
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    r = runner.invoke(app, ["state", "--base-dir", str(base), "--at", "2000-01-01"])
    assert r.exit_code == 1 and "before the log's first event: the earliest time it holds " \
        "is 20" in r.output, r.output
    r = runner.invoke(app, ["state", "--base-dir", str(base), "--at", "2000-01-01",
                            "--as-live-file"])
    assert r.exit_code == 1 and r.stdout == "", "no live file printed for a time before the log"
    r = runner.invoke(app, ["state", "--base-dir", str(base), "--at", "soon"])
    assert r.exit_code == 2 and "'soon' is not a time; accepted: ISO 8601" in r.output
    r = runner.invoke(app, ["state", "--base-dir", str(base), "--json", "--as-live-file"])
    assert r.exit_code == 2


def test_audit_json_keys_and_values(handle, base):
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    handle("member-leave", b"node2\t192.168.100.52\t\t\n")
    doc = json.loads(invoke("audit", "--base-dir", str(base), "--json"))
    assert set(doc) == {"since", "until", "nodes", "observers", "observed_s", "note"}
    ns = doc["nodes"]
    assert list(ns) == sorted(ns, key=lambda k: (-ns[k]["downtime_s"], -ns[k]["flaps"], k)), \
        "worst node first"
    assert list(ns)[-1] == N0, "the node never down comes last"
    for n in doc["nodes"].values():
        assert set(n) == {"incidents", "downtime_s", "availability", "mttr_s", "flaps",
                          "flapping", "roles"}
    (inc,) = doc["nodes"][N1]["incidents"]
    assert {"down_at", "up_at", "duration_s", "cause", "observers"} <= set(inc)
    assert inc["cause"] == "failed" and inc["observers"] == ["node0"] and inc["up_at"]
    (left,) = doc["nodes"][N2]["incidents"]
    assert left["cause"] == "left" and left["up_at"] is None
    only = json.loads(invoke("audit", "--base-dir", str(base), "--json", "--node", N1))
    assert list(only["nodes"]) == [N1]
    table = invoke("audit", "--base-dir", str(base))
    assert "still down" in table and "1 (1 open)" in table


def test_timeline_svg_and_html(handle, base, tmp_path):
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    svg = tmp_path / "t.svg"
    out = invoke("timeline", "--base-dir", str(base), "-o", str(svg))
    assert out == f"wrote {svg}\n"
    text = svg.read_text()
    assert text.startswith("<svg") and text.count('class="node-row"') == 3
    assert "failed, down 20" in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    html = tmp_path / "t.html"
    invoke("timeline", "--base-dir", str(base), "-o", str(html), "--since", "@1")
    assert html.read_text().startswith("<!DOCTYPE html>")
    r = runner.invoke(app, ["timeline", "--base-dir", str(base), "-o", str(tmp_path / "t.png")])
    assert r.exit_code == 2 and "must end in .svg or .html" in r.output


def test_state_at_from_checkpoints_equals_a_fold_of_the_prefix(tmp_path):
    from membership_log.core import fold as project
    from membership_log.core.timespec import iso
    from membership_log.demo.synthetic import make_store
    from membership_log.history import driver as derive
    from membership_log.render import livefile
    from membership_log.stores.node import NODE, NodeStore

    s = make_store(str(tmp_path / "n"), "node0", 5_500, members=4)
    with sqlite3.connect(s.sqlite_path) as c:
        assert [q for (q,) in c.execute("SELECT seq FROM checkpoint")] == \
            list(range(250, 5_501, 250)), "small states: a checkpoint every 250 events"
        times = dict(c.execute("SELECT seq, received_us FROM event"))
    with NodeStore(s.sqlite_path) as st:
        raws = list(st.events(NODE, 0))
    for n in [1, 999, 1000, 1001, 2500, 5000, 5500]:
        expected = livefile.render_view(
            project.fold(derive.parse(r) for r in raws[:n]).nodes)
        by_seq = runner.invoke(app, ["state", "--base-dir", s.base_dir, "--at", f"@{n}",
                                     "--as-live-file"])
        by_time = runner.invoke(app, ["state", "--base-dir", s.base_dir, "--at",
                                      iso(times[n]), "--as-live-file"])
        assert by_seq.stdout_bytes == expected == by_time.stdout_bytes, n
    with sqlite3.connect(s.sqlite_path) as c:
        c.execute("UPDATE checkpoint SET state = (SELECT state FROM checkpoint WHERE seq = 1000)"
                  " WHERE seq = 3000")
    r = runner.invoke(app, ["verify", "--base-dir", s.base_dir])
    assert r.exit_code == 1 and "checkpoint at event 3000 differs" in r.output
    assert runner.invoke(app, ["rebuild", "--base-dir", s.base_dir]).exit_code == 0
    assert runner.invoke(app, ["verify", "--base-dir", s.base_dir]).exit_code == 0


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@pytest.mark.parametrize("seed", [4, 5])
def test_audit_from_derived_incidents_equals_audit_from_a_full_fold(handle, base, seed):
    """audit reads the incidents kept as events arrive; the one incident reducer over a
    full fold of the same log must find exactly the same."""
    rng = random.Random(seed)
    for i in range(30):
        event, stdin, extra = random_event(rng, i)
        assert handle(event, stdin, extra).returncode == 0
    from membership_log.core import figures as audit
    from membership_log.core import fold as project
    from membership_log.history import driver as derive
    from membership_log.render.jsondoc import audit_doc
    from membership_log.stores.node import NODE, NodeStore

    fast = json.loads(invoke("audit", "--base-dir", str(base), "--json", "--until", "now"))
    with NodeStore(str(base / "membership.db")) as st:
        raws = list(st.events(NODE, 0))
    from membership_log.core.droonga import node_roles

    state = project.State()
    triples = []
    sessions = []
    role_changes = []
    start_roles = None
    for raw in raws:
        event = derive.parse(raw)
        before = node_roles(state.nodes, state.members)
        effect = state.apply(event)
        triples.append((event, effect.changes, dict(state.nodes)))
        if effect.restart:  # the observer's agent (re)joined: unobserved since its last event
            sessions.append((effect.restart[0], event.at, effect.restart[1]))
        after = node_roles(state.nodes, state.members)
        if start_roles is None:  # the window starts with the first event's state
            start_roles = after
            continue
        role_changes += [(event.at, n, after.get(n)) for n in sorted(before.keys() | after)
                         if before.get(n) != after.get(n)]
    until = json.loads(json.dumps(fast["until"]))
    from membership_log.core.timespec import parse

    until_us = parse(until, 0).us
    names = {n for n, v in state.nodes.items() if v.in_catalog}
    stretches = audit.role_stretches(start_roles, role_changes, raws[0].received_us, until_us)
    found = collect_incidents(triples)
    full = audit_doc(audit.report(
        found, names, raws[0].received_us, until_us,
        audit.unobserved(sessions, raws[0].received_us, until_us),
        roles={n: stretches.get(n) or [(raws[0].received_us, until_us, None)]
               for n in names | {i.node for i in found}}))
    assert fast["nodes"] == full["nodes"]
    assert any(n["incidents"] for n in fast["nodes"].values()), "the log has incidents"
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE incident SET cause = 'left' WHERE down_seq = (SELECT min(down_seq) "
                  "FROM incident)")
    r = runner.invoke(app, ["verify", "--base-dir", str(base)])
    assert r.exit_code == 1 and "derived incidents differ" in r.output
    invoke("rebuild", "--base-dir", str(base))
    assert runner.invoke(app, ["verify", "--base-dir", str(base)]).exit_code == 0
