"""Serf's delivery quirks: what reaches ``membership handle`` and what the log makes of it.
README "What the log can and cannot see" explains each point; each is pinned here on real
Serf agents on loopback (-profile=local, the Debian ``serf`` 0.8.x) or on the member/user
lines Serf delivers, fed through the real handler.

- Coalescing: member events are held until Serf has been quiet for about a second, so the
  received time lags Serf's own; a failure and a rejoin inside that window never reach the
  handler; a pause shorter than the failure detector leaves no trace at all.
- serf#555: Serf 0.8 re-sends a member's last ``member-update`` with every later batch of
  member events. Recorded raw; no liveness changes.
- serf#465/#71/#692: a restarted agent that a peer contacts (Serf's reconnect, or ``serf
  join`` run on a peer) replays the cluster's recent user events to its handler. After a
  restart that is a new session, so an old mark is applied again.
- What an observer cannot see: its own agent paused (nothing recorded, no session), and a
  peer restarted faster than the failure detector (no failure recorded by the others, at
  most a ``member-update`` when its tags changed).

Figures are printed, not asserted: run with ``-s``. Addresses 127.0.0.159-170 are used by
no other test.
"""

from __future__ import annotations

import subprocess
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
    running_cluster,
    us,
)

from membership_log.demo.localcluster import wait_until

#: Serf's agent holds member events until 1 s of quiet, at most 3 s (its coalesce
#: periods); waiting longer than that means every batch has reached the handler.
FLUSHED = 4.0


def about(lines: list[dict], member: str) -> list[dict]:
    """The member events naming ``member``."""
    return [x for x in lines if x["event"].startswith("member-") and member in names(x)]


def agent_log(agent, needle: str) -> int:
    """How many lines of the agent's own log contain ``needle``."""
    text = (agent.base_dir / "agent.log").read_text(errors="replace")
    return sum(needle in line for line in text.splitlines())


def serf_status(agent, member: str) -> str | None:
    return agent.members().get(member)


def sentinel(membership, sender, receivers, tag: str) -> None:
    """Send a user event and wait until every receiver recorded it: everything Serf
    delivered before it has been handled."""
    sender.event("sentinel", tag)

    def seen(r):
        return any(x["name"] == "sentinel" and (x["payload"] or "").strip() == tag
                   for x in replay(membership, r))

    for r in receivers:
        assert wait_until(lambda r=r: seen(r), TIMEOUT), r.name


# -- coalescing ---------------------------------------------------------------------------------


@pytest.mark.serf
def test_coalescing_delays_events_and_hides_a_fail_and_rejoin(serf, membership, tmp_path):
    nodes = node_ids(159)
    with running_cluster(tmp_path, 159) as c:
        node0, node1, node2 = c.agents

        # 1. Received time is not event time: Serf holds the batch until it is quiet.
        node2.pause()
        assert wait_until(lambda: serf_status(node0, "node2") == "failed", TIMEOUT, 0.02)
        t_serf = now_us()  # Serf (node0) has declared node2 failed by now
        assert listed(node0, nodes[2], False)
        node2.resume()
        assert listed(node0, nodes[2])
        (failed,) = [x for x in about(replay(membership, node0), "node2")
                     if x["event"] == "member-failed"]
        lag = us(failed["at"]) - t_serf
        assert lag >= 500_000, "the handler ran before Serf's quiescent period ended"

        # 2. A failure and a rejoin inside the coalesce window: Serf saw both, the handler
        # neither. (Resume as soon as node0 says failed: node2 refutes within ~0.1 s.)
        attempts = 0
        while attempts < 3:
            attempts += 1
            start = len(replay(membership, node0))
            fails_in_serf = agent_log(node0, "EventMemberFailed: node2")
            joins_in_serf = agent_log(node0, "EventMemberJoin: node2")
            node2.pause()
            assert wait_until(lambda: serf_status(node0, "node2") == "failed", TIMEOUT, 0.01)
            t_failed = time.monotonic()
            node2.resume()
            assert wait_until(lambda: serf_status(node0, "node2") == "alive", TIMEOUT, 0.01)
            back_s = time.monotonic() - t_failed
            if back_s < 0.7:
                break
            time.sleep(FLUSHED)  # too slow to fit in one window: try again
        assert back_s < 0.7, f"node2 never came back within 0.7 s of its failure ({back_s:.2f} s)"
        time.sleep(FLUSHED)
        sentinel(membership, node1, [node0], "after-fail-and-rejoin")
        assert agent_log(node0, "EventMemberFailed: node2") == fails_in_serf + 1
        assert agent_log(node0, "EventMemberJoin: node2") == joins_in_serf + 1
        lines = replay(membership, node0)[start:]
        assert about(lines, "node2") == [], "the coalesced fail+rejoin reached the handler"
        assert nodes[2] in node0.live()

        # 3. Pauses shorter than the failure detector: Serf itself never declares a failure.
        start = len(replay(membership, node0))
        fails_in_serf = agent_log(node0, "EventMemberFailed: node2")
        for _ in range(3):
            node2.pause()
            time.sleep(0.3)
            node2.resume()
            time.sleep(0.7)
        time.sleep(FLUSHED)
        sentinel(membership, node1, [node0, node1], "after-short-pauses")
        assert agent_log(node0, "EventMemberFailed: node2") == fails_in_serf
        assert about(replay(membership, node0)[start:], "node2") == []
        assert [i["down_at"] for i in audit(membership, node0)["nodes"][nodes[2]]["incidents"]
                ] == [failed["at"]]
    print(f"\n[figures] member-failed recorded {lag / 1e6:.2f} s after node0's Serf declared "
          f"it; fail+rejoin: node2 alive again {back_s:.2f} s after failed "
          f"(attempt {attempts}), nothing recorded")


# -- serf#555: re-sent member-update events ------------------------------------------------------


@pytest.mark.serf
def test_serf_resends_a_members_last_update_and_it_changes_nothing(
        serf, membership, tmp_path):
    nodes = node_ids(162)
    with running_cluster(tmp_path, 162) as c:
        node0, node1, node2 = c.agents

        def updates():
            return [x for x in about(replay(membership, node0), "node1")
                    if x["event"] == "member-update"]

        for v in ("1", "2"):
            subprocess.run([serf, "tags", f"-rpc-addr={node1.rpc}", "-set", f"v={v}"],
                           capture_output=True, check=True, timeout=10)
            assert wait_until(lambda v=v: [u for u in updates()
                                           if u["members"][0]["tags"] == {"v": v}], TIMEOUT)
        assert len(updates()) == 2
        # Any later batch of member events (node2 failing, then returning) comes with
        # node1's last update again.
        node2.pause()
        assert listed(node0, nodes[2], False)
        node2.resume()
        assert listed(node0, nodes[2])
        assert wait_until(lambda: len(updates()) >= 4, TIMEOUT), [
            (u["seq"], u["members"][0]["tags"]) for u in updates()]
        time.sleep(FLUSHED)
        resent = updates()[2:]
        raw = {r["seq"]: r for r in export(membership, node0)}
    original = updates()[1]
    for u in resent:
        assert u["members"][0]["tags"] == {"v": "2"} and u["changes"] == []
        # The same bytes again, recorded as delivered.
        assert raw[u["seq"]]["stdin_b64"] == raw[original["seq"]]["stdin_b64"]
    assert all(u["changes"] == [] for u in updates())
    lines = replay(membership, node0)
    assert [c["node"] for x in lines for c in x["changes"] if c["from"] is not None] == [
        nodes[2], nodes[2]]  # node2 out and in again; node1 never moved
    print(f"\n[figures] node1's last member-update was delivered {len(resent)} more time(s) "
          f"after the fact (node2's failure and return)")


def test_a_stale_member_update_recorded_raw_changes_no_liveness(handle):
    """The member lines of a re-sent update (serf#555) through the real handler: old tags,
    even for a member that has failed since, are kept byte for byte and fold as nothing."""
    ips = [f"192.168.100.{50 + i}" for i in range(3)]
    join = "".join(f"node{i}\t{ip}\t\tv=1\n" for i, ip in enumerate(ips)).encode()
    assert handle("member-join", join).returncode == 0
    assert handle("member-update", f"node1\t{ips[1]}\t\tv=2\n".encode()).returncode == 0
    assert handle("member-failed", f"node2\t{ips[2]}\t\tv=1\n".encode()).returncode == 0
    live = handle.live()
    stale = [f"node1\t{ips[1]}\t\tv=1\n".encode(),  # tags from before the last update
             f"node2\t{ips[2]}\t\tv=0\n".encode(),  # a failed member, with older tags
             f"node2\t{ips[2]}\tdb\tv=1,\\tx=\\n\n".encode()]  # Serf's \t and \n escapes
    for stdin in stale:
        r = handle("member-update", stdin)
        assert r.returncode == 0, r.stderr
        assert handle.live() == live
    assert sorted(live) == [f"{ip}:10031/droonga" for ip in ips[:2]]
    rows = handle.rows()
    assert [row[3] for row in rows[-3:]] == stale
    assert all(b"SERF_EVENT=member-update" in row[2] for row in rows[-3:])


# -- serf#465/#71/#692: user events replayed after a restart ------------------------------------


@pytest.mark.serf
def test_a_restarted_agent_contacted_by_a_peer_replays_old_user_events(
        serf, membership, tmp_path):
    nodes = node_ids(165)
    with running_cluster(tmp_path, 165) as c:
        node0, node1, node2 = c.agents
        node0.event("membership-down", "node2")
        assert listed(node1, nodes[2], False)
        node0.event("membership-up", "node2")
        assert listed(node1, nodes[2])
        marks = [(x["name"], x["ltime"], x["payload"]) for x in replay(membership, node1)
                 if x["event"] == "user"]
        assert [m[0] for m in marks] == ["membership-down", "membership-up"]

        # A restart that joins by itself (-join, Serf's default replay=false): no replay.
        start = len(replay(membership, node1))
        node1.stop()
        node1.start(join=node0)
        time.sleep(FLUSHED)
        sentinel(membership, node0, [node1], "after-restart-with-join")
        lines = replay(membership, node1)[start:]
        assert lines[0]["event"] == "member-join" and "node1" in names(lines[0])
        assert [x["name"] for x in lines if x["event"] == "user"] == ["sentinel"]

        # A restart that a peer reaches first (what Serf's reconnect loop on node0 does, here
        # `serf join` run on node0): node0's recent user events are replayed to node1.
        start = len(replay(membership, node1))
        node1.stop()
        node1.start()
        assert wait_until(lambda: replay(membership, node1)[start:], TIMEOUT)
        subprocess.run([serf, "join", f"-rpc-addr={node0.rpc}", node1.bind],
                       capture_output=True, check=True, timeout=30)

        def replayed():
            return [x for x in replay(membership, node1)[start:] if x["event"] == "user"
                    and x["name"].startswith("membership-")]

        assert wait_until(lambda: len(replayed()) >= 2, TIMEOUT)
        assert wait_until(lambda: node1.members().get("node2") == "alive", TIMEOUT)
        time.sleep(FLUSHED)
        lines = replay(membership, node1)[start:]
        doc = audit(membership, node1)
    assert lines[0]["event"] == "member-join" and names(lines[0]) == ["node1"]
    again = replayed()
    # The same marks, same Lamport times, delivered again: recorded as delivered.
    assert sorted((x["name"], x["ltime"], x["payload"]) for x in again) == sorted(marks)
    # A new session of node1's agent began first, so they are not duplicates: each is
    # applied again, ordered by Lamport time within the session.
    assert not any(x["duplicate"] for x in again)
    down = next(x for x in again if x["name"] == "membership-down")
    up = next(x for x in again if x["name"] == "membership-up")
    operator = [i for i in doc["nodes"][nodes[2]]["incidents"] if i["cause"] == "operator"]
    if down["seq"] < up["seq"]:
        # The old mark took effect again until the old clearing arrived: a false incident.
        assert [c["to"] for c in down["changes"]] == ["dead"]
        assert [c["to"] for c in up["changes"]] == ["live"]
        assert len(operator) == 2 and operator[1]["down_at"] == down["at"]
        order = (f"down first: node2 marked down again for "
                 f"{operator[1]['duration_s']:.3f} s")
    else:
        # The clearing came first: the older mark loses on Lamport time.
        assert down["changes"] == [] and up["changes"] == []
        assert len(operator) == 1
        order = "up first: no effect"
    assert nodes[2] in node1.live()
    assert len(doc["observers"]["node1"]["sessions"]) == 3
    print(f"\n[figures] replayed after the restart: {[(x['name'], x['ltime']) for x in again]}"
          f"; {order}")


def test_an_old_mark_replayed_after_a_restart_is_applied_again(handle):
    """The limit, pinned on the lines Serf delivers: within one session a redelivered mark
    is a duplicate; after the agent's restart the same old ``membership-down`` is applied
    again (its clearing came as a query, which Serf does not replay), until the operator
    sends ``membership-up`` again."""
    ips = [f"192.168.100.{50 + i}" for i in range(3)]
    nodes = [f"{ip}:10031/droonga" for ip in ips]
    join = "".join(f"node{i}\t{ip}\t\t\n" for i, ip in enumerate(ips)).encode()

    def user(name, ltime, payload=b"node2\n", kind="user"):
        key = "SERF_USER" if kind == "user" else "SERF_QUERY"
        extra = {f"{key}_LTIME": str(ltime),
                 ("SERF_USER_EVENT" if kind == "user" else "SERF_QUERY_NAME"): name}
        r = handle(kind, payload, extra)
        assert r.returncode == 0, r.stderr
        return sorted(handle.live())

    assert handle("member-join", join).returncode == 0  # session 1 of node0's agent
    assert user("membership-down", 5) == nodes[:2]
    assert user("membership-up", 6, kind="query") == nodes
    assert user("membership-down", 5) == nodes  # redelivered in the same session: duplicate
    assert handle("member-join", f"node0\t{ips[0]}\t\t\n".encode()).returncode == 0  # restart
    assert user("membership-down", 5) == nodes[:2]  # replayed: applied again (the limit)
    assert user("membership-up", 7) == nodes  # the workaround: membership-up again
    rows = handle.rows()
    assert [row[3] for row in rows if b"SERF_USER_LTIME=5" in row[2]] == [b"node2\n"] * 3


# -- what an observer cannot see ---------------------------------------------------------------


@pytest.mark.serf
def test_a_paused_observer_and_a_fast_peer_restart_leave_no_trace(serf, membership, tmp_path):
    nodes = node_ids(168)
    with running_cluster(tmp_path, 168) as c:
        node0, node1, node2 = c.agents

        # node0's own agent frozen: the others record its failure, node0 records nothing
        # (it saw the others alive before and after) and starts no session.
        start = len(replay(membership, node0))
        t_pause = now_us()
        node0.pause()
        assert listed(node1, nodes[0], False)
        t_resume = now_us()
        node0.resume()
        assert listed(node1, nodes[0])
        time.sleep(FLUSHED)
        sentinel(membership, node1, [node0], "after-observer-pause")
        lines = replay(membership, node0)[start:]
        assert [x["event"] for x in lines] == ["user"], lines
        doc = audit(membership, node0)
        assert doc["observers"]["node0"]["unobserved"] == []
        assert len(doc["observers"]["node0"]["sessions"]) == 1
        assert [i["cause"] for i in audit(membership, node1)["nodes"][nodes[0]]["incidents"]
                ] == ["failed"]

        # node1 killed and restarted faster than the failure detector: its peers' Serf
        # never declares it failed, so their logs show no failure, only a member-update
        # because the new agent lacks the tag the old one had; only node1's own log knows
        # (a new session, and the gap before it).
        subprocess.run([serf, "tags", f"-rpc-addr={node1.rpc}", "-set", "v=1"],
                       capture_output=True, check=True, timeout=10)
        assert wait_until(lambda: [x for x in about(replay(membership, node0), "node1")
                                   if x["members"][0]["tags"] == {"v": "1"}], TIMEOUT)
        time.sleep(FLUSHED)
        start0 = len(replay(membership, node0))
        start1 = len(replay(membership, node1))
        fails_in_serf = agent_log(node0, "EventMemberFailed: node1")
        t_kill = time.monotonic()
        node1.kill9()
        node1.start(join=node2)
        down_s = time.monotonic() - t_kill
        assert wait_until(lambda: [x for x in replay(membership, node1)[start1:]
                                   if x["event"] == "member-join"], TIMEOUT)
        time.sleep(FLUSHED)
        sentinel(membership, node2, [node0, node1], "after-fast-restart")
        assert agent_log(node0, "EventMemberFailed: node1") == fails_in_serf, (
            f"the restart ({down_s:.2f} s) was slower than Serf's failure detection")
        seen = about(replay(membership, node0)[start0:], "node1")
        assert {x["event"] for x in seen} == {"member-update"}, seen
        assert [m["tags"] for x in seen for m in x["members"]] == [{}] * len(seen)
        assert all(x["changes"] == [] for x in seen)
        assert audit(membership, node0)["nodes"][nodes[1]]["incidents"] == []
        own = audit(membership, node1)["observers"]["node1"]
        assert len(own["sessions"]) == 2 and len(own["unobserved"]) == 1
    print(f"\n[figures] node0 paused {(t_resume - t_pause) / 1e6:.2f} s: nothing in its own "
          f"log; node1 killed and back in {down_s:.2f} s: node0 recorded no failure, "
          f"{len(seen)} member-update(s)")

