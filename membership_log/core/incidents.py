"""Incidents: the one reducer that turns the fold's liveness changes into incidents. Pure.

- An incident opens when a node goes from live to dead (or first appears dead) and closes
  when it is live again (or leaves the catalog). Its cause is ``failed`` (member-failed,
  member-reap), ``left`` (member-leave) or ``operator`` (a membership-down mark).
- The reducer never judges liveness itself: it reads the changes :meth:`State.apply`
  (the one fold) reports.
- Cluster-wide incidents (a central store's merged logs) come from
  :mod:`membership_log.core.merge`, the one cluster-wide merge.

Two shapes, one field order: a stored :data:`Row` names the one observer whose log it comes
from; an :data:`Incident` record (what the API returns) names every observer that saw it.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import events as ev
from . import fold
from .records import record as record_type

#: An incident as a log keeps it: times in UTC microseconds (``up_at`` None while still
#: down); ``down_seq``/``up_seq`` the events of that log that began and ended it. Stores
#: return plain tuples in this field order (a busy year has 300,000 of them).
Row = record_type("Row", "node down_at up_at cause observer down_seq up_seq")

#: An incident as the API returns it: ``observers`` a sorted tuple of every observer that
#: reported it (one, for one log).
Incident = record_type("Incident", "node down_at up_at cause observers down_seq up_seq")

CAUSES = ("failed", "left", "operator")


def cause_of(event: ev.Event, node: fold.NodeView) -> str:
    """Why a node went down, from the event that did it and the node's view after it."""
    if event.kind in (ev.MEMBER_FAILED, ev.MEMBER_REAP):
        return "failed"
    if event.kind == ev.MEMBER_LEAVE:
        return "left"
    if node.marked:
        return "operator"
    if node.serf == fold.LEFT:
        return "left"
    if node.serf in (fold.FAILED, fold.REAPED):
        return "failed"
    return "operator"


def record(row: tuple) -> Incident:
    """A stored :data:`Row` (or a plain tuple in its order) as an :data:`Incident`."""
    node, down_at, up_at, cause, observer, down_seq, up_seq = row
    return Incident(node, down_at, up_at, cause, (observer,) if observer else (), down_seq,
                    up_seq)


def as_incident(inc: tuple) -> Incident:
    """A tuple in :data:`Incident` order whose ``observers`` may be one name (as a stored
    :data:`Row` names it) as an :data:`Incident` record."""
    observers = inc[4]
    if observers.__class__ is str:
        observers = (observers,) if observers else ()
    return Incident(inc[0], inc[1], inc[2], inc[3], tuple(observers), inc[5], inc[6])


def close(rows: list, closed: list) -> list:
    """``rows`` (tuples in :data:`Row` order) with each node's open incident ended as
    ``closed`` says: ``(node, up_seq, up_at)`` for incidents that began before the rows it
    comes with (the one place an earlier open incident is closed in memory; a store does
    the same with an UPDATE)."""
    if not closed:
        return rows
    ends = {node: (up_seq, up_at) for node, up_seq, up_at in closed}
    out = []
    for r in rows:
        end = ends.get(r[0]) if r[2] is None else None
        if end is not None:
            r = (r[0], r[1], end[1], r[3], r[4], r[5], end[0])
        out.append(r)
    return out


class Reducer:
    """Opens and closes incidents from one log's steps.

    ``open`` maps node -> the :data:`Row` it opened and has not closed. :meth:`feed` returns
    the rows it opened and those it closed; a node that goes live again with no open row
    here had its incident opened before this reducer started (every dead node has an open
    incident): it comes back as a row with ``down_seq`` None, to be closed where it is
    stored. So no caller has to load the open incidents first.
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open: dict[str, Row] = {}

    def feed(self, event: ev.Event, changes: Iterable[fold.Change],
             nodes: dict) -> tuple[list[Row], list[Row]]:
        opened: list[Row] = []
        closed: list[Row] = []
        for c in changes:
            if c.after == "dead":
                row = Row(c.node, event.at, None, cause_of(event, nodes[c.node]),
                          event.observer, event.seq, None)
                self.open[c.node] = row
                opened.append(row)
            elif c.before == "dead":  # live again, or gone from the catalog
                was = self.open.pop(c.node, None)
                row = was or Row(c.node, None, None, None, None, None, None)
                closed.append(row._replace(up_at=event.at, up_seq=event.seq))
        return opened, closed
