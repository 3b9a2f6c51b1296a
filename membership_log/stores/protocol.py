"""What every store answers: the roles, the retention anchor, and the :class:`Store` protocol.

A store has a role, recorded in it when it is made: a **node** store holds one node's own log
(written by its handler), a **central** store every node's shipped logs, each under its
origin (the node's name). The derived tables are the same in both, keyed by origin; a node
store keeps its own under :data:`NODE`.

This module is on the handler's hot path: the protocol is an abstract base class (``abc`` is
loaded at interpreter start-up; ``typing`` is not, and costs the handler a millisecond).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

#: mypy takes any name ``TYPE_CHECKING`` as true; this one spares the hot path ``typing``.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any

    from ..core.raw import RawEvent

#: The origin under which a node store keeps the derived rows of its own log (a central
#: store uses each node's name; no node is named '').
NODE = ""
ROLE_NODE = "node"
ROLE_CENTRAL = "central"


class Anchor(tuple):
    """The retention anchor of one log: the last dropped event's ``seq``, ``hash`` and
    ``received_us``, the running maximum receive time ``max_at``, the fold's state after it
    (``format``, ``state`` blob), ``catalog_sha256``, the SHA-256 of the last catalog
    recorded at or before it (None if none was), and ``frontier``, the log's Merkle frontier
    at ``seq`` (:func:`membership_log.core.merkle.encode`; None for an anchor made before
    the log kept a tree: its tree cannot be computed any more)."""

    __slots__ = ()

    def __new__(cls, seq: int, hash_: bytes, received_us: int, max_at: int | None, fmt: str,
                state: bytes, catalog_sha256: bytes | None = None,
                frontier: bytes | None = None) -> Anchor:
        return tuple.__new__(cls, (seq, bytes(hash_), received_us, max_at, fmt, bytes(state),
                                   None if catalog_sha256 is None else bytes(catalog_sha256),
                                   None if frontier is None else bytes(frontier)))

    seq = property(lambda self: self[0])
    hash = property(lambda self: self[1])
    received_us = property(lambda self: self[2])
    max_at = property(lambda self: self[3])
    format = property(lambda self: self[4])
    state = property(lambda self: self[5])
    catalog_sha256 = property(lambda self: self[6])
    frontier = property(lambda self: self[7])


class Scope(tuple):
    """The logs a question covers: ``origins`` to read, whether their answers ``merge``
    cluster-wide (a central store without ``--observer``), and ``observer``, on a node
    store, the one observer whose events count (None: all). Asked of the store
    (:meth:`Store.scope`), so that no caller branches on its role."""

    __slots__ = ()

    def __new__(cls, origins: Iterable[str], merged: bool, observer: str | None) -> Scope:
        return tuple.__new__(cls, (tuple(origins), merged, observer))

    origins = property(lambda self: self[0])
    merged = property(lambda self: self[1])
    observer = property(lambda self: self[2])


class Store(abc.ABC):
    """What every store answers, whatever its role (a node store over the stdlib, a central
    store over SQLAlchemy). Every reader takes the log's ``origin`` first (:data:`NODE` on a
    node store). Writers of the raw log are the role's own (a node store's ``append``, a
    central store's ``append_rows``); the derived tables are written through
    :meth:`write_derived` by the one fold driver. Readers inside :meth:`write` or
    :meth:`read` see that transaction's snapshot.

    Incident rows are plain tuples in :data:`~membership_log.core.incidents.Row` order:
    ``(node, down_at, up_at, cause, observer, down_seq, up_seq)``.
    """

    #: :data:`ROLE_NODE` or :data:`ROLE_CENTRAL`, as recorded in the store.
    role: str
    #: How the store is named in messages (a path, or a URL with its password masked).
    label: str

    # -- life cycle --------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def write(self) -> AbstractContextManager[Any]:
        """A context manager: one write transaction (errors as :class:`StoreError`)."""

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[Any]:
        """A context manager: one consistent read snapshot for several queries."""

    # -- which logs ---------------------------------------------------------------------------

    @abc.abstractmethod
    def origins(self) -> list[str]:
        """The logs the store holds."""

    @abc.abstractmethod
    def scope(self, observer: str | None) -> Scope:
        """The logs a question about ``observer`` (None: the store's whole view) covers.
        A central store refuses an observer whose log it does not hold (naming those it
        holds); a node store leaves checking the name to the caller (its observers are in
        the fold's state)."""

    # -- the raw log ---------------------------------------------------------------------------

    @abc.abstractmethod
    def head(self, origin: str) -> tuple[int, bytes]:
        """The last event's seq and hash; after a compaction that dropped everything, the
        anchor's; ``(0, GENESIS)`` for an empty log."""

    def head_seq(self, origin: str) -> int:
        return self.head(origin)[0]

    @abc.abstractmethod
    def first_seq(self, origin: str) -> int:
        """The first event kept: 1, or the one after the retention anchor."""

    @abc.abstractmethod
    def anchor(self, origin: str) -> Anchor | None:
        """The retention anchor (never on a central store: ship writes none)."""

    @abc.abstractmethod
    def events(self, origin: str, after: int = 0,
               until: int | None = None) -> Iterator[RawEvent]:
        """:data:`~membership_log.core.raw.RawEvent` after ``after`` (through ``until``), in
        seq order, streamed."""

    @abc.abstractmethod
    def rows(self, origin: str, after: int = 0, until: int | None = None) -> Iterator[tuple]:
        """Events exactly as stored ``(seq, received_us, observer, source, env blob, stdin,
        hash)``, streamed (verify checks the chain over the stored bytes)."""

    @abc.abstractmethod
    def hashes(self, origin: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """``(seq, hash)`` of events first..last."""

    @abc.abstractmethod
    def received_at(self, origin: str, seq: int) -> int | None:
        """The receive time of event ``seq`` (the anchor's, for the anchor's seq)."""

    @abc.abstractmethod
    def last_received_by(self, origin: str, us: int, after: int, until: int) -> int | None:
        """The last event in ``after+1..until`` received at or before ``us`` (None: none)."""

    @abc.abstractmethod
    def latest_anchors(self, origin: str) -> list:
        """The anchor records the log holds (events of source ``anchor``), newest first, as
        ``(seq, stdin)``."""

    # -- the log's Merkle tree (SPEC "Witnessed history") ----------------------------------

    @abc.abstractmethod
    def tree(self, origin: str) -> tuple[int, bytes] | None:
        """``(size, frontier blob)`` as the append path keeps it (None: none kept)."""

    @abc.abstractmethod
    def put_tree(self, origin: str, size: int, frontier: bytes) -> None:
        """Keep a log's frontier blob, inside :meth:`write`."""

    def tree_base(self, origin: str) -> tuple[int, tuple] | None:
        """``(size, frontier)`` the log's tree grows from: the retention anchor's frontier, or
        the empty tree. None if the log was compacted before it kept a tree (its first
        events, and so its tree, are gone); StoreError if the anchor's frontier is not the
        tree at the anchor."""
        from ..core import merkle
        from ..core.errors import StoreError

        anchor = self.anchor(origin)
        if anchor is None:
            return 0, ()
        if anchor.frontier is None:
            return None
        try:
            size, front = merkle.decode(anchor.frontier)
            why = f"size {size}"
        except ValueError as e:
            size, why = -1, str(e)
        if size != anchor.seq:
            raise StoreError(f"store {self.label}: the retention anchor's Merkle frontier "
                             f"is not the tree at its event {anchor.seq} ({why}); restore "
                             f"the store from a backup or the central store")
        return size, front

    def log_tree(self, origin: str, at: Iterable[int] = ()) -> tuple[int, tuple, dict] | None:
        """``(size, frontier, roots)`` computed from the log itself: :meth:`tree_base`
        extended by the leaf of every kept event, read a block at a time, with ``roots``, the
        root at each size in ``at`` that the pass goes through (from the anchor's size to the
        head). None if the log was compacted before it kept a tree. What the append paths
        fall back on when the kept frontier does not match the log and what ``rebuild``
        keeps (``verify`` computes the same in its own pass, on every core)."""
        from ..core import merkle
        from ..core.errors import StoreError

        base = self.tree_base(origin)
        if base is None:
            return None
        size, front = base
        head = self.head_seq(origin)
        stops = sorted({s for s in at if size <= s <= head} | {head})
        roots = {}
        for stop in stops:
            while size < stop:
                last = min(stop, size + merkle.CHUNK)
                rows = self.hashes(origin, size + 1, last)
                if len(rows) != last - size or rows[0][0] != size + 1:
                    raise StoreError(f"store {self.label}: events {size + 1}..{last} are not "
                                     f"all there; the log is damaged (run: membership verify)")
                front = merkle.extend(front, size, [merkle.leaf_hash(bytes(h))
                                                    for _, h in rows])
                size = last
            roots[stop] = merkle.root(front, stop)
        return size, front, roots

    def _tree_after(self, origin: str, seq: int, hashes: list) -> bytes | None:
        """The frontier blob once events with ``hashes`` follow event ``seq``, from the kept
        one when it is the tree at ``seq`` (the usual case: one lookup and a hash or two per
        event), else from the log (a store upgraded without its trees, a damaged row). None
        if the log cannot have a tree (compacted before it kept one, or damaged). For the
        append paths, inside their write transaction."""
        from ..core import frontier as merkle  # the hot path: not the proofs

        kept = self.tree(origin)
        front = None
        if kept is not None and kept[0] == seq:
            try:
                size, front = merkle.decode(kept[1])
            except ValueError:
                front = None
            else:
                if size != seq:
                    front = None
        if front is None:
            if seq == 0:
                front = ()
            else:
                from ..core.errors import StoreError

                try:
                    computed = self.log_tree(origin)
                except StoreError:
                    # A damaged log (verify names it): the events are still recorded, and
                    # the tree is left as it is rather than the events spooled for ever.
                    return None
                if computed is None:
                    return None
                front = computed[1]
        front = merkle.extend(front, seq, [merkle.leaf_hash(h) for h in hashes])
        return merkle.encode(front, seq + len(hashes))

    @abc.abstractmethod
    def witnessed_heads(self, head_origin: str | None = None, after: int = -1,
                        through: int | None = None, log: str | None = None) -> list[tuple]:
        """Heads the logs of this store recorded (the derived ``witness_head`` rows), as
        ``(origin, seq, received_us, observer, head_origin, size, root, conflict)`` ordered by
        ``(head_origin, size, origin, seq)``: of ``head_origin`` only (None: every origin),
        of sizes ``after < size <= through``, recorded in the log ``log`` only (None: in
        any)."""

    # -- derived state ----------------------------------------------------------------------

    @abc.abstractmethod
    def snapshot(self, origin: str) -> tuple | None:
        """``(seq, format, state blob, live bytes)`` of the head snapshot, or None."""

    @abc.abstractmethod
    def checkpoint_at_or_before(self, origin: str, seq: int) -> tuple | None:
        """``(seq, max_at, State)`` of the latest usable checkpoint (or the anchor) at or
        before ``seq``; None if there is none."""

    @abc.abstractmethod
    def stretch_received_by(self, origin: str, us: int) -> tuple[int, int] | None:
        """``(after, through)``: the last stretch between two checkpoints (``after`` the
        previous one, or the anchor, or 0) holding an event received at or before ``us``;
        None if no checkpointed stretch does."""

    @abc.abstractmethod
    def last_checkpoint(self, origin: str) -> tuple[int, int | None]:
        """``(seq, bytes)`` of the latest checkpoint; ``(the anchor's seq or 0, None)`` if
        there is none."""

    @abc.abstractmethod
    def checkpoints(self, origin: str) -> list[tuple]:
        """Every checkpoint as ``(seq, max_at, min_at, format, state blob)``."""

    @abc.abstractmethod
    def incidents(self, origin: str, since_us: int | None = None, until_us: int | None = None,
                  nodes: tuple = (None, None), by_node: bool = False) -> list[tuple]:
        """Incident rows that began at or before ``until_us`` and had not ended before
        ``since_us``, of nodes named in ``[nodes[0], nodes[1])`` (None: open), sorted by
        ``(down_at, node)`` (``by_node``: a window from the start may come node by node
        instead, each node's in the order they began, which spares an audit a sort)."""

    @abc.abstractmethod
    def sessions(self, origin: str) -> list[tuple]:
        """``(seq, observer, started_at, gap_from)`` of every observer session."""

    @abc.abstractmethod
    def write_derived(self, origin: str, batch: Any) -> None:
        """Store a :class:`membership_log.history.driver.Batch`, inside :meth:`write`."""

    @abc.abstractmethod
    def truncate_derived(self, origin: str, seq: int) -> None:
        """Make the derived rows say exactly what the fold knew after event ``seq``, inside
        :meth:`write`: later checkpoints, incidents, sessions and witnessed heads go,
        incidents closed later are open again, the snapshot goes."""

    # -- operations' own state -----------------------------------------------------------------

    @abc.abstractmethod
    def alert_deliveries(self, target: str, origin: str) -> dict[tuple, tuple]:
        """``(node, ident) -> (firing_at, resolved_at)`` of what was delivered to ``target``."""

    @abc.abstractmethod
    def record_alert_deliveries(self, target: str, origin: str, rows: list[tuple]) -> None:
        """Record ``(node, ident, firing_at, resolved_at)`` rows in one short transaction; a
        row already there keeps its first ``firing_at``."""
