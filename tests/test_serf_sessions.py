"""Observer sessions and Serf's detection delay, on real Serf agents on loopback
(-profile=local), each with ``membership handle`` as its handler and its own store.

- An agent stopped and started again (same name, ``-join``) records, in its own store, a
  second session and the unobserved gap before it; an incident overlapping the gap carries
  ``unobserved_s``. The first event the handler gets from a (re)started agent is a
  ``member-join`` naming the agent itself: the session rule rests on that.
- A node that failed while the observer was down (and is still down when the observer
  returns) is never reported to the restarted agent: it stays live in that observer's live
  file (a documented limit; see the test).
- Serf reports a failure only after its suspicion timeout: a recorded incident is shorter
  than the pause that caused it, and ``--detection-delay S`` moves the estimated start back
  by S.

Figures (detection delay, restart gaps) are printed, not asserted: run with ``-s``.
Addresses 127.0.0.150-158 are used by no other test.
"""

from __future__ import annotations

import base64
import time

import pytest
from serfhelpers import (
    TIMEOUT,
    audit,
    export,
    listed,
    names,
    node_ids,
    now_us,
    replay,
    run,
    running_cluster,
    us,
)

from membership_log.core.timespec import iso
from membership_log.demo.localcluster import wait_until

pytestmark = [pytest.mark.serf, pytest.mark.e2e]



class Precondition(Exception):
    """Real Serf did not set the scene up; not the failure a strict xfail expects."""


def require(ok, what: str) -> None:
    if not ok:
        raise Precondition(what)


def self_joins(lines: list[dict], name: str) -> list[dict]:
    return [x for x in lines if x["event"] == "member-join" and name in names(x)]


def assert_first_serf_event_names_itself(membership, agent, first_seq: int) -> None:
    """The first Serf event recorded from ``first_seq`` on is a member-join whose stdin has
    a line for the agent itself (checked on the raw record, not on the parse)."""
    raw = next(r for r in export(membership, agent)
               if r["seq"] >= first_seq and r["source"] == "serf")
    assert raw["env"]["SERF_EVENT"] == "member-join", raw["env"]
    assert raw["env"]["SERF_SELF_NAME"] == agent.name
    lines = base64.b64decode(raw["stdin_b64"]).decode().splitlines()
    assert agent.name in [line.split("\t")[0] for line in lines], lines


def test_a_restarted_agent_records_a_new_session_and_the_gap_before_it(
        serf, membership, tmp_path):
    nodes = node_ids(150)
    with running_cluster(tmp_path, 150) as c:
        node0, node1, node2 = c.agents
        started = replay(membership, node1)
        assert_first_serf_event_names_itself(membership, node1, 1)

        node2.pause()  # node2 fails while node1 still watches
        assert listed(node1, nodes[2], False)
        t_stop = now_us()
        node1.stop()  # SIGTERM: the agent exits without a leave
        node2.resume()  # node2 comes back while node1 sees nothing
        assert listed(node0, nodes[2])
        assert wait_until(lambda: node0.members().get("node2") == "alive", TIMEOUT)
        before = replay(membership, node1)
        t_start = now_us()
        node1.start(join=node0)
        assert wait_until(lambda: self_joins(replay(membership, node1)[len(before):], "node1"),
                          TIMEOUT)
        assert listed(node1, nodes[2])
        after = replay(membership, node1)

    # The first thing the restarted agent's handler got: a member-join naming itself.
    restart = after[len(before)]
    assert restart["event"] == "member-join" and "node1" in names(restart), restart
    assert restart["observer"] == "node1"
    assert_first_serf_event_names_itself(membership, node1, restart["seq"])

    doc = audit(membership, node1)
    gap_from = [x for x in before if x["event"] != "catalog"][-1]["at"]
    first_join = self_joins(started, "node1")[0]["at"]
    assert doc["observers"] == {"node1": {
        "sessions": [first_join, restart["at"]],
        "unobserved": [{"from": gap_from, "to": restart["at"]}],
    }}
    assert us(gap_from) <= t_stop <= t_start <= us(restart["at"])

    # node2's incident, seen failing before the stop and back only at the restart,
    # overlaps the gap: that part of it was not observed.
    (failed,) = [x for x in before if x["event"] == "member-failed"]
    (inc,) = doc["nodes"][nodes[2]]["incidents"]
    assert inc["cause"] == "failed" and inc["down_at"] == failed["at"]
    up_line = next(x for x in after[len(before):] if x["event"] == "member-join"
                   and "node2" in names(x))
    assert inc["up_at"] == up_line["at"]
    down, up = us(inc["down_at"]), us(inc["up_at"])
    blind = min(up, us(restart["at"])) - max(down, us(gap_from))
    assert blind > 0 and inc["unobserved_s"] == pytest.approx(blind / 1e6, abs=2e-6)
    # Downtime and availability count observed time only.
    gap_us = us(restart["at"]) - us(gap_from)
    window = us(doc["until"]) - us(doc["since"])
    assert doc["observed_s"] == pytest.approx((window - gap_us) / 1e6, abs=2e-6)
    n2 = doc["nodes"][nodes[2]]
    assert n2["downtime_s"] == pytest.approx(inc["duration_s"] - inc["unobserved_s"], abs=2e-6)
    assert n2["availability"] == pytest.approx(1 - n2["downtime_s"] / doc["observed_s"],
                                               abs=2e-6)
    for other in (nodes[0], nodes[1]):
        assert doc["nodes"][other]["incidents"] == []
    print(f"\n[figures] restart gap (last event before the stop -> first after the start): "
          f"{gap_us / 1e6:.2f} s; agent down (SIGTERM -> new agent) "
          f"{(t_start - t_stop) / 1e6:.2f} s; start -> first event recorded "
          f"{(us(restart['at']) - t_start) / 1e6:.2f} s; node2 incident "
          f"{inc['duration_s']:.2f} s of which unobserved {inc['unobserved_s']:.2f} s")


def test_a_node_that_failed_while_the_observer_was_down_stays_live_there_the_gap_says_so(
        serf, membership, tmp_path):
    """A documented limit (README, "What the log can and cannot see"): Serf never tells a
    restarted agent about a member that failed while it was down (memberlist ignores news
    of members it never knew). Like a fresh start, where every catalog node is live until
    Serf says otherwise (Droonga's rule), the restarted observer keeps that node live. What
    the log can say, it says: the observer's audit reports the unobserved gap in which the
    failure happened, and the other observer's log has the incident (the central store's
    merged view sees it dead)."""
    nodes = node_ids(153)
    with running_cluster(tmp_path, 153) as c:
        node0, node1, node2 = c.agents
        node1.stop()
        node2.pause()  # fails while node1 is down
        require(listed(node0, nodes[2], False), "node0 never recorded node2 failed")
        require(wait_until(lambda: node0.members().get("node2") == "failed", TIMEOUT),
                "node0's Serf does not say node2 failed")
        before = replay(membership, node1)
        node1.start(join=node0)
        require(wait_until(lambda: self_joins(replay(membership, node1)[len(before):],
                                              "node1"), TIMEOUT),
                "the restarted agent recorded no member-join naming itself")
        require(wait_until(lambda: node1.members().get("node0") == "alive", TIMEOUT),
                "node1 did not rejoin node0")
        time.sleep(2)  # anything Serf would still deliver about node2 (it delivers nothing)
        seen = node1.members()
        require(seen.get("node2") != "alive", f"node1's Serf lists node2 alive: {seen}")
        after = replay(membership, node1)[len(before):]
        require(not [x for x in after if "node2" in names(x)],
                f"Serf told node1 something about node2 after all: {after}")
        print(f"\n[serf] node1's own members after its restart while node2 is paused: {seen}")
        assert nodes[2] in node1.live(), "never told otherwise, node1 keeps node2 live"
        assert nodes[2] not in node0.live(), "node0, which saw the failure, does not"
        doc = audit(membership, node1)
        gaps = doc["observers"]["node1"]["unobserved"]
        assert len(gaps) == 1, doc["observers"]
        failed_at = next(us(i["down_at"]) for i in audit(membership, node0)["nodes"][nodes[2]]
                         ["incidents"])
        assert us(gaps[0]["from"]) < failed_at < us(gaps[0]["to"]), (
            "the failure happened inside node1's unobserved gap")


def test_recorded_incidents_are_shorter_than_the_outage_by_the_detection_delay(
        serf, membership, tmp_path):
    nodes = node_ids(156)
    with running_cluster(tmp_path, 156) as c:
        node0, _, node2 = c.agents
        t_pause = now_us()
        node2.pause()
        assert listed(node0, nodes[2], False)
        t_recorded = now_us()
        time.sleep(1)
        t_resume = now_us()
        node2.resume()
        assert listed(node0, nodes[2])
    delay = 2.5
    doc = audit(membership, node0, "--detection-delay", str(delay))
    assert "lower bound" in doc["note"]
    (inc,) = doc["nodes"][nodes[2]]["incidents"]
    assert inc["cause"] == "failed"
    down, up = us(inc["down_at"]), us(inc["up_at"])
    measured = t_resume - t_pause
    assert t_pause < down <= t_recorded and t_resume < up
    # Serf reported the failure only after its suspicion timeout: the log's incident is
    # shorter than the pause it stands for.
    assert inc["duration_s"] <= measured / 1e6
    assert inc["est_down_at"] == iso(down - int(delay * 1e6))
    assert inc["est_duration_s"] == pytest.approx(inc["duration_s"] + delay, abs=2e-6)
    table = run(membership, "audit", "--base-dir", str(node0.base_dir))
    assert "lower bound" in table
    print(f"\n[figures] pause {measured / 1e6:.2f} s recorded as {inc['duration_s']:.2f} s: "
          f"failure recorded {(down - t_pause) / 1e6:.2f} s after SIGSTOP, return recorded "
          f"{(up - t_resume) / 1e6:.2f} s after SIGCONT")
