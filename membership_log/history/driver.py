"""The one fold driver, and the derived tables it keeps.

Every command that needs the fold over a stretch of a log comes here: the handler's
catch-up, ``rebuild``, ``import``, ``ship`` (the central store's tables), ``verify``,
``state --at``, ``replay`` and ``audit``. The driver starts from the nearest usable checkpoint
at or before the wanted point and folds forward (:func:`start`, :func:`forward`); the
:class:`Keeper` turns the steps into derived rows (checkpoints, incidents, observer sessions,
the head snapshot) for whichever store is being kept, through the store's
``write_derived(origin, batch)``.

A store here is anything with the reader protocol (``events``, ``checkpoint_at_or_before``,
``checkpoint_by_time``, ``times_after``, ``head_seq``, ``first_seq``, ``anchor``,
``incidents``, ``snapshot``, ``sessions``): a node store
(:mod:`membership_log.stores.node`) or a central one (:mod:`membership_log.stores.central`).

This module is on the handler's hot path: stdlib and the pure core only.
"""

from __future__ import annotations

from ..core import events
from ..core import fold as project
from ..core.codec import decode_state, encode_state
from ..core.errors import MembershipError
from ..render import livefile

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..core.incidents import Reducer
    from ..core.raw import RawEvent
    from ..core.timespec import Point
    from ..stores.protocol import Store

#: Checkpoints of the fold's state are spaced by the bytes they cost: the next comes once
#: the events since the last one "paid" for its size at this many bytes an event, so a
#: 200-member cluster's 8 KB state is kept every ~2,700 events and a 3-node one's every 250;
#: never sooner than CHECKPOINT_MIN_EVERY events, never later than CHECKPOINT_MAX_EVERY (a
#: ``state --at`` folds at most one stretch).
CHECKPOINT_BYTES_PER_EVENT = 3
CHECKPOINT_MIN_EVERY = 250
CHECKPOINT_MAX_EVERY = 5000


def checkpoint_due(last_seq: int, last_size: int | None) -> int:
    """The seq at which the checkpoint after one at ``last_seq`` (of ``last_size`` bytes;
    None: there is none yet) is due."""
    if last_size is None:
        return last_seq + CHECKPOINT_MIN_EVERY
    every = -(-last_size // CHECKPOINT_BYTES_PER_EVENT)
    return last_seq + min(max(every, CHECKPOINT_MIN_EVERY), CHECKPOINT_MAX_EVERY)

#: Events folded per write transaction when catching up a long log, so that a handler
#: arriving meanwhile waits for one chunk, never for the whole log.
CHUNK = 20_000


class OutOfRange(MembershipError):
    """A point in a log that it does not hold (before its retention anchor, after its head)."""


def parse(raw: RawEvent) -> events.Event:
    """:func:`events.parse`, which never raises; this guard makes it certain that no single
    event can stop a fold."""
    try:
        return events.parse(raw)
    except Exception as e:  # noqa: BLE001 - a bug must not freeze the live file
        return events.Event(raw.seq, raw.received_us, raw.observer, events.UNKNOWN, None, None,
                            (), None, None, (f"not interpreted ({type(e).__name__}: {e})",))


def forward(state: project.State,
            raws: Iterable[RawEvent]) -> Iterator[tuple[RawEvent, events.Event, project.Effect]]:
    """Fold ``raws`` into ``state`` (in place), yielding ``(raw, event, effect)`` for each.
    No event stops the fold: one that cannot be folded is folded as nothing, with a warning."""
    for raw in raws:
        event = parse(raw)
        try:
            effect = state.apply(event)
        except Exception as e:  # noqa: BLE001
            state._rebuild()  # the indexes may be half-updated; the records are the truth
            state.seq = raw.seq
            effect = project.Effect((), False, None,
                                    (f"not folded ({type(e).__name__}: {e})",))
        yield raw, event, effect


def start(store: Store, origin: str, seq: int) -> project.State:
    """The state right after event ``seq``: the nearest checkpoint at or before it (or the
    retention anchor), folded forward."""
    first = store.first_seq(origin)
    if seq < first - 1:
        raise OutOfRange(f"event {seq} was compacted away: the earliest event kept is "
                         f"{first} (state from @{first - 1} on)")
    point = store.checkpoint_at_or_before(origin, seq)
    state = point[2] if point is not None else project.State()
    if state.seq < seq:
        snap = store.snapshot(origin)  # the head, usually: "now" is one decode away
        if snap is not None and state.seq < snap[0] <= seq:
            head = decode_state(snap[1], bytes(snap[2]))
            if head is not None and head.seq == snap[0]:
                state = head
    if state.seq < seq:
        for _ in forward(state, store.events(origin, state.seq, seq)):
            pass
    return state


def seq_at_time(store: Store, origin: str, us: int) -> int:
    """The last event (by seq) received at or before ``us``: the log's state at time ``us``
    is the state right after it (SPEC: "the last event at or before T"). 0 if every event
    was received later.

    Receive times can step back or jump ahead with the clock; this is still well defined,
    and monotone in ``us``: one event received "in 2099" does not hide the events after it
    from a question about now. The search looks at the events after the last checkpoint,
    then at the last stretch between checkpoints that holds an event received by ``us``
    (each checkpoint keeps the earliest receive time of its stretch): an index lookup and a
    scan of one stretch, however long the log. Before the retention anchor: the anchor's
    seq if the anchor's event was received by ``us``, else :class:`OutOfRange` naming the
    earliest time kept."""
    head = store.head_seq(origin)
    tail = store.last_checkpoint(origin)[0]
    if head > tail:
        found = store.last_received_by(origin, us, tail, head)
        if found is not None:
            return found
    stretch = store.stretch_received_by(origin, us)
    if stretch is not None:
        found = store.last_received_by(origin, us, *stretch)
        if found is not None:
            return found
    anchor = store.anchor(origin)
    if anchor is not None:
        if anchor.received_us <= us:
            return anchor.seq
        from ..core.timespec import iso

        raise OutOfRange(f"the log before {iso(anchor.received_us)} was compacted: the "
                         f"earliest time kept is {iso(anchor.received_us)}")
    return 0


def point_seq(store: Store, origin: str, point: Point | None) -> int:
    """The seq a :data:`~membership_log.core.timespec.Point` names in one log (None: the
    head); :class:`OutOfRange` for an event compacted away or past the head."""
    head = store.head_seq(origin)
    if point is None:
        return head
    if point.seq is not None:
        first = store.first_seq(origin)
        if point.seq < first - 1:
            raise OutOfRange(f"event {point.seq} was compacted away: the earliest event kept "
                             f"is {first} (ask for @{first - 1} or later)")
        if point.seq > head:
            raise OutOfRange(f"there is no event {point.seq}: the log's last event is "
                             f"{head} (@{head})")
        return point.seq
    return seq_at_time(store, origin, point.us)


class Batch:
    """Derived rows to write for one log: ``checkpoints`` ``(seq, max_at, state blob)``;
    ``incidents`` rows to insert or replace, in
    :data:`~membership_log.core.incidents.Row` order; ``closed`` ``(node, up_seq, up_at)``:
    the node's open incident, stored earlier, ended; ``sessions`` ``(seq, observer,
    started_at, gap_from)``; ``heads`` ``(seq, received_us, observer, head_origin, size,
    root, conflict)``: the ``membership-head`` events, with the fold's conflict warning or
    None; ``snapshot`` ``(seq, state blob, live bytes)`` or None."""

    __slots__ = ("checkpoints", "incidents", "closed", "sessions", "heads", "snapshot")

    def __init__(self) -> None:
        self.checkpoints: list = []
        self.incidents: list = []
        self.closed: list = []
        self.sessions: list = []
        self.heads: list = []
        self.snapshot: tuple[int, bytes, bytes] | None = None


class Keeper:
    """Keeps one log's derived rows while its steps go by (:meth:`see`), handing them over in
    batches (:meth:`take`). ``last``: the log's latest checkpoint ``(seq, bytes)`` (the
    store's :meth:`~membership_log.stores.protocol.Store.last_checkpoint`), from which the
    next is due; None: keep no checkpoints (an audit's or verify's fold in memory)."""

    def __init__(self, last: tuple[int, int | None] | None = None) -> None:
        # made at the first liveness change: most events have none
        self.reducer: Reducer | None = None
        self.batch = Batch()
        self.opened: dict = {}
        self.due = None if last is None else checkpoint_due(*last)

    def see(self, state: project.State, raw: RawEvent, event: events.Event,
            effect: project.Effect) -> None:
        if effect.changes:
            if self.reducer is None:
                from ..core.incidents import Reducer

                self.reducer = Reducer()
            opened, closed = self.reducer.feed(event, effect.changes, state.nodes)
            for row in opened:
                self.opened[(row.node, row.down_seq)] = row
            for row in closed:
                key = (row.node, row.down_seq)
                if key in self.opened:  # opened in this batch: kept closed
                    self.opened[key] = row
                else:  # opened before this batch: closed where it is stored
                    self.batch.closed.append((row.node, row.up_seq, row.up_at))
        if effect.restart is not None:
            observer, gap_from = effect.restart
            self.batch.sessions.append((raw.seq, observer, raw.received_us, gap_from))
        if event.name == events.HEAD_EVENT and event.kind == events.USER:
            from ..core.witness import CONFLICT, parse_head  # only for a head event

            head = parse_head(event.payload)
            if head is not None:
                conflict = next((w for w in effect.warnings if w.startswith(CONFLICT)), None)
                self.batch.heads.append((raw.seq, raw.received_us, raw.observer, head[0],
                                         head[1], bytes.fromhex(head[2]), conflict))
        if self.due is not None and raw.seq >= self.due:
            blob = encode_state(state)
            self.batch.checkpoints.append((raw.seq, state.max_at, blob))
            self.due = checkpoint_due(raw.seq, len(blob))

    def take(self, state: project.State | None = None, live: bytes | None = None) -> Batch:
        """The rows gathered since the last take (and, with ``state``, the head snapshot)."""
        batch = self.batch
        batch.incidents.extend(self.opened.values())
        self.opened = {}
        if state is not None:
            if live is None:
                live = livefile.render_view(state.nodes)
            batch.snapshot = (state.seq, encode_state(state), live)
        self.batch = Batch()
        return batch


def resume(store: Store, origin: str) -> tuple[project.State, bytes | None]:
    """Where derived state stands: the head snapshot's state and live bytes; if it is missing
    or unusable, the nearest checkpoint (or nothing), with every derived row after that point
    dropped so that refolding from it cannot leave stale rows. Call inside a write
    transaction."""
    snap = store.snapshot(origin)
    if snap is not None:
        state = decode_state(snap[1], bytes(snap[2]))
        if state is not None and state.seq == snap[0]:
            return state, bytes(snap[3])
    head = store.head_seq(origin)
    point = store.checkpoint_at_or_before(origin, head)
    state = point[2] if point is not None else project.State()
    store.truncate_derived(origin, state.seq)
    return state, None


def advance(store: Store, origin: str, raws: list[RawEvent]) -> project.State:
    """Keep one log's derived rows for ``raws``, events just appended after the ones already
    folded (inside the caller's write transaction, so the events and what they give commit
    together). If the derived state lags, the stored events before ``raws`` are folded
    first."""
    state, _ = resume(store, origin)
    keeper = Keeper(store.last_checkpoint(origin))
    first = raws[0].seq if raws else state.seq + 1
    if state.seq < first - 1:
        for raw, event, effect in forward(state, store.events(origin, state.seq, first - 1)):
            keeper.see(state, raw, event, effect)
    for raw, event, effect in forward(state, (r for r in raws if r.seq > state.seq)):
        keeper.see(state, raw, event, effect)
    store.write_derived(origin, keeper.take(state))
    return state


def catch_up(store: Store, origin: str, publish: Callable[[project.State], None] | None = None,
             progress: Callable[[int, int], None] | None = None,
             chunk: int = CHUNK) -> tuple[project.State, bytes, dict]:
    """Fold every event after the derived state into the derived tables.

    Chunk by chunk, each one write transaction. ``publish(state)``, if given, is called
    inside the last one: that is where the shell writes the live file, so that handlers
    running side by side write it one at a time, each from a state at least as new as the
    last, and it never moves backwards. The driver itself writes no file. Returns ``(state,
    live bytes, {seq: warnings})``; the live bytes (those the snapshot keeps) are of the
    default format.
    """
    warnings: dict[int, tuple] = {}
    done = 0
    while True:
        with store.write():
            state, live = resume(store, origin)
            head = store.head_seq(origin)
            stop = min(head, state.seq + chunk)
            total = head - state.seq + done
            keeper = Keeper(store.last_checkpoint(origin))
            moved = stop > state.seq
            for raw, event, effect in forward(state, store.events(origin, state.seq, stop)):
                keeper.see(state, raw, event, effect)
                if event.warnings or effect.warnings:
                    warnings[raw.seq] = event.warnings + effect.warnings
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(done, total)
            if moved or live is None:
                live = livefile.render_view(state.nodes)
                store.write_derived(origin, keeper.take(state, live))
            finished = stop >= head
            if finished and publish is not None:
                publish(state)
        if finished:
            if progress is not None:
                progress(done, done)
            return state, live, warnings
