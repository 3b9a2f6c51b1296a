"""The liveness rules: one pure fold of events into cluster state.

Every command that answers "who is live" (the handler, ``state``, ``replay``, ``audit``)
calls :func:`apply` / :func:`fold` here; there is no other copy of these rules.

The rules (SPEC "Liveness rules"):

- Start: every node in the catalog is live (Droonga's rule). Without a catalog every Serf
  member seen is a node.
- ``member-failed`` and ``member-leave`` make the named members dead, ``member-join`` makes
  them live, ``member-update`` changes role and tags only, ``member-reap`` keeps them dead.
- A user event or query ``membership-down`` / ``membership-up`` sets / clears an operator
  mark on the nodes named in its payload. Live = Serf says alive AND no mark. A Serf join
  does not clear a mark.
- A member is matched to catalog nodes by exact name (member name == node id), else by the
  node's host equal to the member's name, else equal to the member's address. A node's Serf
  status is that of the matching member heard of last; a node no member matched yet is live.
- A user event delivered again (same name, Lamport time and payload) takes effect once.

Pure: no I/O, no clock; state is plain immutable data that round-trips through
:func:`to_plain` / :func:`from_plain` (how snapshots are stored).
"""

from __future__ import annotations

from collections import namedtuple

from . import events as ev
from .catalog import Catalog, Node

ALIVE = "alive"
FAILED = "failed"
LEFT = "left"
REAPED = "reaped"

#: What a member event says of a member's Serf status. ``member-update`` is absent: it
#: changes role and tags only.
_STATUS_AFTER = {
    ev.MEMBER_JOIN: ALIVE,
    ev.MEMBER_FAILED: FAILED,
    ev.MEMBER_LEAVE: LEFT,
    ev.MEMBER_REAP: REAPED,
}

MARK_DOWN = "membership-down"
MARK_UP = "membership-up"

#: How many recent user events / queries are remembered to interpret a redelivery once.
#: Serf itself only deduplicates within a small ring of recent events, so a few thousand
#: covers any redelivery it can make.
RECENT_LIMIT = 4096

#: A member as last heard: ``status`` is ``alive``/``failed``/``left``/``reaped`` or None (only
#: an update was heard: no liveness information); ``seq`` the event that last changed it.
MemberState = namedtuple("MemberState", "address role tags status seq")

#: The fold's state. ``catalog``: a Catalog or None; ``members``: name -> MemberState;
#: ``marks``: frozenset of operator mark names as given (see :func:`marked_nodes`);
#: ``recent``: (kind, name, ltime, payload) keys of recent user events and queries;
#: ``seq``: last event folded.
State = namedtuple("State", "seq catalog members marks recent")

#: One node as the state sees it. ``serf``: the status of its matching member (None if no
#: member matched it yet); ``member``: that member's name; ``in_catalog``: False for a Serf
#: member that matches no catalog node (shown, never written to the live file).
NodeView = namedtuple("NodeView", "name live serf marked address member in_catalog")

#: A liveness change an event caused: ``before`` / ``after`` are ``live``, ``dead`` or None
#: (the node was not known before / is not known after, e.g. through a catalog change).
Change = namedtuple("Change", "node before after")

EMPTY = State(0, None, {}, frozenset(), ())


def initial(catalog: Catalog | None = None) -> State:
    """The state before any event."""
    return EMPTY._replace(catalog=catalog)


class _Index:
    """Lookups from Serf member names and addresses to catalog nodes, built per catalog."""

    __slots__ = ("by_id", "by_host")

    def __init__(self, catalog: Catalog) -> None:
        self.by_id = {n.id: n for n in catalog.nodes}
        by_host: dict[str, list[str]] = {}
        for n in catalog.nodes:
            by_host.setdefault(n.host, []).append(n.id)
        self.by_host = by_host

    def nodes_of(self, name: str, address: str) -> list[str]:
        if name in self.by_id:
            return [name]
        return self.by_host.get(name) or self.by_host.get(address) or []


_index_cache: dict[int, tuple[Catalog, _Index]] = {}


def _index(catalog: Catalog) -> _Index:
    # Catalogs are immutable and few; the cache keeps the fold linear in the log's length.
    hit = _index_cache.get(id(catalog))
    if hit is not None and hit[0] is catalog:
        return hit[1]
    idx = _Index(catalog)
    if len(_index_cache) > 64:
        _index_cache.clear()
    _index_cache[id(catalog)] = (catalog, idx)
    return idx


def view(state: State) -> dict[str, NodeView]:
    """Every known node, by name, with its liveness."""
    members = state.members
    marks = marked_nodes(state)
    nodes: dict[str, NodeView] = {}
    if state.catalog is None:
        for name, m in members.items():
            serf_live = m.status in (ALIVE, None)
            live = serf_live and name not in marks
            nodes[name] = NodeView(name, live, m.status, name in marks, m.address, name, True)
        return nodes

    idx = _index(state.catalog)
    best: dict[str, tuple[int, str]] = {}
    unmatched = []
    for name, m in members.items():
        matched = idx.nodes_of(name, m.address)
        if not matched:
            unmatched.append(name)
        for node_id in matched:
            current = best.get(node_id)
            if current is None or m.seq > current[0]:
                best[node_id] = (m.seq, name)
    for node in state.catalog.nodes:
        hit = best.get(node.id)
        if hit is None:
            status, member, address = None, None, node.host
        else:
            m = members[hit[1]]
            status, member, address = m.status, hit[1], m.address or node.host
        marked = node.id in marks
        live = status in (ALIVE, None) and not marked
        nodes[node.id] = NodeView(node.id, live, status, marked, address, member, True)
    for name in unmatched:
        m = members[name]
        marked = name in marks
        live = m.status in (ALIVE, None) and not marked
        nodes[name] = NodeView(name, live, m.status, marked, m.address, name, False)
    return nodes


def live_nodes(state: State) -> dict[str, str]:
    """What the live file lists: live node -> its Serf address (catalog nodes only)."""
    return live_of(view(state))


def live_of(nodes: dict[str, NodeView]) -> dict[str, str]:
    """The live catalog nodes of a view, with their Serf addresses."""
    return {n.name: n.address for n in nodes.values() if n.live and n.in_catalog}


def resolve(state: State, name: str) -> list[str]:
    """Node names an operator's word refers to: a catalog node id, a Serf member name or a
    host/address, matched as members are. A name matching nothing is kept as it is, so a
    mark can precede the node's first appearance."""
    if state.catalog is not None:
        idx = _index(state.catalog)
        m = state.members.get(name)
        found = idx.nodes_of(name, m.address if m else "")
        if found:
            return found
        for other, om in state.members.items():
            if om.address == name:
                found = idx.nodes_of(other, om.address)
                if found:
                    return found
        return [name]
    if name in state.members:
        return [name]
    by_address = [n for n, m in state.members.items() if m.address == name]
    return by_address or [name]


def marked_nodes(state: State) -> frozenset:
    """The nodes an operator has marked down. Marks keep the operator's words and are
    resolved against the current catalog and members, so a mark may name a node before Serf
    has ever reported it."""
    if not state.marks:
        return frozenset()
    return frozenset(t for m in state.marks for t in resolve(state, m))


def _apply_members(state: State, event) -> State:
    status = _STATUS_AFTER.get(event.kind)
    members = dict(state.members)
    for m in event.members:
        old = members.get(m.name)
        if status is None:  # member-update: role and tags only
            members[m.name] = MemberState(
                m.address or (old.address if old else ""),
                m.role,
                m.tags,
                old.status if old else None,
                old.seq if old else event.seq,
            )
        else:
            members[m.name] = MemberState(m.address, m.role, m.tags, status, event.seq)
    return state._replace(members=members)


def _apply_mark(state: State, event) -> State:
    if is_redelivery(state, event):
        return state  # interpret once
    recent_key = (event.kind, event.name, event.ltime, event.payload)
    recent = state.recent
    if event.ltime is not None:
        recent = (recent + (recent_key,))[-RECENT_LIMIT:]
    names = set((event.payload or "").split())
    if event.name == MARK_DOWN:
        marks = state.marks | names
    else:
        # Clear every mark that refers to one of the same nodes, however it was spelled.
        targets = {t for name in names for t in resolve(state, name)} | names
        marks = {m for m in state.marks if not (set(resolve(state, m)) & targets)}
    return state._replace(marks=frozenset(marks), recent=recent)


def may_change_liveness(event) -> bool:
    """Whether :func:`step` can change any node's liveness for this event (every other
    event only advances ``seq``)."""
    return (event.kind in ev.MEMBER_KINDS or event.kind == ev.CATALOG
            or (event.kind in (ev.USER, ev.QUERY) and event.name in (MARK_DOWN, MARK_UP)))


def step(state: State, event) -> State:
    """The state after ``event``."""
    kind = event.kind
    if kind in ev.MEMBER_KINDS:
        state = _apply_members(state, event)
    elif kind in (ev.USER, ev.QUERY) and event.name in (MARK_DOWN, MARK_UP):
        state = _apply_mark(state, event)
    elif kind == ev.CATALOG and event.catalog is not None:
        # An unusable catalog (bad JSON, no nodes) keeps the last good one.
        state = state._replace(catalog=event.catalog)
    return state._replace(seq=event.seq)


def changes(before: dict[str, NodeView], after: dict[str, NodeView]) -> list:
    """The liveness changes between two views, sorted by node name."""
    out = []
    for name in sorted(before.keys() | after.keys()):
        b, a = before.get(name), after.get(name)
        bl = None if b is None else ("live" if b.live else "dead")
        al = None if a is None else ("live" if a.live else "dead")
        if bl != al:
            out.append(Change(name, bl, al))
    return out


def apply(state: State, event) -> tuple[State, list]:
    """The state after ``event`` and the liveness changes it caused."""
    before = view(state)
    after_state = step(state, event)
    return after_state, changes(before, view(after_state))


#: One event folded: the state and view after it, the changes it caused, and whether it was
#: a redelivery of an operator event already taken into account.
Step = namedtuple("Step", "event state view changes redelivery")


def is_redelivery(state: State, event) -> bool:
    """Whether ``event`` is an operator mark Serf delivered again (interpreted once)."""
    return (
        event.kind in (ev.USER, ev.QUERY)
        and event.name in (MARK_DOWN, MARK_UP)
        and event.ltime is not None
        and (event.kind, event.name, event.ltime, event.payload) in state.recent
    )


def steps(events, state: State = EMPTY):
    """Fold ``events`` one by one, yielding a :data:`Step` for each (replay, audit)."""
    before = view(state)
    for event in events:
        redelivery = is_redelivery(state, event)
        state = step(state, event)
        after = view(state)
        yield Step(event, state, after, changes(before, after), redelivery)
        before = after


def fold(events, state: State = EMPTY) -> State:
    """Fold events into state: a plain loop over :func:`step`."""
    for event in events:
        state = step(state, event)
    return state


# -- plain data, for snapshots ---------------------------------------------------------------


def to_plain(state: State) -> tuple:
    """State as nested tuples, dicts and strings only (``marshal``-able)."""
    cat = None
    if state.catalog is not None:
        cat = (state.catalog.version, tuple(tuple(n) for n in state.catalog.nodes))
    members = {k: tuple(v) for k, v in state.members.items()}
    return (state.seq, cat, members, tuple(sorted(state.marks)), state.recent)


def from_plain(plain: tuple) -> State:
    """Inverse of :func:`to_plain`."""
    seq, cat, members, marks, recent = plain
    catalog = None
    if cat is not None:
        catalog = Catalog(cat[0], tuple(Node(*n) for n in cat[1]))
    return State(
        seq,
        catalog,
        {k: MemberState(*v) for k, v in members.items()},
        frozenset(marks),
        tuple(tuple(r) for r in recent),
    )
