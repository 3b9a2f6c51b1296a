"""What the real-Serf tests share: a running 3-agent cluster on loopback (every agent stopped
by pid, whatever happens), and the CLI's answers about one agent's store as plain data."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

from membership_log.core.timespec import parse
from membership_log.demo.localcluster import Cluster, catalog_for, wait_until

TIMEOUT = 45


def node_ids(first_ip: int) -> list[str]:
    return [f"127.0.0.{first_ip + i}:10031/droonga" for i in range(3)]


@contextlib.contextmanager
def running_cluster(tmp_path, first_ip: int):
    """Three agents ``node0``.. on 127.0.0.<first_ip>.., each with the catalog of the three,
    every one's live file listing all three before the test goes on."""
    ips = [f"127.0.0.{first_ip + i}" for i in range(3)]
    c = Cluster(tmp_path, 3, first_ip, catalog=catalog_for(ips))
    try:
        c.start()
        nodes = node_ids(first_ip)
        for a in c.agents:
            assert wait_until(lambda a=a: sorted(a.live()) == nodes, TIMEOUT), a.name
        yield c
    finally:
        c.stop()
    assert not any(a.running() for a in c.agents), "every agent the test started is stopped"


def run(membership, *args) -> str:
    return subprocess.run([membership, *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def replay(membership, agent) -> list[dict]:
    out = run(membership, "replay", "--json", "--base-dir", str(agent.base_dir))
    return [json.loads(line) for line in out.splitlines()]


def export(membership, agent) -> list[dict]:
    out = run(membership, "export", "--base-dir", str(agent.base_dir))
    return [json.loads(line) for line in out.splitlines()]


def audit(membership, agent, *args) -> dict:
    return json.loads(run(membership, "audit", "--json", "--base-dir", str(agent.base_dir),
                          *args))


def us(text: str) -> int:
    return parse(text, 0).us


def now_us() -> int:
    return time.time_ns() // 1000


def names(line: dict) -> list[str]:
    return [m["name"] for m in line["members"]]


def listed(agent, node: str, live: bool = True) -> bool:
    """Whether ``agent``'s live file comes to list (or drop) ``node`` within the timeout."""
    return wait_until(lambda: (node in agent.live()) == live, TIMEOUT)
