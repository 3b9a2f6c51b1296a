"""Incidents: the one reducer that turns the fold's liveness changes into incidents, and the
merge of several observers' incidents into cluster-wide ones. Pure.

- An incident opens when a node goes from live to dead (or first appears dead) and closes
  when it is live again (or leaves the catalog). Its cause is ``failed`` (member-failed,
  member-reap), ``left`` (member-leave) or ``operator`` (a membership-down mark).
- The reducer never judges liveness itself: it reads the changes :meth:`State.apply`
  (the one fold) reports.
- Cluster-wide (a central store's merged logs), a node is down while any observer sees it
  down: the observers' incidents of a node are merged where they overlap, and the merged
  incident's ``observers`` are all of theirs.
"""

from __future__ import annotations

from collections import namedtuple

from . import events as ev
from . import fold as project

#: ``down_at``/``up_at`` in UTC microseconds (``up_at`` None while still down); ``observers``
#: a sorted tuple; ``down_seq``/``up_seq`` the events that began and ended it (in its own log).
Incident = namedtuple("Incident", "node down_at up_at cause observers down_seq up_seq")

CAUSES = ("failed", "left", "operator")


def cause_of(event, node: project.NodeView) -> str:
    """Why a node went down, from the event that did it and the node's view after it."""
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


#: An incident as stored: ``(node, down_seq, down_at, cause, observer, up_seq, up_at)``.
def row_to_incident(row) -> Incident:
    node, down_seq, down_at, cause, observer, up_seq, up_at = row
    return Incident(node, down_at, up_at, cause, (observer,) if observer else (), down_seq,
                    up_seq)


class Reducer:
    """Opens and closes incidents from one log's steps.

    ``open`` maps node -> the row (a list, in storage order ``[node, down_seq, down_at,
    cause, observer, up_seq, up_at]``) of the incidents it opened and has not closed.
    :meth:`feed` returns the rows it opened and the rows it closed; a node that goes live
    again with no open row here had its incident opened before this reducer started (every
    dead node has an open incident): that row comes back with ``down_seq`` None, to be
    closed where it is stored. So no caller has to load the open incidents first.
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open: dict[str, list] = {}

    def feed(self, event, changes, nodes: dict) -> tuple[list, list]:
        opened: list = []
        closed: list = []
        for c in changes:
            if c.after == "dead":
                row = [c.node, event.seq, event.at, cause_of(event, nodes[c.node]),
                       event.observer, None, None]
                self.open[c.node] = row
                opened.append(row)
            elif c.before == "dead":  # live again, or gone from the catalog
                row = self.open.pop(c.node, None) or [c.node, None, None, None, None, None,
                                                      None]
                row[5], row[6] = event.seq, event.at
                closed.append(row)
        return opened, closed


def collect(steps) -> list[Incident]:
    """Every incident in a sequence of ``(event, changes, nodes)`` (tests, small logs)."""
    reducer = Reducer()
    rows: list = []
    for event, changes, nodes in steps:
        opened, _ = reducer.feed(event, changes, nodes)
        rows.extend(opened)
    out = [row_to_incident(r) for r in rows]
    out.sort(key=lambda i: (i.down_at, i.node))
    return out


def merge(per_observer: list[list[Incident]]) -> list[Incident]:
    """Cluster-wide incidents from each observer's: a node is down while any observer sees
    it down, so overlapping incidents of one node become one, from the first report of it
    down to the last of it back, with every observer that saw it. An open incident (``up_at``
    None) runs to the end. ``down_seq``/``up_seq`` are those of the first / last report."""
    by_node: dict[str, list[Incident]] = {}
    for incidents in per_observer:
        for inc in incidents:
            by_node.setdefault(inc.node, []).append(inc)
    out: list[Incident] = []
    inf = float("inf")
    for incs in by_node.values():
        incs.sort(key=lambda i: (i.down_at, i.up_at if i.up_at is not None else inf))
        current = None
        for inc in incs:
            if current is None:
                current = inc
                continue
            end = current.up_at if current.up_at is not None else inf
            if inc.down_at <= end:
                inc_end = inc.up_at if inc.up_at is not None else inf
                if inc_end > end:
                    current = current._replace(up_at=inc.up_at, up_seq=inc.up_seq)
                current = current._replace(
                    observers=tuple(sorted(set(current.observers) | set(inc.observers))))
            else:
                out.append(current)
                current = inc
        if current is not None:
            out.append(current)
    out.sort(key=lambda i: (i.down_at, i.node))
    return out
