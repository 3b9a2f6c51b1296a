"""The demo: a real 3-node Serf cluster on loopback plays the seed's scenarios.

    python -m membership_log.demo.run [--dir demo-run] [--first-ip 11]

Every node runs ``membership handle`` as its Serf event handler, with the same catalog. The
demo pauses an agent (quick reconnect), kills and restarts one (severe fault), marks a node
down and up as an operator, asks every node for its live set, lets one leave gracefully,
then replays node0's log. It stops every agent it started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..core.errors import MembershipError
from .localcluster import Agent, Cluster, catalog_for, membership_command, wait_until

STEP_TIMEOUT = 45.0


def _say(text: str) -> None:
    print(text, flush=True)


def _heading(text: str) -> None:
    _say(f"\n=== {text}")


class Demo:
    def __init__(self, root: Path, first_ip: int) -> None:
        self.ips = [f"127.0.0.{first_ip + i}" for i in range(3)]
        self.nodes = [f"{ip}:10031/droonga" for ip in self.ips]
        self.cluster = Cluster(root, 3, first_ip, catalog=catalog_for(self.ips),
                               install_serf=True)
        self.started = time.monotonic()

    def node0_live(self) -> list[str]:
        return sorted(self.cluster[0].live())

    def expect(self, watcher: Agent, node: str, live: bool, what: str) -> None:
        t0 = time.monotonic()
        ok = wait_until(lambda: (node in watcher.live()) == live, STEP_TIMEOUT, 0.1)
        if not ok:
            raise MembershipError(f"demo: {what}: {watcher.name}'s live file did not "
                                  f"{'add' if live else 'drop'} {node} in {STEP_TIMEOUT:.0f} s")
        _say(f"  {watcher.name}'s live file {'lists' if live else 'dropped'} {node} after "
             f"{time.monotonic() - t0:.1f} s")

    def show_live(self, agent: Agent) -> None:
        _say(f"  {agent.live_file}:")
        for line in agent.live_file.read_text().splitlines():
            _say("    " + line)

    def run(self) -> None:
        c = self.cluster
        node0, node1, node2 = c.agents
        _heading("Starting 3 Serf agents on loopback, each with `membership handle` as handler")
        for a in c.agents:
            _say(f"  {a.name}: serf agent -bind={a.bind} -event-handler=\"{a.handler}\"")
        c.start()
        for a in c.agents:
            for node in self.nodes:
                self.expect(a, node, True, "cluster start")
        self.show_live(node0)

        _heading("Quick reconnect: node1's VM paused (SIGSTOP), then resumed (SIGCONT)")
        node1.pause()
        self.expect(node0, self.nodes[1], False, "pause")
        self.expect(node2, self.nodes[1], False, "pause")
        self.show_live(node0)
        node1.resume()
        self.expect(node0, self.nodes[1], True, "resume")

        _heading("Severe fault: node1 killed (SIGKILL), then a new agent with the same name")
        node1.kill9()
        self.expect(node0, self.nodes[1], False, "kill -9")
        node1.start(join=node0)
        self.expect(node0, self.nodes[1], True, "restart")

        _heading("Operator: serf event membership-down node2, then membership-up node2")
        node0.event("membership-down", "node2")
        self.expect(node0, self.nodes[2], False, "membership-down")
        self.expect(node1, self.nodes[2], False, "membership-down")
        self.show_live(node1)
        node0.event("membership-up", "node2")
        self.expect(node0, self.nodes[2], True, "membership-up")

        _heading("Query: serf query membership-live (every node answers with its live set)")
        for name, answer in sorted(node0.query("membership-live").items()):
            _say(f"  {name}: {answer.strip()}")

        _heading("Graceful leave: serf leave on node2")
        node2.leave()
        self.expect(node0, self.nodes[2], False, "leave")
        self.show_live(node0)

        _heading(f"node0's log: membership replay --base-dir {node0.base_dir}")
        membership = membership_command()
        subprocess.run([membership, "replay", "--base-dir", str(node0.base_dir)], check=True)
        _heading(f"node0's state now: membership state --base-dir {node0.base_dir}")
        subprocess.run([membership, "state", "--base-dir", str(node0.base_dir)], check=True)
        _heading(f"Post-mortem: membership audit --base-dir {node0.base_dir}")
        subprocess.run([membership, "audit", "--base-dir", str(node0.base_dir)], check=True)
        picture = self.cluster.root / "timeline.html"
        _heading(f"Picture: membership timeline --base-dir {node0.base_dir} -o {picture}")
        subprocess.run([membership, "timeline", "--base-dir", str(node0.base_dir), "-o",
                        str(picture)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membership_log.demo.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="demo-run", help="where the nodes' base dirs go "
                        "(emptied first; default: ./demo-run)")
    parser.add_argument("--first-ip", type=int, default=11,
                        help="agents bind 127.0.0.N, N+1, N+2 (default 11)")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    if root.exists():
        shutil.rmtree(root)
    demo = None
    try:
        demo = Demo(root, args.first_ip)
        demo.run()
    except (MembershipError, subprocess.CalledProcessError) as e:
        print(f"membership demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("membership demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if demo is not None:
            demo.cluster.stop()
    _say(f"\nAll agents stopped. The nodes' stores and live files are in {root}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
