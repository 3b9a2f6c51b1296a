"""The library API: every question the log answers, as records with integer times.

Works the same on a node's store and on the central store (one node's log with
``observer=``, or all of them merged): the store says which logs a question covers
(:meth:`~membership_log.stores.protocol.Store.scope`), and the one cluster-wide merge
(:mod:`membership_log.core.merge`) joins them. Each function opens nothing itself: pass a
store from :func:`open_store`. The CLI renders these records
(:mod:`membership_log.render`); benchmarks and other programs call them directly::

    from membership_log import history, settings, timespec

    s = settings.resolve("/var/lib/droonga")
    with history.open_store(s.db_url) as store:
        now = history.state_at(store)
        print(sorted(history.live_set(now)))
        audit = history.audit(store, since=timespec.parse("1d ago", history.now_us()))

Reads go through the one fold driver (:mod:`membership_log.history.driver`): the nearest
checkpoint, then forward; audits read the derived incident tables.

Names and points an operator types are checked: an unknown ``node`` or ``observer``, an
``@N`` past the head, a time before the log's first event (or its retention anchor) is a
one-line :class:`MembershipError` naming what exists (SPEC "Safety").
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Iterable, Iterator, Sequence
from operator import itemgetter

from ..core import events, merge
from ..core import fold as project
from ..core.clock import now_us
from ..core.droonga import Command, node_roles, normalize_role
from ..core.errors import MembershipError
from ..core.events import Event
from ..core.figures import (
    Audit,
    Sessions,
    intersect,
    report,
    role_stretches,
    totals,
    unobserved,
)
from ..core.fold import Change
from ..core.incidents import CAUSES, Incident, close, record
from ..core.names import unknown
from ..core.records import record as record_type
from ..core.timespec import MAX_US, MIN_US, Point, check_window, iso
from ..stores.protocol import ROLE_NODE, Scope, Store
from ..version import __version__
from . import driver

__all__ = ["open_store", "now_us", "StateAt", "Replayed", "state_at", "live_set", "replay",
           "audit", "incidents_of", "export", "metrics", "heads", "observers_of"]


def open_store(url: str) -> Store:
    """The store at ``url`` (a SQLite path or URL, or a database URL), opened for its role."""
    from ..stores.setup import open_store as _open

    return _open(url)


#: The state at a moment: ``seq`` of the last event folded (None when merged over several
#: logs), ``at`` its receive time (None before any event), ``nodes``: name -> NodeView,
#: ``members``: member name -> MemberState (each member's tags, roles included; merged: as
#: the log that heard of anything last has it), ``catalog``: the catalog in force (None
#: when merged: each log has its own).
StateAt = record_type("StateAt", "seq at nodes members catalog", defaults=(None, None))

#: One replayed event: ``origin`` (None on a node store), the raw event, the parsed one, the
#: liveness ``changes`` it caused (cluster-wide when merged), whether it was a redelivery,
#: the ``roles`` it changed (:data:`RoleChange`, in its log) and, for one of Droonga 1.1's
#: own user events or queries, ``command``: what its handler on the observer reads in it
#: (:data:`membership_log.core.droonga.Command`; None for any other event).
Replayed = record_type("Replayed", "origin raw event changes redelivery roles command",
                      defaults=((), None))

#: A role change: a member whose ``role`` tag (Droonga 1.1's role) an event changed, known
#: before with ``before`` (None: no role tag), now ``after``.
RoleChange = record_type("RoleChange", "member before after")


# -- what a question covers ------------------------------------------------------------------


def _head_state(store: Store, origin: str) -> project.State:
    return driver.start(store, origin, store.head_seq(origin))


def observers_of(store: Store, origin: str) -> list[str]:
    """The observers (``SERF_SELF_NAME``) whose events one log holds."""
    return sorted({obs for obs, _ in _head_state(store, origin).counts if obs})


def _scope(store: Store, observer: str | None) -> Scope:
    """The store's scope for ``observer``, the name checked: a central store knows its
    logs; a node store's log knows its observers."""
    scope = store.scope(observer)
    if observer is not None and scope.observer is not None:
        known = observers_of(store, scope.origins[0])
        if observer not in known:
            raise MembershipError(unknown("observer", observer, known,
                                          f"the log of {store.label} holds no event of "
                                          f"observer"))
    return scope


def scope_of(store: Store, observer: str | None) -> Scope:
    """The logs a question about ``observer`` covers (the store's scope, the name checked:
    an unknown observer is a one-line error naming the known ones)."""
    return _scope(store, observer)


def _needs_one_log(scope: Scope, *points: Point | None) -> None:
    if scope.merged and any(p is not None and p.seq is not None for p in points):
        raise MembershipError("@N names an event of one node's log: with a central store, add "
                              "--observer NODE")


def _first_time(store: Store, origin: str) -> int | None:
    """When a log's history begins: its first kept event's receive time (the retention
    anchor's, after a compaction); None for an empty log."""
    anchor = store.anchor(origin)
    if anchor is not None:
        return anchor.received_us
    return store.received_at(origin, store.first_seq(origin))


def _check_time(store: Store, origins: Iterable[str], point: Point | None, what: str) -> None:
    """A time before every one of the logs' first events is an error naming when the
    history begins (SPEC "Safety"); a log with no event at all has no history to ask
    about either."""
    if point is None or point.us is None:
        return
    firsts = [t for t in (_first_time(store, o) for o in origins) if t is not None]
    if not firsts:
        raise MembershipError(f"{what} {point.text!r}: the log holds no event yet")
    first = min(firsts)
    if point.us < first:
        kind = "retention anchor (compacted before)" if any(
            store.anchor(o) is not None for o in origins) else "first event"
        raise MembershipError(f"{what} {point.text!r} ({iso(point.us)}) is before the log's "
                              f"{kind}: the earliest time it holds is {iso(first)}")


def _seq(store: Store, origin: str, point: Point | None, what: str = "--at") -> int:
    """The seq ``point`` names in one log, checked."""
    try:
        return driver.point_seq(store, origin, point)
    except driver.OutOfRange as e:
        raise MembershipError(f"{what} {point.text!r}: {e}" if point is not None else str(e)) \
            from None


def _known_nodes(store: Store, origins: Iterable[str]) -> set[str]:
    """Every name ``--node`` may take: nodes, member names and addresses the logs know now,
    and the nodes of their incidents (a node gone from the catalog since)."""
    names: set[str] = set()
    for o in origins:
        state = _head_state(store, o)
        names.update(state.nodes)
        names.update(state.members)
        names.update(m.address for m in state.members.values() if m.address)
        names.update(r[0] for r in store.incidents(o))
    return names


def _check_node(store: Store, origins: Iterable[str], node: str | None) -> None:
    if node is not None and node not in _known_nodes(store, origins):
        raise MembershipError(unknown("node", node, _known_nodes(store, origins)))


def _node_ids(store: Store, origins: Iterable[str], node: str) -> set[str]:
    """The node ids a ``--node`` name means: itself, or the catalog nodes a member name or
    address matches (as operator marks resolve names)."""
    out = {node}
    for o in origins:
        out.update(_head_state(store, o).resolve(node))
    return out


# -- the state at a moment ---------------------------------------------------------------------


def state_at(store: Store, at: Point | None = None, observer: str | None = None) -> StateAt:
    """Every known node and its liveness right after the last event at or before ``at``
    (default: now). Merged over a central store's logs unless ``observer`` picks one."""
    scope = _scope(store, observer)
    _needs_one_log(scope, at)
    _check_time(store, scope.origins, at, "--at")
    if not scope.merged:
        origin = scope.origins[0]
        if scope.observer is not None and len(observers_of(store, origin)) > 1:
            raise MembershipError(f"this log holds the events of several observers "
                                  f"({', '.join(observers_of(store, origin))}): its state is "
                                  f"theirs together; replay and audit take --observer")
        state = driver.start(store, origin, _seq(store, origin, at))
        when = store.received_at(origin, state.seq) if state.seq else None
        return StateAt(state.seq, when, dict(state.nodes), dict(state.members), state.catalog)
    states = {o: driver.start(store, o, _seq(store, o, at)) for o in scope.origins}
    times = [t for o, s in states.items() if s.seq
             for t in (store.received_at(o, s.seq),) if t is not None]
    return StateAt(None, max(times) if times else None,
                   merge.views({o: s.nodes for o, s in states.items()}),
                   _merged_members(states.values()))


def _merged_members(states: Iterable[project.State]) -> dict:
    """Each member as the log that heard of anything last has it (by receive time, then by
    content: never by the logs' names): its tags and role for a merged view."""
    out: dict = {}
    rank: dict = {}
    for state in states:
        for name, m in state.members.items():
            key = (state.max_at, repr(m))
            if name not in rank or key > rank[name]:
                rank[name] = key
                out[name] = m
    return out


def live_set(state: StateAt) -> dict[str, str]:
    """The live catalog nodes of a :data:`StateAt`, with their Serf addresses."""
    return project.live_of(state.nodes)


# -- replay ------------------------------------------------------------------------------------


def _window(store: Store, origin: str, since: Point | None, until: Point | None) -> tuple[int, int]:
    """The seqs ``first..last`` of one log a window covers: from the first event not yet in
    effect at ``since`` to the last in effect at ``until`` (the state's own rule)."""
    first_kept = store.first_seq(origin)
    if since is None:
        first = first_kept
    elif since.seq is not None:
        if since.seq < first_kept:
            raise MembershipError(f"--since {since.text!r}: event {since.seq} was compacted "
                                  f"away: the earliest event kept is {first_kept}")
        first = since.seq
    else:
        first = max(first_kept, _seq(store, origin, Point("", since.us - 1, None),
                                     "--since") + 1)
    last = _seq(store, origin, until, "--until")
    return first, last


def _touches(state: project.State, event: Event, changes: Iterable[Change], ids: set[str],
             name: str | None) -> bool:
    """Whether an event concerns the node (``ids``: what ``--node`` means): it changed it,
    or names it (as a catalog node, member name or address, or in an operator payload)."""
    if any(c.node in ids for c in changes):
        return True
    if any(name in (m.name, m.address) or m.name in ids for m in event.members):
        return True
    for n in ids:
        v = state.nodes.get(n)
        if v is not None and v.member is not None and any(m.name == v.member
                                                          for m in event.members):
            return True
    return event.kind in (events.USER, events.QUERY) and bool(
        ids.intersection((event.payload or "").split()) or name in (event.payload or "").split())


class _Roles:
    """Each member's role tag as a replayed log knows it, so that an event's role changes
    can be told (the fold keeps the tags; replay compares them around each event)."""

    def __init__(self, state: project.State) -> None:
        from ..core.droonga import role_tag

        self.role_tag = role_tag
        self.known = {n: role_tag(m.tags) for n, m in state.members.items()}

    def changes(self, state: project.State, event: Event) -> tuple:
        """The role changes ``event``, just folded into ``state``, made."""
        if not event.members:
            return ()
        out = []
        known = self.known
        for m in event.members:
            now = state.members.get(m.name)
            if now is None:
                continue  # not folded (the state's bound on members)
            after = self.role_tag(now.tags)
            if m.name in known and known[m.name] != after:
                out.append(RoleChange(m.name, known[m.name], after))
            known[m.name] = after
        return tuple(out)


def _command(state: project.State, event: Event) -> Command | None:
    """A Droonga 1.1 user event or query as its handler on the observer reads it (the
    cluster id: that of the catalog in force), or None."""
    if event.kind not in (events.USER, events.QUERY):
        return None
    from ..core.droonga import COMMANDS, parse_command

    if event.name not in COMMANDS:
        return None
    cid = state.catalog.cluster_id if state.catalog is not None else None
    return parse_command(event.name, event.payload, event.observer, cid)


def _one_log(store: Store, origin: str, first: int, last: int, node: str | None,
             observer: str | None, label: str | None) -> Iterator[Replayed]:
    ids = _node_ids(store, [origin], node) if node is not None else None
    state = driver.start(store, origin, first - 1)
    roles = _Roles(state)
    for raw, event, effect in driver.forward(state, store.events(origin, first - 1, last)):
        changed = roles.changes(state, event)
        if observer is not None and raw.observer not in (observer, ""):
            continue
        command = _command(state, event)
        if ids is not None and not _touches(state, event, effect.changes, ids, node) and not (
                command is not None and (command.target in ids or command.node == node)):
            continue
        yield Replayed(label, raw, event, effect.changes, effect.redelivery, changed, command)


def replay(store: Store, since: Point | None = None, until: Point | None = None,
           node: str | None = None, observer: str | None = None
           ) -> Generator[Replayed, None, None]:
    """The log in order from ``since`` to ``until``, each event with the liveness changes it
    caused. Folding starts at the nearest checkpoint before ``since``, so every change is
    judged in its full context, however long the log. Merged over a central store's logs
    (by receive time; events at the same time taken together) unless ``observer`` picks
    one."""
    scope = _scope(store, observer)
    _needs_one_log(scope, since, until)
    check_window(since, until)
    _check_time(store, scope.origins, since, "--since")
    _check_time(store, scope.origins, until, "--until")
    _check_node(store, scope.origins, node)
    windows = {o: _window(store, o, since, until) for o in scope.origins}
    if not scope.merged:
        origin = scope.origins[0]
        label = observer if observer is not None and scope.observer is None else None
        yield from _one_log(store, origin, *windows[origin], node, scope.observer, label)
        return
    yield from _merged(store, windows, node)


def _merged(store: Store, windows: dict, node: str | None) -> Iterator[Replayed]:
    """Every log's events by receive time, with the cluster-wide changes of the one merge."""
    ids = _node_ids(store, list(windows), node) if node is not None else None
    cluster = merge.Cluster()
    states = {}
    streams = []
    for o, (first, last) in windows.items():
        state = states[o] = driver.start(store, o, first - 1)
        cluster.seed(o, {n: "live" if v.live else "dead" for n, v in state.nodes.items()})

        def stream(o: str = o, state: project.State = state, first: int = first,
                   last: int = last) -> Iterator[tuple]:
            roles = _Roles(state)
            for raw, event, effect in driver.forward(state, store.events(o, first - 1, last)):
                yield (raw.received_us, o, (o, raw, event, effect.redelivery,
                                            roles.changes(state, event),
                                            _command(state, event)), effect.changes)
        streams.append(stream())
    steps = heapq.merge(*streams, key=lambda s: (s[0], s[1]))
    for (o, raw, event, redelivery, roles, command), changes in merge.merge(steps, cluster):
        if ids is not None and not _touches(states[o], event, changes, ids, node) and not (
                command is not None and (command.target in ids or command.node == node)):
            continue
        yield Replayed(o, raw, event, changes, redelivery, roles, command)


# -- incidents and the audit -------------------------------------------------------------------


def _log_incidents(store: Store, origin: str, since_us: int, until_us: int,
                   whole: bool = False, nodes: tuple = (None, None),
                   by_node: bool = False) -> list:
    """A log's incident rows touching the window: the derived table, plus those of events
    recorded but not yet folded (a handler killed between the two), folded here in memory.
    ``whole``: the window starts at the log's first event; ``by_node``: each node's in the
    order they began is enough (an audit's), else all of them in that order."""
    rows = store.incidents(origin, None if whole else since_us, until_us, nodes, by_node)
    snap = store.snapshot(origin)
    head = store.head_seq(origin)
    if snap is None or snap[0] < head:
        state = driver.start(store, origin, snap[0] if snap is not None else 0)
        keeper = driver.Keeper()
        for raw, event, effect in driver.forward(state, store.events(origin, state.seq, head)):
            keeper.see(state, raw, event, effect)
        batch = keeper.take()
        rows = close(rows, batch.closed)
        rows += [r for r in batch.incidents
                 if r[1] <= until_us and (r[2] is None or r[2] >= since_us)
                 and _in_range(r[0], nodes)]
        rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def _in_range(name: str, nodes: tuple) -> bool:
    lo, hi = nodes
    return (lo is None or name >= lo) and (hi is None or name < hi)


def _incidents(store: Store, scope: Scope, since_us: int, until_us: int, whole: bool,
               part: tuple = (None, None), by_node: bool = False) -> list:
    """The incidents of a scope: one log's rows (only its observer's, if one is given), or
    the cluster-wide merge of every log's."""
    if not scope.merged:
        rows = _log_incidents(store, scope.origins[0], since_us, until_us, whole, part,
                              by_node)
        if scope.observer is not None:
            rows = [r for r in rows if r[4] == scope.observer]
        return rows
    return merge.incidents({o: _log_incidents(store, o, since_us, until_us, whole, part)
                            for o in scope.origins})


def incidents_of(store: Store, observer: str | None = None, since_us: int | None = None,
                 until_us: int | None = None) -> list[Incident]:
    """Every incident of a view as :data:`~membership_log.core.incidents.Incident` records,
    in the order they began: a node store's (only those ``observer`` saw, if given), one log
    of a central store (``observer``), or the cluster-wide merge of all its logs. Events
    recorded but not yet folded are included."""
    scope = _scope(store, observer)
    lo = MIN_US if since_us is None else since_us
    hi = MAX_US if until_us is None else until_us
    found = _incidents(store, scope, lo, hi, since_us is None)
    return found if scope.merged else [record(r) for r in found]


def _time(store: Store, origins: Sequence[str], point: Point | None, default: int) -> int:
    if point is None:
        return default
    if point.seq is None:
        return point.us
    at = store.received_at(origins[0], _seq(store, origins[0], point))
    if at is None:
        raise MembershipError(f"there is no event {point.seq} in this log")
    return at


def audit(store: Store, since: Point | None = None, until: Point | None = None,
          node: str | None = None, observer: str | None = None,
          flap_window_s: float = 600, flap_threshold: int = 3,
          detection_delay_s: float | None = None, now: int | None = None,
          part: tuple = (None, None), exclude: tuple = (), clip: bool = False) -> Audit:
    """Incidents per node and figures over a window (SPEC "Replay and audit JSON"), read
    from the derived incident tables, as an :data:`~membership_log.core.figures.Audit`. The
    window runs from the first event kept (or ``since``) to now (or ``until``).
    ``exclude``: causes left out of incidents, downtime and availability. ``part=(lo,
    hi)``: only the nodes named in [lo, hi) (None: open), so that
    :mod:`membership_log.history.bulk` can compute shares on every core. ``clip``: a
    ``since`` before the log's history starts the window where the history does (the
    dashboard's "last hour" of a younger log) instead of being an error."""
    scope = _scope(store, observer)
    _needs_one_log(scope, since, until)
    check_window(since, until)
    if clip and since is not None and since.us is not None:
        firsts = [f for f in (_first_time(store, o) for o in scope.origins) if f is not None]
        if firsts and since.us < min(firsts):
            since = None
    _check_time(store, scope.origins, since, "--since")
    _check_time(store, scope.origins, until, "--until")
    _check_node(store, scope.origins, node)
    origins = list(scope.origins)
    until_us = _time(store, origins, until, now if now is not None else now_us())
    firsts = [f for f in (_first_time(store, o) for o in origins) if f is not None]
    # A log begun while the clock was ahead starts "after now": the window starts no later
    # than it ends.
    since_us = _time(store, origins, since, min(min(firsts), until_us) if firsts else until_us)
    if since_us > until_us:
        from ..core.timespec import WindowError

        raise WindowError(f"--since {iso(since_us)} is after --until {iso(until_us)}")
    found = _incidents(store, scope, since_us, until_us, since is None, part, by_node=True)
    if exclude:
        found = [i for i in found if i[3] not in exclude]
    gap_lists = []
    observed_by: dict[str, list] = {}
    names: set[str] = set()
    ends: dict[str, project.State] = {}
    for o in origins:
        sessions = [(obs, started, gap) for _, obs, started, gap in store.sessions(o)]
        if scope.observer is not None:
            sessions = [s for s in sessions if s[0] == scope.observer]
        gap_lists.append(unobserved(sessions, since_us, until_us))
        for obs, started, gap in sessions:
            s = observed_by.setdefault(obs, [[], []])
            s[0].append(started)
            if gap is not None and started > gap:
                s[1].append((gap, started))
        try:
            state = driver.start(store, o, driver.seq_at_time(store, o, until_us))
        except driver.OutOfRange:
            state = project.State()
        ends[o] = state
        names.update(n for n, v in state.nodes.items() if v.in_catalog)
        # Every observer of the window belongs in the report, with the session it is in,
        # even one whose agent never (re)started within the log (no session recorded).
        for obs in state.last_at:
            if scope.observer is None or obs == scope.observer:
                observed_by.setdefault(obs, [[], []])
    gaps = intersect(gap_lists) if len(gap_lists) > 1 else gap_lists[0]
    names.update(map(itemgetter(0), found))
    if node is not None:
        ids = _node_ids(store, origins, node)
        found = [i for i in found if i[0] in ids]
        names = {n for n in names if n in ids}
    if part != (None, None):
        names = {n for n in names if _in_range(n, part)}
    by_observer = {obs: Sessions(starts, gaps_) for obs, (starts, gaps_)
                   in sorted(observed_by.items())}
    roles = _roles(store, ends, since_us, until_us, names)
    return report(found, names, since_us, until_us, gaps, by_observer,
                  flap_window_us=int(flap_window_s * 1e6), flap_threshold=flap_threshold,
                  detection_delay_us=(None if detection_delay_s is None
                                      else int(detection_delay_s * 1e6)), roles=roles)


# -- roles over a window -----------------------------------------------------------------------


def _role_changes(store: Store, origin: str, low: project.State, high_seq: int,
                  high_epoch: int) -> Iterator[tuple]:
    """``(at, node, role)`` for each node whose role changed in events ``low.seq+1 ..
    high_seq``. The fold's role epoch is equal at two points only if no role changed in
    between, so stretches between checkpoints of equal epochs are skipped, and the rest
    halved at checkpoints until only stretches of one checkpoint interval are folded."""
    if low.role_epoch == high_epoch or high_seq <= low.seq:
        return
    for seq in ((low.seq + high_seq) // 2, high_seq - 1):
        point = store.checkpoint_at_or_before(origin, seq)
        if point is not None and low.seq < point[0] < high_seq:
            middle = point[2]
            yield from _role_changes(store, origin, low, middle.seq, middle.role_epoch)
            yield from _role_changes(store, origin, middle, high_seq, high_epoch)
            return
    state = low.copy()
    before = node_roles(state.nodes, state.members)
    epoch = state.role_epoch
    for raw, _, _ in driver.forward(state, store.events(origin, state.seq, high_seq)):
        if state.role_epoch == epoch:
            continue
        epoch = state.role_epoch
        now = node_roles(state.nodes, state.members)
        for node in sorted(before.keys() | now.keys()):
            if before.get(node) != now.get(node):
                yield raw.received_us, node, now.get(node)
        before = now


def _roles(store: Store, ends: dict, since_us: int, until_us: int, names: set) -> dict:
    """Node -> role stretches over the window (:func:`~membership_log.core.figures.
    role_stretches`), for the audit's ``names`` (a node no log knows a member of: one
    stretch without a role). Merged over several logs: a node's own log
    (the one whose origin is its name: Droonga 1.1 names Serf members by node id) where
    there is one, else the log that saw its role change most."""
    per_log = {}
    for origin, end in ends.items():
        try:
            start = driver.start(store, origin, driver.seq_at_time(store, origin, since_us))
        except driver.OutOfRange:
            start = project.State()
        changes = _role_changes(store, origin, start, end.seq, end.role_epoch)
        stretches = role_stretches(node_roles(start.nodes, start.members), changes, since_us,
                                   until_us)
        per_log[origin] = {n: v for n, v in stretches.items() if n in names}
    out = {}
    for name in names:
        if len(per_log) == 1:
            found = next(iter(per_log.values())).get(name)
        elif name in per_log and name in per_log[name]:
            found = per_log[name][name]
        else:
            candidates = [log[name] for log in per_log.values() if name in log]
            found = max(candidates, key=lambda v: (len(v), repr(v))) if candidates else None
        out[name] = found if found else [(since_us, until_us, None)]
    return out


# -- export ------------------------------------------------------------------------------------


def export(store: Store, since: Point | None = None, until: Point | None = None,
           observer: str | None = None) -> Iterator:
    """The raw log's events, in log order (SPEC "Export and import": the renderer writes
    each as :func:`membership_log.render.jsondoc.export_doc`)."""
    scope = _scope(store, observer)
    if scope.merged:
        raise MembershipError("export writes one node's log: with a central store, add "
                              "--observer NODE")
    check_window(since, until)
    _check_time(store, scope.origins, since, "--since")
    _check_time(store, scope.origins, until, "--until")
    origin = scope.origins[0]
    first, last = _window(store, origin, since, until)
    for raw in store.events(origin, first - 1, last):
        if scope.observer is not None and raw.observer not in (scope.observer, ""):
            continue
        yield raw


# -- metrics -----------------------------------------------------------------------------------


def metrics(store: Store, observer: str | None = None, now: int | None = None,
            flap_window_s: float = 600, flap_threshold: int = 3,
            exclude: tuple = (), spool_dir: str | None = None) -> dict:
    """The figures ``membership metrics`` exposes, as plain data (see
    :func:`membership_log.render.exposition.render`). Counters come from the log and its
    derived tables, so they never go back: not on a restart, not after a compaction.
    ``spool_dir``: a node store's spool, whose waiting events are counted."""
    now = now if now is not None else now_us()
    scope = _scope(store, observer)
    states = [_head_state(store, o) for o in scope.origins]
    view = merge.views({o: s.nodes for o, s in zip(scope.origins, states, strict=True)}) \
        if scope.merged else states[0].nodes
    members = _merged_members(states) if scope.merged else states[0].members
    roles = node_roles(view, members)
    found = _incidents(store, scope, MIN_US, MAX_US, True, by_node=True)
    if exclude:
        found = [i for i in found if i[3] not in exclude]
    nodes: dict[str, dict] = {}
    open_cause = {i[0]: i[3] for i in found if i[2] is None}  # in the order they began
    for name, v in view.items():
        role = roles.get(name)
        nodes[name] = {"up": v.live, "marked": v.marked,
                       "down_cause": None if v.live else open_cause.get(name),
                       "incidents": dict.fromkeys(CAUSES, 0), "downtime_s": 0.0,
                       "last_change_s": None, "flapping": False,
                       "role": None if role is None else normalize_role(role)}
    for node, by_cause in totals(found, now).items():
        n = nodes.setdefault(node, {"up": False, "marked": False,
                                    "incidents": dict.fromkeys(CAUSES, 0),
                                    "downtime_s": 0.0, "last_change_s": None,
                                    "flapping": False})
        for cause, (count, downtime, last) in by_cause.items():
            n["incidents"][cause] = n["incidents"].get(cause, 0) + count
            n["downtime_s"] += downtime / 1e6
            if last is not None:
                n["last_change_s"] = max(n["last_change_s"] or 0, last / 1e6)
    since = now - int(flap_window_s * 1e6)
    recent: dict[str, int] = {}
    for i in found:
        if i[1] >= since:
            recent[i[0]] = recent.get(i[0], 0) + 1
    for node, k in recent.items():
        if node in nodes:
            nodes[node]["flapping"] = k >= flap_threshold
    counts: dict[tuple, int] = {}
    last_event: dict[str, float] = {}
    for s in states:
        for (obs, kind), k in s.counts.items():
            if scope.observer is not None and obs not in (scope.observer, ""):
                continue
            counts[(obs, kind)] = counts.get((obs, kind), 0) + k
        for obs, at in s.last_at.items():
            if scope.observer is not None and obs != scope.observer:
                continue
            last_event[obs] = max(last_event.get(obs, 0), at / 1e6)
    heartbeats: dict[str, float] = {}
    for s in states:  # merged: the latest any log recorded from each sender
        for sender, at in s.heartbeats.items():
            heartbeats[sender] = max(heartbeats.get(sender, 0), at / 1e6)
    spooled = None
    if spool_dir is not None and store.role == ROLE_NODE:
        from ..stores.spool import waiting

        spooled = waiting(spool_dir)
    conflicts: dict[str, int] = {}
    for s in states:  # every origin whose heads were seen, zeros included (for increase())
        for origin, seen in s.heads.items():
            conflicts[origin] = conflicts.get(origin, 0) + seen.conflicts
    return {
        "nodes": nodes,
        "witness_conflicts": conflicts,
        "live_nodes": sum(1 for v in view.values() if v.live and v.in_catalog),
        "catalog_nodes": sum(1 for v in view.values() if v.in_catalog),
        "events": [{"observer": o, "event": k, "count": c}
                   for (o, k), c in sorted(counts.items())],
        "last_event_s": last_event,
        "observer": observer,
        "last_heartbeat_s": heartbeats,
        "spool_files": spooled,
        "version": __version__,
    }


def freshness(store: Store) -> tuple[dict[str, tuple], dict[str, int]]:
    """How current the store is: per log ``(head seq, the head's receive time)``, and per
    observer the receive time of its latest event (a quiet, healthy cluster sends its
    heartbeats; an observer silent for long is stale)."""
    logs = {}
    last: dict[str, int] = {}
    for o in store.origins():
        head = store.head_seq(o)
        logs[o] = (head, store.received_at(o, head) if head else None)
        if head:
            for obs, at in _head_state(store, o).last_at.items():
                if at > last.get(obs, at - 1):
                    last[obs] = at
    return logs, last


def heads(store: Store) -> dict[str, int]:
    """Each log's head seq: a cheap token that changes whenever anything is recorded (the
    dashboard polls it)."""
    return {o: store.head_seq(o) for o in store.origins()}
