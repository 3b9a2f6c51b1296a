"""The one cluster-wide merge: several observers' logs -> one answer for the cluster. Pure.

The rule (SPEC "Commands"): a node is dead cluster-wide while any observer sees it dead; it
is live while some observer knows it and none sees it dead. Events at the same time are
taken together: their changes are applied at once and the cluster's status compared before
and after the whole group, so there is never a zero-length live or dead moment, dead
stretches that touch are one incident, and no answer depends on how observers are named.

Everything merged derives from :class:`Cluster` and :func:`merge`:

- ``state --at`` (:func:`views`): each log's view at the moment, merged node by node;
- ``replay`` (:func:`merge` over every log's steps by receive time): the cluster-wide changes
  of each time group, given with the last event of the group;
- incidents (:func:`incidents`: ``audit``, ``metrics``, ``alerts``, the timeline): the dead
  stretches of the merged stream of every log's incidents.

Within one log, receive times are taken as they were recorded; a log whose clock stepped back
is merged by the times it recorded (an incident that "ended before it began" lasted no time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .fold import Change, NodeView

DEAD = "dead"
LIVE = "live"

#: Which report of a cluster-wide incident names its cause when several begin it at the same
#: moment: the most severe, so the answer does not depend on the observers' names.
_CAUSE_RANK = {"failed": 0, "left": 1, "operator": 2}


class Cluster:
    """Per node, the logs that know it and the logs that see it dead."""

    __slots__ = ("known", "dead")

    def __init__(self) -> None:
        self.known: dict[str, set] = {}
        self.dead: dict[str, set] = {}

    def status(self, node: str) -> str | None:
        """``dead``, ``live`` or None (no log knows the node)."""
        if self.dead.get(node):
            return DEAD
        return LIVE if self.known.get(node) else None

    def seed(self, origin: object, liveness: dict[str, str]) -> None:
        """What one log knows at the start: node -> ``live``/``dead``."""
        for node, value in liveness.items():
            self.known.setdefault(node, set()).add(origin)
            if value == DEAD:
                self.dead.setdefault(node, set()).add(origin)

    def apply(self, origin: object, changes: Iterable) -> None:
        """One log's liveness changes (``node``, ``before``, ``after``)."""
        for c in changes:
            node = c[0]
            after = c[2]
            if after is None:
                known = self.known.get(node)
                if known is not None:
                    known.discard(origin)
                    if not known:
                        del self.known[node]
            else:
                self.known.setdefault(node, set()).add(origin)
            if after == DEAD:
                self.dead.setdefault(node, set()).add(origin)
            else:
                dead = self.dead.get(node)
                if dead is not None:
                    dead.discard(origin)
                    if not dead:
                        del self.dead[node]


def groups(steps: Iterable[tuple], cluster: Cluster | None = None) -> Iterator[tuple]:
    """The cluster-wide stream of several logs' steps, one time group at a time.

    ``steps``: ``(at, origin, item, changes)`` in time order (ties in any order), where
    ``changes`` are that log's liveness changes at that step. Yields ``(items, cluster
    changes)`` per group of steps with equal ``at``: the group is applied at once, and its
    cluster-wide :data:`~membership_log.core.fold.Change` list is sorted by node.
    """
    cluster = cluster if cluster is not None else Cluster()
    group: list[tuple] = []
    at = None
    for step in steps:
        if group and step[0] != at:
            yield _apply(cluster, group)
            group = []
        at = step[0]
        group.append(step)
    if group:
        yield _apply(cluster, group)


def _apply(cluster: Cluster, group: list[tuple]) -> tuple:
    touched = sorted({c[0] for step in group for c in step[3]})
    before = [cluster.status(n) for n in touched]
    for step in group:
        cluster.apply(step[1], step[3])
    changes = tuple(Change(n, b, a) for n, b in zip(touched, before, strict=True)
                    if (a := cluster.status(n)) != b)
    return [step[2] for step in group], changes


def merge(steps: Iterable[tuple], cluster: Cluster | None = None) -> Iterator[tuple]:
    """:func:`groups` step by step: ``(item, cluster changes)`` for every step, the changes
    of a time group given with its last step and ``()`` with the others."""
    for items, changes in groups(steps, cluster):
        for item in items[:-1]:
            yield item, ()
        yield items[-1], changes


def views(per_log: dict) -> dict:
    """Node -> its cluster-wide view, from each log's view (``{origin: {node: NodeView}}``):
    dead if any log sees it dead. Which log's details (Serf status, address) are shown is
    chosen by content, never by the logs' names: the most telling of the dead ones, or of
    the live ones."""
    cluster = Cluster()
    for origin, nodes in per_log.items():
        cluster.seed(origin, {name: LIVE if v.live else DEAD for name, v in nodes.items()})
    out = {}
    for name in cluster.known:
        dead = cluster.status(name) == DEAD
        candidates = [nodes[name] for nodes in per_log.values()
                      if name in nodes and nodes[name].live != dead]
        out[name] = min(candidates, key=_telling)
    return out


def _telling(view: NodeView) -> tuple:
    # An operator's mark first, then Serf's worst word, then the address: stable content.
    return (not view.marked, view.serf is None, str(view.serf), str(view.address),
            str(view.member))


def incidents(per_log: dict) -> list:
    """Cluster-wide incidents from each log's (``{origin: [Row...]}``, rows in
    :data:`~membership_log.core.incidents.Row` order): the dead stretches of the merged
    stream. A stretch runs from the first report of the node down to the last report of it
    back (open while any log still has it open), with every observer that reported it down
    meanwhile among its ``observers``; its cause is that of the most severe report that
    began it; ``down_seq``/``up_seq`` are those of the reports that began and ended it (each
    in its own log)."""
    from .incidents import Incident

    steps = []
    for origin, rows in per_log.items():
        for row in rows:
            node, down_at, up_at = row[0], row[1], row[2]
            steps.append((down_at, origin, (True, row), ((node, LIVE, DEAD),)))
            if up_at is not None:  # a clock that stepped back: it lasted no time
                steps.append((max(up_at, down_at), origin, (False, row),
                              ((node, DEAD, LIVE),)))
    steps.sort(key=lambda s: s[0])
    cluster = Cluster()
    for step in steps:
        cluster.known.setdefault(step[3][0][0], {None})  # incidents are of known nodes
    current: dict[str, list] = {}
    out: list = []
    for (at, *_), (items, changes) in zip(_firsts(steps), groups(steps, cluster),
                                          strict=True):
        downs: dict[str, list] = {}
        ups: dict[str, list] = {}
        for is_down, row in items:
            (downs if is_down else ups).setdefault(row[0], []).append(row)
        for c in changes:
            if c.after == DEAD:
                first = min(downs[c.node], key=lambda r: (_CAUSE_RANK.get(r[3], 9), r[5]))
                current[c.node] = [c.node, at, None, first[3], set(), first[5], None]
            else:
                inc = current.pop(c.node)
                inc[2] = at
                inc[6] = max(r[6] for r in ups[c.node])
                out.append(inc)
        for node, rows in downs.items():
            ongoing = current.get(node)
            if ongoing is not None:
                ongoing[4].update(r[4] for r in rows if r[4])
    out.extend(current.values())
    result = [Incident(n, d, u, c, tuple(sorted(obs)), ds, us) for n, d, u, c, obs, ds, us
              in out]
    result.sort(key=lambda i: (i.down_at, i.node))
    return result


def _firsts(steps: list) -> Iterator[tuple]:
    """The first step of each time group of ``steps`` (sorted by time)."""
    at = None
    for i, step in enumerate(steps):
        if i == 0 or step[0] != at:
            at = step[0]
            yield step
