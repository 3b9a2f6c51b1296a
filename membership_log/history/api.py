"""The library API: every question the log answers, as plain records.

Works the same on a node's store and on the central store (one node's log with
``observer=``, or all of them merged). Each function opens nothing itself: pass a store from
:func:`open_store` (or a :class:`~membership_log.settings.Settings` where a function writes).
The CLI is wiring around these; benchmarks and other programs call them directly::

    from membership_log import settings
    from membership_log.history import api as history
    from membership_log.core import timespec

    s = settings.resolve("/var/lib/droonga")
    with history.open_store(s.db_url) as store:
        now = history.state_at(store)
        print(sorted(history.live_set(now)))
        doc = history.audit(store, since=timespec.parse("1d ago", history.now_us()))

Reads go through the one fold driver (:mod:`membership_log.history.driver`): the nearest
checkpoint, then forward; audits read the derived incident table. A central store merges
its logs: a node is down cluster-wide while any observer sees it down.
"""

from __future__ import annotations

import heapq
from collections import namedtuple
from collections.abc import Iterator

from ..core import events, incidents
from ..core import fold as project
from ..core.clock import now_us  # noqa: F401 (the API's clock: history.now_us())
from ..core.errors import MembershipError
from ..core.figures import intersect, report, unobserved
from ..core.timespec import Point, check_window, iso, reached
from ..render import livefile
from ..stores.protocol import NODE, ROLE_CENTRAL
from . import driver as derive


def open_store(url: str):
    """The store at ``url`` (a SQLite path or URL, or a database URL), opened for its role."""
    from ..stores.setup import open_store as _open

    return _open(url)


#: The state at a moment: ``seq`` of the last event folded (None when merged over several
#: logs), ``at`` its receive time (None before any event), ``nodes``: name -> NodeView.
StateAt = namedtuple("StateAt", "seq at nodes")

#: One replayed event: ``origin`` (None on a node store), the raw event, the parsed one, the
#: liveness ``changes`` it caused (cluster-wide when merged), whether it was a redelivery.
Replayed = namedtuple("Replayed", "origin raw event changes redelivery")


def _central(store) -> bool:
    return store.role == ROLE_CENTRAL


def _origins(store, observer: str | None) -> list[str]:
    """The logs a question is about."""
    if not _central(store):
        return [NODE]
    origins = store.origins()
    if observer is None:
        return origins
    if observer not in origins:
        held = ", ".join(origins[:10]) or "none"
        raise MembershipError(f"the central store holds no log of {observer!r} (it holds: "
                              f"{held})")
    return [observer]


def _needs_one_log(store, observer, *points) -> None:
    if _central(store) and observer is None and any(
            p is not None and p.seq is not None for p in points):
        raise MembershipError("@N names an event of one node's log: with a central store, add "
                              "--observer NODE")


def combine(views: list[dict]) -> dict[str, project.NodeView]:
    """Node -> the view of it to show cluster-wide: a dead one if any observer sees it dead."""
    out: dict[str, project.NodeView] = {}
    for view in views:
        for name, node in view.items():
            current = out.get(name)
            if current is None or (current.live and not node.live):
                out[name] = node
    return out


def _state(store, origin: str, point: Point | None) -> project.State:
    return derive.start(store, origin, derive.point_seq(store, origin, point))


def state_at(store, at: Point | None = None, observer: str | None = None) -> StateAt:
    """Every known node and its liveness right after the last event at or before ``at``
    (default: now). Merged over a central store's logs unless ``observer`` picks one."""
    _needs_one_log(store, observer, at)
    origins = _origins(store, observer)
    if len(origins) == 1 and (observer is not None or not _central(store)):
        origin = origins[0]
        state = _state(store, origin, at)
        when = store.received_at(origin, state.seq) if state.seq else None
        return StateAt(state.seq, when, dict(state.nodes))
    states = [_state(store, o, at) for o in origins]
    views = [s.nodes for s in states]
    times = [store.received_at(o, s.seq) for o, s in zip(origins, states, strict=True)
             if s.seq]
    return StateAt(None, max(times) if times else None, combine(views))


def live_set(state: StateAt) -> dict[str, str]:
    """The live catalog nodes of a :data:`StateAt`, with their Serf addresses."""
    return project.live_of(state.nodes)


def live_file_at(store, at: Point | None = None, observer: str | None = None,
                 fmt: str = "droonga") -> bytes:
    """Exactly the bytes the live file had right after the last event at or before ``at``."""
    return livefile.render_view(state_at(store, at, observer).nodes, fmt)


# -- replay ------------------------------------------------------------------------------------


def _start_seq(store, origin: str, since: Point | None) -> int:
    """The first event at or after ``since`` in one log."""
    first = store.first_seq(origin)
    if since is None:
        return first
    if since.seq is not None:
        if since.seq < first:
            raise derive.OutOfRange(f"event {since.seq} was compacted away: the earliest "
                                    f"event kept is {first}")
        return since.seq
    return derive.seq_at_time(store, origin, since.us - 1) + 1


def _touches(state: project.State, event, changes, node: str) -> bool:
    """Whether an event concerns ``node``: it changed it, or names it (as a catalog node,
    member name or address, or in an operator payload)."""
    if any(c.node == node for c in changes):
        return True
    if any(node in (m.name, m.address) for m in event.members):
        return True
    v = state.nodes.get(node)
    if v is not None and v.member is not None and any(m.name == v.member
                                                      for m in event.members):
        return True
    return event.kind in (events.USER, events.QUERY) and node in (event.payload or "").split()


def _one_log(store, origin: str, since, until, node, observer, label):
    start = _start_seq(store, origin, since)
    state = derive.start(store, origin, start - 1)
    for raw, event, effect in derive.forward(state, store.events(origin, start - 1)):
        if not reached(until, raw.seq, raw.received_us):
            return
        if observer is not None and raw.observer not in (observer, ""):
            continue
        if node is not None and not _touches(state, event, effect.changes, node):
            continue
        yield Replayed(label, raw, event, effect.changes, effect.redelivery)


def replay(store, since: Point | None = None, until: Point | None = None,
           node: str | None = None, observer: str | None = None) -> Iterator[Replayed]:
    """The log in order from ``since`` to ``until``, each event with the liveness changes it
    caused. Folding starts at the nearest checkpoint before ``since``, so every change is
    judged in its full context, however long the log. Merged over a central store's logs
    (by receive time) unless ``observer`` picks one."""
    _needs_one_log(store, observer, since, until)
    check_window(since, until)
    origins = _origins(store, observer)
    if not _central(store):
        yield from _one_log(store, NODE, since, until, node, observer, None)
        return
    if observer is not None:
        yield from _one_log(store, observer, since, until, node, None, observer)
        return
    yield from _merged(store, origins, since, until, node)


def _merged(store, origins, since, until, node) -> Iterator[Replayed]:
    """Every log's events by receive time, with cluster-wide changes: a node is dead while
    any observer sees it dead (kept incrementally: per node, who sees it dead)."""
    states = {}
    streams = []
    dead: dict[str, set[str]] = {}
    known: dict[str, set[str]] = {}
    for o in origins:
        start = _start_seq(store, o, since)
        state = states[o] = derive.start(store, o, start - 1)
        for name, v in state.nodes.items():
            known.setdefault(name, set()).add(o)
            if not v.live:
                dead.setdefault(name, set()).add(o)

        def stream(o=o, state=state, start=start):
            for raw, event, effect in derive.forward(state, store.events(o, start - 1)):
                yield raw.received_us, o, raw.seq, raw, event, effect
        streams.append(stream())

    def status(name: str) -> str | None:
        if name not in known:
            return None
        return "dead" if dead.get(name) else "live"

    for _, o, _, raw, event, effect in heapq.merge(*streams):
        if until is not None and raw.received_us > until.us:
            return
        changes = []
        for c in effect.changes:
            before = status(c.node)
            if c.after is None:
                known.get(c.node, set()).discard(o)
                if not known.get(c.node):
                    known.pop(c.node, None)
            else:
                known.setdefault(c.node, set()).add(o)
            if c.after == "dead":
                dead.setdefault(c.node, set()).add(o)
            else:
                dead.get(c.node, set()).discard(o)
            after = status(c.node)
            if before != after:
                changes.append(project.Change(c.node, before, after))
        if node is not None and not _touches(states[o], event, changes, node):
            continue
        yield Replayed(o, raw, event, tuple(changes), effect.redelivery)


# -- audit -------------------------------------------------------------------------------------


def _resolve_time(store, origins, point: Point | None, default: int) -> int:
    if point is None:
        return default
    if point.seq is None:
        return point.us
    at = store.received_at(origins[0], point.seq)
    if at is None:
        raise MembershipError(f"there is no event {point.seq} in this log")
    return at


def _log_incidents(store, origin: str, since_us: int, until_us: int,
                   whole: bool = False, nodes: tuple = (None, None)) -> list:
    """A log's incidents touching the window, as ``(node, down_at, up_at, cause, observer,
    down_seq, up_seq)``: the derived table, plus those of events recorded but not yet folded
    (a handler killed between the two), folded here in memory. ``whole``: the window starts
    at the log's first event."""
    rows = store.incident_spans(origin, None if whole else since_us, until_us, nodes)
    snap = store.snapshot(origin)
    head = store.head_seq(origin)
    if snap is None or snap[0] < head:
        folded = snap[0] if snap is not None else 0
        state = derive.start(store, origin, folded)
        keeper = derive.Keeper()
        for raw, event, effect in derive.forward(state, store.events(origin, state.seq, head)):
            keeper.see(state, raw, event, effect)
        batch = keeper.take()
        closed = {n: (us, ua) for n, us, ua in batch.closed}
        rows = [r if r[2] is not None or r[0] not in closed
                else (r[0], r[1], closed[r[0]][1], r[3], r[4], r[5], closed[r[0]][0])
                for r in rows]
        rows += [(r[0], r[2], r[6], r[3], r[4], r[1], r[5]) for r in batch.incidents
                 if r[2] <= until_us and (r[6] is None or r[6] >= since_us)
                 and _in_range(r[0], nodes)]
        rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def _in_range(name: str, nodes: tuple) -> bool:
    lo, hi = nodes
    return (lo is None or name >= lo) and (hi is None or name < hi)


def incidents_of(store, observer: str | None = None, since_us: int | None = None,
                 until_us: int | None = None) -> list:
    """Every incident of a view as :data:`~membership_log.core.incidents.Incident` records, in
    the order they began: a node store's (only those ``observer`` saw, if given), one log of
    a central store (``observer``), or the cluster-wide merge of all its logs. Events
    recorded but not yet folded are included."""
    from ..core.timespec import MAX_US, MIN_US

    lo = MIN_US if since_us is None else since_us
    hi = MAX_US if until_us is None else until_us

    def log(origin: str) -> list:
        return [incidents.Incident(n, d, u, c, (ob,) if ob else (), ds, us)
                for n, d, u, c, ob, ds, us in _log_incidents(store, origin, lo, hi,
                                                             since_us is None)]

    if not _central(store):
        found = log(NODE)
        return found if observer is None else [i for i in found if observer in i.observers]
    origins = _origins(store, observer)
    return log(origins[0]) if observer is not None else incidents.merge(
        [log(o) for o in origins])


def _observer_sessions(store, origin: str) -> list[tuple]:
    """``(observer, started_at, gap_from)`` of one log's observer sessions."""
    return [(obs, started, gap) for _, obs, started, gap in store.sessions(origin)]


def audit(store, since: Point | None = None, until: Point | None = None,
          node: str | None = None, observer: str | None = None,
          flap_window_s: float = 600, flap_threshold: int = 3,
          detection_delay_s: float | None = None, now: int | None = None,
          part: tuple = (None, None)) -> dict:
    """Incidents per node and figures over a window (SPEC "Replay and audit JSON"), read
    from the derived incident tables. The window runs from the first event kept (or
    ``since``) to now (or ``until``). ``part=(lo, hi)``: only the nodes named in [lo, hi)
    (None: open), so that :mod:`membership_log.history.bulk` can compute shares on every core."""
    _needs_one_log(store, observer, since, until)
    check_window(since, until)
    origins = _origins(store, observer)
    log_origins = origins if _central(store) else [NODE]
    until_us = _resolve_time(store, log_origins, until, now if now is not None else now_us())
    firsts = [store.received_at(o, store.first_seq(o)) for o in log_origins]
    firsts = [f for f in firsts if f is not None]
    # A log begun while the clock was ahead starts "after now": the window starts no later
    # than it ends.
    since_us = _resolve_time(store, log_origins, since,
                             min(min(firsts), until_us) if firsts else until_us)
    if since_us > until_us:
        raise MembershipError(f"--since {iso(since_us)} is after --until {iso(until_us)}")
    per_log = []
    gap_lists = []
    sessions_doc: dict[str, dict] = {}
    nodes: set[str] = set()
    for o in log_origins:
        incs = _log_incidents(store, o, since_us, until_us, since is None, part)
        if not _central(store) and observer is not None:
            incs = [i for i in incs if i[4] == observer]
        per_log.append(incs)
        sess = _observer_sessions(store, o)
        if not _central(store) and observer is not None:
            sess = [s for s in sess if s[0] == observer]
        gap_lists.append(unobserved(sess, since_us, until_us))
        for obs, started, gap in sess:
            d = sessions_doc.setdefault(obs, {"sessions": [], "unobserved": []})
            d["sessions"].append(iso(started))
            if gap is not None and started > gap:
                d["unobserved"].append({"from": iso(gap), "to": iso(started)})
        try:
            state = _state(store, o, Point("", until_us, None))
        except derive.OutOfRange:
            state = project.State()
        nodes.update(n for n, v in state.nodes.items() if v.in_catalog)
    if len(per_log) > 1:
        merged = incidents.merge([[incidents.Incident(n, d, u, c, (o,) if o else (), ds, us)
                                   for n, d, u, c, o, ds, us in incs] for incs in per_log])
    else:
        merged = per_log[0]
    gaps = intersect(gap_lists) if len(gap_lists) > 1 else gap_lists[0]
    nodes |= {i[0] for i in merged}
    if node is not None:
        merged = [i for i in merged if i[0] == node]
        nodes = {n for n in nodes if n == node}
    if part != (None, None):
        nodes = {n for n in nodes if _in_range(n, part)}
    return report(merged, nodes, since_us, until_us, iso, gaps, sessions_doc,
                  flap_window_us=int(flap_window_s * 1e6), flap_threshold=flap_threshold,
                  detection_delay_us=(None if detection_delay_s is None
                                      else int(detection_delay_s * 1e6)))


def timeline(store, since: Point | None = None, until: Point | None = None,
             node: str | None = None, observer: str | None = None, now: int | None = None,
             **audit_options) -> str:
    """The timeline picture (SVG) of an audit's window."""
    from ..core.timespec import parse as _parse_time
    from ..render import timeline as _timeline

    doc = audit(store, since, until, node, observer, now=now, **audit_options)
    since_us = _parse_time(doc["since"], 0).us
    until_us = _parse_time(doc["until"], 0).us
    rows = []
    for name, n in doc["nodes"].items():
        for i in n["incidents"]:
            down = _parse_time(i["down_at"], 0).us
            up = _parse_time(i["up_at"], 0).us if i["up_at"] else None
            rows.append(incidents.Incident(name, down, up, i["cause"], tuple(i["observers"]),
                                           i["down_seq"], i["up_seq"]))
    gaps = [(_parse_time(g["from"], 0).us, _parse_time(g["to"], 0).us)
            for d in doc["observers"].values() for g in d["unobserved"]]
    flaps = {name: [(_parse_time(f["from"], 0).us, _parse_time(f["to"], 0).us)
                    for f in n["flapping"]] for name, n in doc["nodes"].items()}
    return _timeline.render_svg(list(doc["nodes"]), rows, since_us, until_us, iso,
                                unobserved=gaps, flapping=flaps)


# -- export ------------------------------------------------------------------------------------


def export(store, since: Point | None = None, until: Point | None = None,
           observer: str | None = None) -> Iterator[dict]:
    """The raw log as records ``{"seq", "received", "observer", "source", "env",
    "stdin_b64", "hash"}`` in log order (SPEC "Export and import")."""
    import base64

    check_window(since, until)
    if _central(store) and observer is None:
        raise MembershipError("export writes one node's log: with a central store, add "
                              "--observer NODE")
    origin = observer if _central(store) else NODE
    start = _start_seq(store, origin, since)
    for raw in store.events(origin, start - 1):
        if not reached(until, raw.seq, raw.received_us):
            return
        if observer is not None and not _central(store) and raw.observer not in (observer, ""):
            continue
        yield {"seq": raw.seq, "received": iso(raw.received_us), "observer": raw.observer,
               "source": raw.source, "env": raw.env,
               "stdin_b64": base64.b64encode(raw.stdin).decode("ascii"),
               "hash": raw.hash.hex()}


# -- metrics -----------------------------------------------------------------------------------


def metrics(store, observer: str | None = None, now: int | None = None,
            flap_window_s: float = 600, flap_threshold: int = 3) -> dict:
    """The figures ``membership metrics`` exposes, as plain data (see
    :func:`membership_log.render.exposition.render`). Counters come from the log and its derived
    tables, so they never go back: not on a restart, not after a compaction."""
    now = now if now is not None else now_us()
    origins = _origins(store, observer)
    states = [_state(store, o, None) for o in origins]
    view = combine([s.nodes for s in states]) if len(states) > 1 else states[0].nodes
    nodes: dict[str, dict] = {}
    for name, v in view.items():
        nodes[name] = {"up": v.live, "marked": v.marked,
                       "incidents": {c: 0 for c in incidents.CAUSES}, "downtime_s": 0.0,
                       "last_change_s": None, "flapping": False}
    if len(origins) > 1:  # cluster-wide: overlapping reports of one outage count once
        merged = incidents.merge([
            [incidents.Incident(n, d, u, c, (ob,) if ob else (), ds, us)
             for n, d, u, c, ob, ds, us in store.incident_spans(o)] for o in origins])
        totals: dict[tuple, list] = {}
        for i in merged:
            t = totals.setdefault((i.node, i.cause), [0, 0, None])
            t[0] += 1
            t[1] += max(0, (i.up_at if i.up_at is not None else now) - i.down_at)
            last = max(i.down_at, i.up_at or i.down_at)
            t[2] = last if t[2] is None else max(t[2], last)
        rows = [(n, c, k, d, last) for (n, c), (k, d, last) in totals.items()]
        starts = [(i.node, i.down_at) for i in merged]
    else:
        rows = store.incident_totals(origins[0], now)
        since = now - int(flap_window_s * 1e6)
        starts = [(r[0], r[1]) for r in store.incident_spans(origins[0], since, now)
                  if r[1] >= since]
    for node, cause, count, downtime, last in rows:
        n = nodes.setdefault(node, {"up": False, "marked": False,
                                    "incidents": {c: 0 for c in incidents.CAUSES},
                                    "downtime_s": 0.0, "last_change_s": None,
                                    "flapping": False})
        n["incidents"][cause] = n["incidents"].get(cause, 0) + count
        n["downtime_s"] += (downtime or 0) / 1e6
        if last is not None:
            n["last_change_s"] = max(n["last_change_s"] or 0, last / 1e6)
    recent: dict[str, int] = {}
    for node, down_at in starts:
        if down_at >= now - int(flap_window_s * 1e6):
            recent[node] = recent.get(node, 0) + 1
    for node, k in recent.items():
        if node in nodes:
            nodes[node]["flapping"] = k >= flap_threshold
    counts: dict[tuple, int] = {}
    last_event: dict[str, float] = {}
    for s in states:
        for (obs, kind), k in s.counts.items():
            counts[(obs, kind)] = counts.get((obs, kind), 0) + k
        for obs, at in s.last_at.items():
            last_event[obs] = max(last_event.get(obs, 0), at / 1e6)
    return {
        "nodes": nodes,
        "live_nodes": sum(1 for v in view.values() if v.live and v.in_catalog),
        "catalog_nodes": sum(1 for v in view.values() if v.in_catalog),
        "events": [{"observer": o, "event": k, "count": c}
                   for (o, k), c in sorted(counts.items())],
        "last_event_s": last_event,
        "observer": observer,
    }


def heads(store) -> dict[str, int]:
    """Each log's head seq: a cheap token that changes whenever anything is recorded (the
    dashboard polls it)."""
    return {o: store.head_seq(o) for o in store.origins()}
