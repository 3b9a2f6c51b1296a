"""The liveness rules: one fold of events into cluster state.

Every answer to "who is live" (the handler, ``state``, ``replay``, ``audit``, ``verify``, the
central store's merge) comes from :meth:`State.apply` here; there is no other copy of these
rules.

The rules (SPEC "Liveness rules"):

- Start: every node in the catalog is live (Droonga's rule). Without a catalog every Serf
  member seen is a node.
- ``member-failed`` and ``member-leave`` make the named members dead, ``member-join`` makes
  them live, ``member-update`` changes role and tags only, ``member-reap`` keeps them dead.
- A user event or query ``membership-down`` / ``membership-up`` sets / clears an operator
  mark on the nodes named in its payload. Live = Serf says alive AND no mark. A Serf join
  does not clear a mark.
- Marks are ordered by Lamport time, not arrival: for each node the mark with the highest
  ``(session, ltime)`` wins. A mark whose (kind, name, ltime, payload) was already applied in
  this session is a redelivery and does nothing. Lamport times restart with the cluster, so a
  ``member-join`` naming the observer itself starts a new session of its agent.
- A member is matched to catalog nodes by exact name (member name == node id), else by the
  node's host equal to the member's name, else equal to the member's address. A node's Serf
  status is that of the matching member heard of last; a node no member matched yet is live.

Cost: :meth:`State.apply` touches only the nodes an event can affect (the members it names,
the nodes their marks resolve to), so folding costs the same per event in a 3-node and a
1,000-node cluster. A catalog change, rare, recomputes everything. To make that possible the
state is mutable; :func:`step` and :func:`fold` copy first, so callers that want a pure fold
have one. No I/O, no clock; the state round-trips through :func:`to_plain` /
:func:`from_plain` (how checkpoints are stored).
"""

from __future__ import annotations

from . import events as ev
from .catalog import Catalog, Node
from .records import record

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Iterable

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
_SERF_LIVE = (ALIVE, None)

MARK_DOWN = "membership-down"
MARK_UP = "membership-up"
_MARK_NAMES = (MARK_DOWN, MARK_UP)
_MARK_KINDS = (ev.USER, ev.QUERY)
#: The user event ``membership heartbeat`` sends (payload: the sender's node name): proof
#: that the sender's agent and every recording observer's handler still work.
HEARTBEAT = "membership-heartbeat"

# Bounds on what events can add to the state, so that one hostile or broken event cannot make
# every later handler run slow (each run loads the state). Real clusters stay far below them:
# Serf's default user-event payload is 512 bytes, a few dozen names.
#: Members the state keeps; members beyond are recorded raw but not folded (with a warning).
MAX_MEMBERS = 20_000
#: Distinct words operator marks keep; beyond it, marks that name nothing known go first.
MAX_MARKS = 4_096
#: Names one mark may carry, and the length of one name; a larger mark is folded as nothing.
MAX_MARK_WORDS = 512
MAX_WORD = 512
#: Applied marks remembered per session to recognise a redelivery. Serf redelivers only from
#: a small recent window, so this is ample.
APPLIED_LIMIT = 1_024
#: Heartbeat senders the state keeps (a cluster has a few hundred nodes at most).
MAX_HEARTBEATS = 4_096

#: Witnessed history (SPEC): the heads of at most this many origins are kept (a head naming
#: one more is recorded raw, folded as nothing, with a warning), and per origin the latest
#: head by Lamport time plus the last few by arrival (to recognise a redelivery, and a fork:
#: two roots at one size).
MAX_HEAD_ORIGINS = 1_024
HEAD_MEMORY = 8

#: A member as last heard: ``status`` is ``alive``/``failed``/``left``/``reaped`` or None (only
#: an update was heard: no liveness information); ``seq`` the event that last changed it.
MemberState = record("MemberState", "address role tags status seq")

#: An operator mark on one word: ``key`` is ``(session, ltime, seq)``; ``down`` True for
#: ``membership-down``, False for ``membership-up``.
Mark = record("Mark", "key down")

#: One node as the state sees it. ``serf``: the status of its matching member (None if no
#: member matched it yet); ``member``: that member's name; ``in_catalog``: False for a Serf
#: member that matches no catalog node (shown, never written to the live file).
NodeView = record("NodeView", "name live serf marked address member in_catalog")

#: A liveness change an event caused: ``before`` / ``after`` are ``live``, ``dead`` or None
#: (the node was not known before / is not known after, e.g. through a catalog change).
Change = record("Change", "node before after")

#: What one event did: its liveness ``changes`` (sorted by node), whether it was a
#: ``redelivery`` of a mark already applied, ``restart`` = ``(observer, previous event time
#: or None)`` when it began a new session of the observer's agent, and fold ``warnings``.
Effect = record("Effect", "changes redelivery restart warnings")

#: A published head as the fold keeps it: its Lamport time (None if it had none), ``order``
#: (its Lamport time, or for one without, the latest order seen: arrival after all of them),
#: the tree ``size``, the ``root`` (hex) and the ``seq`` of the event that brought it.
Head = record("Head", "ltime order size root seq")

#: The heads seen of one origin: the ``latest`` by order, the ``recent`` ones by arrival
#: (at most :data:`HEAD_MEMORY`), and how many heads contradicted earlier ones
#: (``conflicts``: the metric ``membership_witness_conflicts_total``).
Witnessed = record("Witnessed", "latest recent conflicts")

NOTHING = Effect((), False, None, ())
_REDELIVERY = Effect((), True, None, ())


def _role(member: MemberState) -> str | None:
    """A member's ``role`` tag (Droonga 1.1's role of the node), None without one: what
    :func:`membership_log.core.droonga.role_tag` reads, inlined here because this runs per
    member on the handler's hot path, where that module is not loaded."""
    tags = member.tags
    return tags.get("role") if tags else None


def _liveness(view: NodeView | None) -> str | None:
    return None if view is None else ("live" if view.live else "dead")


class State:
    """The fold's state after event ``seq``.

    ``catalog``: a Catalog or None; ``members``: name -> :data:`MemberState`; ``marks``: word ->
    :data:`Mark` (the operator's words, resolved when liveness is computed, so a mark may name
    a node before Serf first reports it); ``session``: agent sessions begun; ``applied``: keys
    of marks applied in this session; ``counts``: (observer, event kind) -> events folded;
    ``last_at``: observer -> receive time of its latest event; ``max_at``: the latest receive
    time so far (receive times can step back with the clock; this cannot); ``heartbeats``:
    heartbeat sender -> receive time of the last heartbeat recorded from it. ``nodes`` is the
    current view, node -> :data:`NodeView`, kept up to date by :meth:`apply`. ``heads``:
    origin -> :data:`Witnessed`, the ``membership-head`` events seen (:meth:`_head`).
    ``role_epoch`` counts the events that may have changed a node's role (its member's
    ``role`` tag, Droonga 1.1's): equal at two points, no role changed in between, so an
    audit finds its role stretches by looking at checkpoints instead of folding its window.
    """

    __slots__ = ("seq", "max_at", "catalog", "members", "marks", "session", "applied",
                 "max_ltime", "counts", "last_at", "role_epoch", "heartbeats", "heads", "nodes",
                 "_by_id", "_by_host", "_by_address", "_node_members", "_targets",
                 "_node_marks")

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.seq = 0
        self.max_at = 0
        self.catalog = catalog
        self.members: dict[str, MemberState] = {}
        self.marks: dict[str, Mark] = {}
        self.session = 0
        self.applied: dict[tuple, None] = {}
        self.max_ltime = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.last_at: dict[str, int] = {}
        self.role_epoch = 0
        self.heartbeats: dict[str, int] = {}
        self.heads: dict[str, Witnessed] = {}
        self._rebuild()

    # -- indexes ---------------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Every index and the whole view from scratch (a new catalog, or a loaded state)."""
        self._by_id: dict[str, Node] = {}
        self._by_host: dict[str, list[str]] = {}
        if self.catalog is not None:
            for n in self.catalog.nodes:
                self._by_id[n.id] = n
                self._by_host.setdefault(n.host, []).append(n.id)
        self._by_address: dict[str, set[str]] = {}
        self._node_members: dict[str, set[str]] = {}
        for name, m in self.members.items():
            self._by_address.setdefault(m.address, set()).add(name)
            for node in self._matches(name, m.address):
                self._node_members.setdefault(node, set()).add(name)
        self._targets: dict[str, tuple[str, ...]] = {}
        self._node_marks: dict[str, set[str]] = {}
        for word in self.marks:
            self._target(word, self._resolve(word))
        self.nodes: dict[str, NodeView] = {}
        names = list(self._by_id)
        names += [n for n, m in self.members.items() if self._is_member_node(n, m.address)]
        for name in names:
            view = self._view(name)
            if view is not None:
                self.nodes[name] = view

    def _nodes_of(self, name: str, address: str) -> list[str]:
        """The catalog nodes a member with this name and address matches."""
        if name in self._by_id:
            return [name]
        return self._by_host.get(name) or self._by_host.get(address) or []

    def _matches(self, name: str, address: str) -> list[str]:
        """The nodes a member counts for: its catalog nodes, or itself when it matches none."""
        if self.catalog is None:
            return [name]
        return self._nodes_of(name, address) or [name]

    def _is_member_node(self, name: str, address: str) -> bool:
        return self.catalog is None or not self._nodes_of(name, address)

    def _resolve(self, word: str) -> tuple[str, ...]:
        """The nodes an operator's word names: a catalog node id, a Serf member name or a
        host/address, matched as members are. A word matching nothing stays itself."""
        members = self.members
        if self.catalog is not None:
            m = members.get(word)
            found = self._nodes_of(word, m.address if m is not None else "")
            if found:
                return tuple(found)
            for other in sorted(self._by_address.get(word, ())):
                found = self._nodes_of(other, word)
                if found:
                    return tuple(found)
            return (word,)
        if word in members:
            return (word,)
        by_address = self._by_address.get(word)
        return tuple(sorted(by_address)) if by_address else (word,)

    def resolve(self, word: str) -> tuple[str, ...]:
        """The nodes a name means, as an operator's mark resolves it: a catalog node id, a
        Serf member name or a host/address (the word itself when it matches nothing)."""
        return self._resolve(word)

    def _target(self, word: str, targets: tuple[str, ...]) -> None:
        self._targets[word] = targets
        for t in targets:
            self._node_marks.setdefault(t, set()).add(word)

    def _untarget(self, word: str) -> tuple[str, ...]:
        old = self._targets.pop(word, ())
        for t in old:
            words = self._node_marks.get(t)
            if words is not None:
                words.discard(word)
                if not words:
                    del self._node_marks[t]
        return old

    def _marked(self, node: str) -> bool:
        words = self._node_marks.get(node)
        if not words:
            return False
        marks = self.marks
        return max((marks[w] for w in words), key=lambda m: m.key).down

    def _view(self, name: str) -> NodeView | None:
        """The view of one node, or None if no such node exists (any more)."""
        node = self._by_id.get(name)
        if node is not None:
            names = self._node_members.get(name)
            if names:
                members = self.members
                best = max(names, key=lambda n: (members[n].seq, n))
                shown = members[best]
                status, member, address = shown.status, best, shown.address or node.host
            else:
                status, member, address = None, None, node.host
            marked = self._marked(name)
            return NodeView(name, status in _SERF_LIVE and not marked, status, marked, address,
                            member, True)
        m = self.members.get(name)
        if m is None or not self._is_member_node(name, m.address):
            return None
        marked = self._marked(name)
        return NodeView(name, m.status in _SERF_LIVE and not marked, m.status, marked,
                        m.address, name, self.catalog is None)

    def _member_role(self, name: str | None) -> str | None:
        m = self.members.get(name) if name is not None else None
        return _role(m) if m is not None else None

    def _refresh(self, affected: Iterable[str]) -> tuple:
        """Recompute the views of ``affected`` nodes; their liveness changes, sorted."""
        nodes = self.nodes
        changes = []
        shown_moved = False
        for name in sorted(affected):
            before = nodes.get(name)
            after = self._view(name)
            if after is None:
                if before is not None:
                    del nodes[name]
            else:
                nodes[name] = after
            if not shown_moved:
                b_member = before.member if before is not None else None
                a_member = after.member if after is not None else None
                if b_member != a_member and self._member_role(b_member) != \
                        self._member_role(a_member):
                    shown_moved = True  # the node shows another member, of another role
                    self.role_epoch += 1
            b, a = _liveness(before), _liveness(after)
            if b != a:
                changes.append(Change(name, b, a))
        return tuple(changes)

    # -- the fold --------------------------------------------------------------------------

    def apply(self, event: ev.Event) -> Effect:
        """Fold one parsed event into this state (in place); what it did."""
        kind = event.kind
        self.seq = event.seq
        if kind == ev.ANCHOR:  # compact's own record: no event of the cluster's
            return NOTHING
        observer = event.observer
        key = (observer, kind)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if event.at > self.max_at:
            self.max_at = event.at
        if kind in ev.MEMBER_KINDS:
            effect = self._members(event)
        elif kind in _MARK_KINDS and event.name in _MARK_NAMES:
            effect = self._mark(event)
        elif kind == ev.USER and event.name == ev.HEAD_EVENT:
            effect = self._head(event)
        elif kind == ev.CATALOG and event.catalog is not None:
            # An unusable catalog (bad JSON, no nodes) keeps the last good one.
            before = dict(self.nodes)
            self.catalog = event.catalog
            self.role_epoch += 1  # members are matched anew: a node may show another member
            self._rebuild()
            effect = Effect(self._diff(before), False, None, ())
        elif kind == ev.USER and event.name == HEARTBEAT:
            effect = self._heartbeat(event)
        else:
            effect = NOTHING
        if observer and kind != ev.CATALOG:  # a catalog is read, not seen by the agent
            self.last_at[observer] = event.at
        return effect

    def _diff(self, before: dict[str, NodeView]) -> tuple:
        after = self.nodes
        out = []
        for name in sorted(before.keys() | after.keys()):
            b, a = _liveness(before.get(name)), _liveness(after.get(name))
            if b != a:
                out.append(Change(name, b, a))
        return tuple(out)

    def _members(self, event: ev.Event) -> Effect:
        status = _STATUS_AFTER.get(event.kind)
        members = self.members
        observer = event.observer
        restart = None
        warnings: tuple = ()
        if (status == ALIVE and observer
                and any(m.name == observer for m in event.members)):
            # The observer's own agent (re)joined: a new session, Lamport times start over.
            restart = (observer, self.last_at.get(observer))
            self.session += 1
            self.applied = {}
            self.max_ltime = 0
        affected: set[str] = set()
        words: set[str] = set()
        marks = self.marks
        refused = 0
        roles_moved = False
        for m in event.members:
            name = m.name
            old = members.get(name)
            if old is None:
                if len(members) >= MAX_MEMBERS:
                    refused += 1
                    continue
                old_address = None
            else:
                old_address = old.address
            if status is None:  # member-update: role and tags only
                new = MemberState(m.address or (old_address or ""), m.role, m.tags,
                                  old.status if old is not None else None,
                                  old.seq if old is not None else event.seq)
            else:
                new = MemberState(m.address, m.role, m.tags, status, event.seq)
            members[name] = new
            if not roles_moved and _role(new) != (_role(old) if old is not None else None):
                roles_moved = True
            if status is None and old is not None and old_address == new.address:
                continue  # role and tags only: no node's view shows them
            if old_address != new.address:
                # New, or moved: which nodes it matches, and what marks name, may change.
                if old is not None:
                    by = self._by_address.get(old.address)
                    if by is not None:
                        by.discard(name)
                        if not by:
                            del self._by_address[old.address]
                    for node in self._matches(name, old.address):
                        affected.add(node)
                        group = self._node_members.get(node)
                        if group is not None:
                            group.discard(name)
                            if not group:
                                del self._node_members[node]
                    if old_address in marks:
                        words.add(old_address)
                self._by_address.setdefault(new.address, set()).add(name)
                for node in self._matches(name, new.address):
                    self._node_members.setdefault(node, set()).add(name)
                if name in marks:
                    words.add(name)
                if new.address in marks:
                    words.add(new.address)
            affected.update(self._matches(name, new.address))
        for word in words:
            affected.update(self._untarget(word))
            targets = self._resolve(word)
            self._target(word, targets)
            affected.update(targets)
        if roles_moved:
            self.role_epoch += 1
        if refused:
            warnings = (f"{refused} new member(s) not folded: the state already holds "
                        f"{MAX_MEMBERS} members",)
        changes = self._refresh(affected)
        if not changes and restart is None and not warnings:
            return NOTHING
        return Effect(changes, False, restart, warnings)

    def _mark(self, event: ev.Event) -> Effect:
        ltime = event.ltime
        if ltime is not None:
            key = (event.kind, event.name, ltime, _payload_key(event.payload))
            if key in self.applied:
                return _REDELIVERY
            self.applied[key] = None
            if len(self.applied) > APPLIED_LIMIT:
                del self.applied[next(iter(self.applied))]
            if ltime > self.max_ltime:
                self.max_ltime = ltime
            order = ltime
        else:
            order = self.max_ltime  # no Lamport time: arrival order, after all seen so far
        words = set((event.payload or "").split())
        if len(words) > MAX_MARK_WORDS or any(len(w) > MAX_WORD for w in words):
            return Effect((), False, None, (
                f"{event.name} names {len(words)} node(s) (at most {MAX_MARK_WORDS}, each at "
                f"most {MAX_WORD} characters); folded as nothing",))
        mark = Mark((self.session, order, event.seq), event.name == MARK_DOWN)
        marks = self.marks
        affected: set[str] = set()
        for word in words:
            current = marks.get(word)
            if current is not None and current.key > mark.key:
                continue  # a later mark (by Lamport time) already decided this word
            marks[word] = mark
            if current is None:
                self._target(word, self._resolve(word))
            affected.update(self._targets[word])
        if len(marks) > MAX_MARKS:
            affected.update(self._evict())
        changes = self._refresh(affected)
        return Effect(changes, False, None, ()) if changes else NOTHING

    def _heartbeat(self, event: ev.Event) -> Effect:
        """Keep the receive time of the sender's heartbeat; it changes no node's liveness."""
        sender = (event.payload or "").strip()
        if not sender or len(sender) > MAX_WORD or len(sender.split()) != 1:
            return Effect((), False, None, (f"{HEARTBEAT} names no single sender "
                                            f"({sender[:40]!r}); folded as nothing",))
        if sender not in self.heartbeats and len(self.heartbeats) >= MAX_HEARTBEATS:
            return Effect((), False, None, (f"{HEARTBEAT} from {sender[:40]!r} not folded: "
                                            f"the state already holds {MAX_HEARTBEATS} "
                                            f"senders",))
        self.heartbeats[sender] = event.at
        return NOTHING

    def _head(self, event: ev.Event) -> Effect:
        """A published head (SPEC "Witnessed history"): kept per origin, and checked against
        the heads already seen of that origin for what a witness can tell without proofs:

        - *a fork*: a head of a size already seen with another root (two logs at one size);
        - *a log that went back*: a head newer (by Lamport time) than the latest seen, of a
          smaller size. A log only grows and seqs are never reused, so its tree was truncated
          or re-created from scratch.

        A larger head whose root does not extend the earlier ones is not checkable here: that
        takes a consistency proof, or the log itself (the central store's ``verify`` and
        ``ship`` hold every shipped log to every head witnessed for it). Heads are ordered by
        Lamport time alone, not by session: Serf's user-event clock is the cluster's and
        survives any one agent's restart, and what Serf redelivers after a rejoin keeps its
        old time, so it is an old head, not a log going back. (A whole cluster restarted
        without ``-snapshot`` starts the clock over; its new heads are then older than the
        latest seen, and only a fork is looked for until the clock passes it again: a miss,
        never a false alarm.) A head with no Lamport time (not from Serf) counts as the
        newest. A contradiction is a warning beginning ``witness conflict: ``
        (:data:`membership_log.core.witness.CONFLICT`) and counts in the
        origin's ``conflicts``."""
        from .witness import CONFLICT, parse_head  # only for a head: off the hot path

        parsed = parse_head(event.payload)
        if parsed is None:
            return Effect((), False, None, (f"{ev.HEAD_EVENT} payload is not '<observer> <size> "
                                            f"<root hex>'; folded as nothing",))
        origin, size, root = parsed
        seen = self.heads.get(origin)
        if seen is None:
            if len(self.heads) >= MAX_HEAD_ORIGINS:
                return Effect((), False, None, (
                    f"{ev.HEAD_EVENT} of {origin[:60]!r} not folded: the state already keeps the "
                    f"heads of {MAX_HEAD_ORIGINS} origins",))
            seen = Witnessed(None, (), 0)
        latest, recent, conflicts = seen
        ltime = event.ltime
        known = recent + ((latest,) if latest is not None else ())
        if any(h.ltime == ltime and h.size == size and h.root == root for h in known):
            return _REDELIVERY
        why = []
        other = next((h for h in known if h.size == size and h.root != root), None)
        if other is not None:
            why.append(f"a head of size {size} with root {root[:16]}..., but the head of event "
                       f"{other.seq} has root {other.root[:16]}... at that size (two logs at one "
                       f"size: a fork)")
        newer = latest is None or ltime is None or ltime > latest.order
        if newer and latest is not None and size < latest.size:
            why.append(f"the log went back from size {latest.size} (the head of event "
                       f"{latest.seq}) to {size}: truncated or re-created")
        head = Head(ltime, ltime if ltime is not None else (latest.order if latest else 0),
                    size, root, event.seq)
        if why:
            conflicts += 1
        self.heads[origin] = Witnessed(head if newer else latest,
                                       (recent + (head,))[-HEAD_MEMORY:], conflicts)
        if not why:
            return NOTHING
        return Effect((), False, None, (f"{CONFLICT}{origin[:60]!r} published a head that "
                                        f"contradicts an earlier one: " + "; ".join(why),))

    def _evict(self) -> set[str]:
        """Keep at most MAX_MARKS words: drop first the marks that name no known node, then
        the oldest ``membership-up`` marks, then the oldest marks."""
        known = self.nodes

        def rank(word: str) -> tuple:
            m = self.marks[word]
            names_known = any(t in known for t in self._targets.get(word, ()))
            return (names_known, m.down, m.key)

        excess = len(self.marks) - MAX_MARKS
        affected: set[str] = set()
        for word in sorted(self.marks, key=rank)[:excess]:
            del self.marks[word]
            affected.update(self._untarget(word))
        return affected

    # -- plain data ------------------------------------------------------------------------

    def copy(self) -> State:
        return from_plain(to_plain(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and to_plain(self) == to_plain(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"State(seq={self.seq}, nodes={len(self.nodes)}, members={len(self.members)}, "
                f"marks={len(self.marks)}, session={self.session})")


def _payload_key(payload: str | None) -> str:
    """A mark's payload as part of its redelivery key, bounded in size."""
    if payload is None or len(payload) <= 128:
        return payload or ""
    from .raw import sha256

    return "sha256:" + sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


# -- the pure interface ------------------------------------------------------------------------


def fold(events: Iterable[ev.Event], state: State | None = None) -> State:
    """Fold events into a new state (``state``, if given, is left as it was)."""
    s = state.copy() if state is not None else State()
    for event in events:
        s.apply(event)
    return s


def live_of(nodes: dict[str, NodeView]) -> dict[str, str]:
    """The live catalog nodes of a view, with their Serf addresses."""
    return {n.name: n.address for n in nodes.values() if n.live and n.in_catalog}


def live_nodes(state: State) -> dict[str, str]:
    """What the live file lists: live node -> its Serf address (catalog nodes only)."""
    return live_of(state.nodes)


# -- plain data, for checkpoints ---------------------------------------------------------------

#: Bump when the plain form changes: checkpoints in another form are refolded, never trusted.
#: 6: the catalog carries its Droonga cluster id; ``role_epoch`` (issue 20).
#: 7: ``heartbeats`` (issue 18). 8: ``heads``, the witnessed heads (issue 21). Older states
#: (a retention anchor's, which cannot be refolded) still load, through :func:`_upgrade`.
PLAIN_VERSION = 8


def to_plain(state: State) -> tuple:
    """State as nested tuples, dicts and strings only (``marshal``-able)."""
    cat = None
    if state.catalog is not None:
        cat = (state.catalog.version, tuple(tuple(n) for n in state.catalog.nodes),
               state.catalog.cluster_id)
    return (
        PLAIN_VERSION,
        state.seq,
        state.max_at,
        cat,
        {k: tuple(v) for k, v in state.members.items()},
        {k: (v.key, v.down) for k, v in state.marks.items()},
        state.session,
        tuple(state.applied),
        state.max_ltime,
        dict(state.counts),
        dict(state.last_at),
        state.role_epoch,
        dict(state.heartbeats),
        {k: (None if w.latest is None else tuple(w.latest), tuple(tuple(h) for h in w.recent),
             w.conflicts) for k, w in state.heads.items()},
    )


def _from_v5(plain: tuple) -> tuple:
    """A version-5 plain state (the release before issue 20) in version 6's form. Retention
    anchors keep the fold's state in the form of the release that compacted, and cannot be
    refolded (their events are gone), so this stays. Its catalog's Droonga cluster id is
    unknown (a catalog is parsed once, and only its nodes were kept): None, until the next
    catalog event; the role epoch starts at 0."""
    cat = plain[3]
    if cat is not None:
        cat = (cat[0], cat[1], None)
    return (6, *plain[1:3], cat, *plain[4:], 0)


def _from_v6(plain: tuple) -> tuple:
    """A version-6 plain state (the release before issue 18's heartbeats) in version 7's form:
    no heartbeat recorded yet."""
    return (7, *plain[1:], {})


def _from_v7(plain: tuple) -> tuple:
    """A version-7 plain state (the release before issue 21) in version 8's form: no head
    seen (no release before kept them)."""
    return (8, *plain[1:], {})


def _upgrade(plain: object) -> object:
    """``plain`` in this release's form when it is an older plain state this release knows
    (each step upgrades one version); anything else unchanged, for the caller to refuse."""
    if isinstance(plain, tuple) and plain and plain[0] == 5 and len(plain) == 11:
        plain = _from_v5(plain)
    if isinstance(plain, tuple) and plain and plain[0] == 6 and len(plain) == 12:
        plain = _from_v6(plain)
    if isinstance(plain, tuple) and plain and plain[0] == 7 and len(plain) == 13:
        plain = _from_v7(plain)
    return plain


def from_plain(plain: object) -> State:
    """Inverse of :func:`to_plain`; ValueError if ``plain`` is not a state of this version
    (or of an older one :func:`_upgrade` knows)."""
    plain = _upgrade(plain)
    if not isinstance(plain, tuple) or not plain or plain[0] != PLAIN_VERSION:
        raise ValueError("not a fold state of this release")
    (_, seq, max_at, cat, members, marks, session, applied, max_ltime, counts, last_at,
     role_epoch, heartbeats, heads) = plain
    s = State.__new__(State)
    s.seq = seq
    s.max_at = max_at
    s.catalog = None if cat is None else Catalog(cat[0], tuple(Node(*n) for n in cat[1]),
                                                 cat[2])
    s.members = {k: MemberState(*v) for k, v in members.items()}
    s.marks = {k: Mark(tuple(v[0]), v[1]) for k, v in marks.items()}
    s.session = session
    s.applied = dict.fromkeys(tuple(k) for k in applied)
    s.max_ltime = max_ltime
    s.counts = dict(counts)
    s.last_at = dict(last_at)
    s.role_epoch = role_epoch
    s.heartbeats = dict(heartbeats)
    s.heads = {k: Witnessed(None if w[0] is None else Head(*w[0]),
                            tuple(Head(*h) for h in w[1]), w[2]) for k, w in heads.items()}
    s._rebuild()
    return s
