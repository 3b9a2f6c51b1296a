"""End to end with real Serf agents on loopback (-profile=local), each node with its own
base dir and ``membership handle`` as its event handler: the seed's scenarios."""

import json
import subprocess

import pytest

from membership_log.localcluster import Cluster, catalog_for, wait_until

pytestmark = pytest.mark.serf

TIMEOUT = 45


def nodes_for(first_ip):
    ips = [f"127.0.0.{first_ip + i}" for i in range(3)]
    return ips, [f"{ip}:10031/droonga" for ip in ips]


@pytest.fixture
def cluster(request, serf, tmp_path):
    first_ip = request.param
    ips, _ = nodes_for(first_ip)
    c = Cluster(tmp_path, 3, first_ip, catalog=catalog_for(ips))
    try:
        c.start()
        _, nodes = nodes_for(first_ip)
        for a in c.agents:
            assert wait_until(lambda a=a: sorted(a.live()) == nodes, TIMEOUT), a.name
        yield c
    finally:
        c.stop()
    assert not any(a.running() for a in c.agents), "every agent the test started is stopped"


def listed(agent, node, live=True):
    return wait_until(lambda: (node in agent.live()) == live, TIMEOUT, 0.1)


def replay(membership, agent):
    r = subprocess.run([membership, "replay", "--json", "--base-dir", str(agent.base_dir)],
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
    assert listed(node0, nodes[1]) and listed(node2, nodes[1])
    answers = node0.query("membership-live")
    assert sorted(answers) == ["node0", "node1", "node2"]
    for name, answer in answers.items():
        doc = json.loads(answer)
        assert doc["observer"] == name and doc["live"] == nodes
    for agent in (node0, node2):
        assert transitions(replay(membership, agent), nodes[1]) == [
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
    lines = replay(membership, node0)
    assert transitions(lines, nodes[1]) == [("member-failed", "dead"), ("member-join", "live")]
    assert transitions(lines, nodes[2]) == [("member-leave", "dead")]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
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
        assert transitions(replay(membership, a), nodes[2]) == [("user", "dead"),
                                                                ("user", "live")]
