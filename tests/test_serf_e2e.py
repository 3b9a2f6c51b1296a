"""End to end with real Serf agents on loopback (-profile=local), each node with its own
base dir and ``membership handle`` as its event handler: the seed's scenarios."""

import json
import signal
import subprocess
from pathlib import Path

import pytest
from serfhelpers import TIMEOUT, listed, node_ids, running_cluster

from membership_log.demo.localcluster import catalog_for, wait_until

pytestmark = [pytest.mark.serf, pytest.mark.e2e]

def nodes_for(first_ip):
    ips = [f"127.0.0.{first_ip + i}" for i in range(3)]
    return ips, node_ids(first_ip)


@pytest.fixture
def cluster(request, serf, tmp_path):
    with running_cluster(tmp_path, request.param) as c:
        yield c


def replay(membership, base_dir):
    r = subprocess.run([membership, "replay", "--json", "--base-dir", str(base_dir)],
                       capture_output=True, text=True, check=True)
    return [json.loads(line) for line in r.stdout.splitlines()]


def transitions(lines, node):
    """(event, to) for each liveness change of ``node`` in a replay."""
    return [(x["event"], c["to"]) for x in lines for c in x["changes"]
            if c["node"] == node and c["from"] is not None]


@pytest.mark.parametrize("cluster", [21], indirect=True)
def test_quick_reconnect_pause_and_resume_and_live_query(cluster, membership):
    node0, node1, node2 = cluster.agents
    _, nodes = nodes_for(21)
    node1.pause()
    assert listed(node0, nodes[1], False) and listed(node2, nodes[1], False)
    assert sorted(node0.live()) == [nodes[0], nodes[2]]
    assert node0.live()[nodes[0]] == {"serfAddress": "127.0.0.21"}
    node1.resume()
    for a in cluster.agents:  # the paused node's own view ends complete too
        assert wait_until(lambda a=a: sorted(a.live()) == nodes, TIMEOUT), a.name
    answers = node0.query("membership-live")
    assert sorted(answers) == ["node0", "node1", "node2"]
    for name, answer in answers.items():
        doc = json.loads(answer)
        assert doc["observer"] == name and doc["live"] == nodes
    for agent in (node0, node2):
        assert transitions(replay(membership, agent.base_dir), nodes[1]) == [
            ("member-failed", "dead"), ("member-join", "live")]


@pytest.mark.parametrize("cluster", [31], indirect=True)
def test_severe_fault_kill_and_restart_then_graceful_leave(cluster, membership):
    node0, node1, node2 = cluster.agents
    _, nodes = nodes_for(31)
    node1.kill9()
    assert listed(node0, nodes[1], False) and listed(node2, nodes[1], False)
    node1.start(join=node0)  # a new agent with the same name rejoins
    assert listed(node0, nodes[1]) and listed(node2, nodes[1])
    assert wait_until(lambda: node0.members().get("node1") == "alive", TIMEOUT)
    node2.leave()
    assert listed(node0, nodes[2], False) and listed(node1, nodes[2], False)
    assert sorted(node0.live()) == nodes[:2]
    lines = replay(membership, node0.base_dir)
    assert transitions(lines, nodes[1]) == [("member-failed", "dead"), ("member-join", "live")]
    assert transitions(lines, nodes[2]) == [("member-leave", "dead")]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    # The restarted node kept its store: its log goes on, and it saw node2 leave.
    restarted = replay(membership, node1.base_dir)
    assert [x["seq"] for x in restarted] == list(range(1, len(restarted) + 1))
    assert transitions(restarted, nodes[2]) == [("member-leave", "dead")]
    assert sorted(node1.live()) == nodes[:2]
    state = json.loads(subprocess.run(
        [membership, "state", "--json", "--base-dir", str(node0.base_dir)],
        capture_output=True, text=True, check=True).stdout)
    assert state["nodes"][nodes[2]]["serf"] == "left" and not state["nodes"][nodes[2]]["live"]


@pytest.mark.parametrize("cluster", [41], indirect=True)
def test_operator_down_and_up_reach_every_node(cluster, membership):
    node0, node1, node2 = cluster.agents
    _, nodes = nodes_for(41)
    node1.event("membership-down", "node2")
    for a in cluster.agents:
        assert listed(a, nodes[2], False), a.name
    node2.event("membership-up", "node2")
    for a in cluster.agents:
        assert listed(a, nodes[2]), a.name
    for a in cluster.agents:
        assert transitions(replay(membership, a.base_dir), nodes[2]) == [("user", "dead"),
                                                                ("user", "live")]


ROOT = Path(__file__).resolve().parent.parent


def test_example_catalog_is_the_one_the_demo_uses():
    ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert (ROOT / "examples" / "catalog.json").read_bytes() == catalog_for(ips)


def test_example_agent_config_runs_the_handler_in_a_real_serf(serf, membership, tmp_path):
    """The example configuration, moved to loopback and a temporary base dir, is accepted by
    a real agent and its event_handlers line runs `membership handle`."""
    config = json.loads((ROOT / "examples" / "serf-agent.json").read_text())
    (handler,) = config["event_handlers"]
    assert handler.startswith("membership handle --base-dir ") and "=" not in handler
    config.update(bind="127.0.0.51:7946", rpc_addr="127.0.0.51:7373", retry_join=[])
    config["event_handlers"] = [handler.replace("membership", membership, 1)
                                .replace("/var/lib/droonga", str(tmp_path / "base"))]
    (tmp_path / "agent.json").write_text(json.dumps(config))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "catalog.json").write_bytes(catalog_for(["127.0.0.51"]))
    agent = [serf, "agent", "-profile=local", f"-config-file={tmp_path / 'agent.json'}"]
    proc = subprocess.Popen(agent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        live = tmp_path / "base" / "live-nodes.json"
        assert wait_until(lambda: live.exists() and "127.0.0.51:10031/droonga" in live.read_text(),
                          TIMEOUT)
        lines = replay(membership, tmp_path / "base")
        assert [x["event"] for x in lines] == ["catalog", "member-join"]
        assert lines[1]["members"][0]["name"] == "node0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("cluster", [71], indirect=True)
def test_audit_of_real_faults_matches_what_was_done(cluster, membership):
    import time

    from membership_log.core.timespec import iso, parse

    node0, node1, node2 = cluster.agents
    _, nodes = nodes_for(71)
    t_pause = time.time_ns() // 1000
    node1.pause()
    assert listed(node0, nodes[1], False)
    time.sleep(3)
    t_resume = time.time_ns() // 1000
    node1.resume()
    assert listed(node0, nodes[1])
    node1.kill9()
    assert listed(node0, nodes[1], False)
    node1.start(join=node0)
    assert listed(node0, nodes[1])
    node0.event("membership-down", "node2")
    assert listed(node0, nodes[2], False)
    node0.event("membership-up", "node2")
    assert listed(node0, nodes[2])
    node2.leave()
    assert listed(node0, nodes[2], False)
    # What Serf itself decided: a graceful leave, or (a leave message lost under load) a
    # failure. The log must say what Serf said, whichever it was.
    assert wait_until(lambda: node0.members().get("node2") in ("left", "failed"), TIMEOUT)
    serf_said = {"left": "left", "failed": "failed"}[node0.members()["node2"]]

    r = subprocess.run([membership, "audit", "--json", "--base-dir", str(node0.base_dir)],
                       capture_output=True, text=True, check=True)
    doc = json.loads(r.stdout)["nodes"]
    paused, killed = doc[nodes[1]]["incidents"]
    assert (paused["cause"], killed["cause"]) == ("failed", "failed")
    down = parse(paused["down_at"], 0).us
    up = parse(paused["up_at"], 0).us
    # Serf's detection delay (-profile=local) bounds how far the log may lag what was done.
    assert t_pause <= down <= t_pause + 15_000_000
    assert t_resume <= up <= t_resume + 10_000_000
    assert abs(paused["duration_s"] - (t_resume - down) / 1e6) <= 10
    assert paused["observers"] == ["node0"]
    operator, left = doc[nodes[2]]["incidents"]
    assert operator["cause"] == "operator" and operator["up_at"] is not None
    assert left["cause"] == serf_said and left["up_at"] is None
    assert doc[nodes[0]]["incidents"] == [] and doc[nodes[0]]["availability"] == 1.0
    # What did node0's live file say while node1 was paused?
    during = subprocess.run([membership, "state", "--base-dir", str(node0.base_dir),
                             "--at", iso((down + up) // 2)[:-1], "--as-live-file"],
                            capture_output=True, check=True).stdout
    assert sorted(json.loads(during)) == [nodes[0], nodes[2]]


@pytest.mark.parametrize("cluster", [81], indirect=True)
def test_watcher_on_another_node_reports_a_paused_node_within_2s(cluster, membership):
    import threading
    import time

    node0, node1, _ = cluster.agents
    _, nodes = nodes_for(81)
    watcher = subprocess.Popen([membership, "watch", "--json", "--interval", "0.1",
                                "--base-dir", str(node0.base_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    reports = []

    def read():
        for line in watcher.stdout:
            reports.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: reports and sorted(reports[-1][1]["live"]) == nodes, TIMEOUT)

        def file_change_then_report(node, present, key):
            assert wait_until(lambda: (node in node0.live()) == present, TIMEOUT, 0.02)
            changed = time.monotonic()
            assert wait_until(lambda: any(node in r[key] for _, r in reports), 10, 0.02)
            reported = next(t for t, r in reports if node in r[key])
            return reported - changed

        node1.pause()
        assert file_change_then_report(nodes[1], False, "removed") < 2.0
        node1.resume()
        assert file_change_then_report(nodes[1], True, "added") < 2.0
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(10)
    assert watcher.returncode == 0
