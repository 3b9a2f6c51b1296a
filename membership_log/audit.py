"""Incidents: when each node went down, why, when it came back; figures over a window.

Pure: it reads the liveness changes that :func:`membership_log.project.steps` (the one
fold) reports, and never judges liveness itself.

- An incident opens when a node goes from live to dead (or first appears dead) and closes
  when it is live again. Its cause is ``failed`` (member-failed, member-reap), ``left``
  (member-leave) or ``operator`` (a membership-down mark).
- Over a window [since, until]: an incident is reported if it overlaps the window; one
  still down at ``until`` is reported open (``up_at`` null), with its duration so far.
- ``downtime_s``: the time the node was down within the window; ``availability``: 1 minus
  downtime over the window's length; ``mttr_s``: the mean duration of the incidents that
  closed within the window (null if none); ``flaps``: how many times the node went down
  within the window.
- ``observers``: every observer whose own view had the node down during the incident (with
  a central store's merged logs, several).
"""

from __future__ import annotations

from collections import namedtuple

from . import events as ev
from . import project

#: ``down_at``/``up_at`` in UTC microseconds (``up_at`` None while still down).
Incident = namedtuple("Incident", "node down_at up_at cause observers down_seq up_seq")

CAUSES = ("failed", "left", "operator")


def cause_of(event, node: project.NodeView) -> str:
    """Why a node went down, from the event that did it and the node's state after it."""
    if event.kind in (ev.MEMBER_FAILED, ev.MEMBER_REAP):
        return "failed"
    if event.kind == ev.MEMBER_LEAVE:
        return "left"
    if node.marked:
        return "operator"
    if node.serf == project.LEFT:
        return "left"
    if node.serf in (project.FAILED, project.REAPED):
        return "failed"
    return "operator"


def collect(steps, until_us: int | None = None):
    """Every incident in the folded log (up to ``until_us``), the nodes ever known, and the
    receive times of the first and last events read.

    Returns ``(incidents, nodes, first_at, last_at)``; ``incidents`` lists closed and open
    incidents in the order they opened.
    """
    open_: dict[str, list] = {}
    done: list[Incident] = []
    nodes: set[str] = set()
    first_at = last_at = None
    for s in steps:
        e = s.event
        if until_us is not None and e.at > until_us:
            break
        first_at = e.at if first_at is None else first_at
        last_at = e.at
        nodes.update(n for n, v in s.view.items() if v.in_catalog)
        if open_ and e.observer:
            # Merged logs: an observer reporting a node down while it is already down
            # cluster-wide changes nothing, but it did see the incident.
            need = [n for n, inc in open_.items() if e.observer not in inc[4]]
            if need:
                own = project.view(s.state)
                for n in need:
                    if n in own and not own[n].live:
                        open_[n][4].add(e.observer)
        for c in s.changes:
            if c.after == "dead":
                open_[c.node] = [c.node, e.at, None, cause_of(e, s.view[c.node]), {e.observer},
                                 e.seq, None]
            elif c.node in open_:  # live again, or gone from the catalog
                inc = open_.pop(c.node)
                inc[2], inc[6] = e.at, e.seq
                inc[4].add(e.observer)
                done.append(_freeze(inc))
    incidents = done + [_freeze(i) for i in open_.values()]
    incidents.sort(key=lambda i: (i.down_at, i.node))
    return incidents, nodes, first_at, last_at


def _freeze(inc: list) -> Incident:
    node, down, up, cause, observers, dseq, useq = inc
    return Incident(node, down, up, cause, tuple(sorted(o for o in observers if o)), dseq, useq)


def report(incidents, nodes, since_us: int, until_us: int, iso) -> dict:
    """The audit (SPEC "Replay and audit JSON") over [since_us, until_us]; ``iso`` formats
    microseconds. Nodes sorted worst first: most downtime, then most flaps, then name."""
    window = max(until_us - since_us, 0)
    per: dict[str, dict] = {n: {"incidents": [], "downtime_us": 0, "repairs": [], "flaps": 0}
                            for n in nodes}
    for inc in incidents:
        up = inc.up_at if inc.up_at is not None and inc.up_at <= until_us else None
        if inc.down_at > until_us or (up is not None and up < since_us):
            continue
        n = per.setdefault(inc.node, {"incidents": [], "downtime_us": 0, "repairs": [],
                                      "flaps": 0})
        end = up if up is not None else until_us
        duration = end - inc.down_at
        n["downtime_us"] += max(0, min(end, until_us) - max(inc.down_at, since_us))
        if inc.down_at >= since_us:
            n["flaps"] += 1
        if up is not None:
            n["repairs"].append(duration)
        n["incidents"].append({
            "down_at": iso(inc.down_at),
            "up_at": iso(up) if up is not None else None,
            "duration_s": round(duration / 1e6, 3),
            "cause": inc.cause,
            "observers": list(inc.observers),
            "down_seq": inc.down_seq,
            "up_seq": inc.up_seq if up is not None else None,
        })
    out = {}
    for name, n in per.items():
        repairs = n["repairs"]
        out[name] = {
            "incidents": n["incidents"],
            "downtime_s": round(n["downtime_us"] / 1e6, 3),
            "availability": round(1 - n["downtime_us"] / window, 6) if window else None,
            "mttr_s": round(sum(repairs) / len(repairs) / 1e6, 3) if repairs else None,
            "flaps": n["flaps"],
        }
    order = sorted(out, key=lambda k: (-out[k]["downtime_s"], -out[k]["flaps"], k))
    return {"since": iso(since_us), "until": iso(until_us), "nodes": {k: out[k] for k in order}}
