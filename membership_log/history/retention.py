"""Retention: ``membership compact`` drops a node store's old events behind an anchor.

The anchor is the last dropped event's seq, hash and receive time, and the fold's state
right after it. ``verify`` checks the kept chain from it; every answer about a time at or
after it is unchanged (the fold resumes from the anchor's state, and the derived incidents,
sessions and counters are kept); a time before it is a one-line error naming the earliest
time kept. Sequence numbers are never reused.

Events go in chunks, each one write transaction that moves the anchor and drops the events
up to it (the event table's delete guard refuses any other delete), so a compaction killed
at any moment leaves a consistent, partly compacted store, and handlers running beside it
wait for one chunk at most. ``VACUUM`` then gives the space back to the file system.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..core import anchors, merkle
from ..core.clock import now_us
from ..core.codec import STATE_FORMAT, encode_state
from ..core.errors import MembershipError
from ..core.raw import SOURCE_ANCHOR
from ..core.records import record
from ..core.timespec import Point, iso
from ..settings import Settings
from ..stores.node import NodeStore
from ..stores.protocol import NODE, Anchor
from ..stores.setup import open_node_store
from . import driver as derive
from .publish import publisher

#: A progress callback: ``progress(done, total)``.
Progress = Callable[[int, int], None]

#: ``dropped`` events, the ``anchor`` seq after it and its time, the file's bytes before and
#: after (store plus write-ahead log).
Compacted = record("Compacted", "dropped anchor anchor_at size_before size_after")

CHUNK = 100_000
COMPARE_BATCH = 50_000


def _iso(us: int | None) -> str:
    """A receive time of the range to drop; none if no event of it is left (a damaged
    log): ``iso(None)`` would be a TypeError instead of the refusal's message."""
    return iso(us) if us is not None else "(no event)"


def _size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def _require_shipped(store: NodeStore, url: str, first: int, last: int,
                     progress: Progress | None = None) -> None:
    """Refuse unless the central store at ``url`` holds events first..last of this node with
    the same hashes."""
    from ..stores.central import CentralStore

    origin = store.origin_name()
    if origin is None:
        raise MembershipError("this store has no event with an observer: nothing names it in "
                              "a central store")
    with CentralStore(url) as central:
        for lo in range(first, last + 1, COMPARE_BATCH):
            hi = min(last, lo + COMPARE_BATCH - 1)
            mine = [(s, bytes(h)) for s, h in store.hashes(NODE, lo, hi)]
            theirs = [(s, bytes(h)) for s, h in central.hashes(origin, lo, hi)]
            if mine != theirs:
                have = dict(theirs)
                bad = next((s for s, h in mine if have.get(s) != h), lo)
                why = "lacks" if bad not in have else "holds another version of"
                raise MembershipError(f"the central store {why} event {bad} of {origin}; "
                                      f"nothing compacted (run: membership ship --to URL)")
            if progress is not None:
                progress(hi - first + 1, 2 * (last - first + 1))


#: What a compaction would drop (``compact --dry-run``): ``events`` in seqs ``first..last``,
#: received from ``first_at`` to ``last_at``, about ``bytes`` of the store file.
Plan = record("Plan", "events first last first_at last_at bytes")


def _last_to_drop(store: NodeStore, before: Point) -> int:
    head = store.head_seq(NODE)
    if before.seq is not None:
        return min(before.seq - 1, head)
    return derive.seq_at_time(store, NODE, before.us - 1)


def plan(settings: Settings, before: Point) -> Plan:
    """What ``compact --before`` would drop, changing nothing."""
    store = open_node_store(settings.db_url, "compact")
    try:
        with store.read():
            low = store.first_seq(NODE) - 1
            last = _last_to_drop(store, before)
            if last <= low:
                return Plan(0, None, None, None, None, 0)
            n, first_at, last_at, size = store.range_stats(low, last)
            return Plan(n, low + 1, last, first_at, last_at, size)
    finally:
        store.close()


def compact(settings: Settings, before: Point, require_shipped: str | None = None,
            force: bool = False, progress: Progress | None = None) -> Compacted:
    """Drop the events received before ``before`` (or before event ``@N``). Without
    ``require_shipped`` it refuses unless ``force`` says the events may go unshipped."""
    store = open_node_store(settings.db_url, "compact")
    path = store.path
    size_before = _size(path)
    publish = publisher(settings.live_file, settings.live_format)
    try:
        # Derived state first: the anchors come from checkpoints and the fold.
        derive.catch_up(store, NODE, publish)
        anchor = store.anchor(NODE)
        low = anchor.seq if anchor is not None else 0
        last = _last_to_drop(store, before)
        if last <= low:
            at = anchor.received_us if anchor is not None else None
            return Compacted(0, low, at, size_before, size_before)
        if require_shipped:
            _require_shipped(store, require_shipped, low + 1, last, progress)
        elif not force:
            n, first_at, last_at, size = store.range_stats(low, last)
            raise MembershipError(
                f"compact would drop {n} event(s) ({low + 1}..{last}, received "
                f"{_iso(first_at)} to {_iso(last_at)}, about {size:,} bytes) that no central "
                f"store was shown to hold: ship them first (membership ship --to URL, then "
                f"compact --require-shipped URL), see what would go with --dry-run, or give "
                f"--force to drop them unshipped")
        dropped = 0
        end = low
        # The log's Merkle frontier at each new anchor, so that every event kept stays
        # provable (core/merkle "After compaction"); None for a log compacted before it kept
        # a tree (its first events are gone: nothing can compute one any more).
        if anchor is None:
            front: tuple | None = ()
        else:
            front = None if anchor.frontier is None else merkle.decode(anchor.frontier)[1]
        while end < last:
            start, end = end, min(last, end + CHUNK)
            state = derive.start(store, NODE, end)
            hashes = store.hashes(NODE, start + 1, end)
            if len(hashes) != end - start:
                raise MembershipError(f"events {start + 1}..{end} are not all in the log: it is "
                                      f"damaged (run: membership verify); nothing more "
                                      f"compacted")
            hash_ = hashes[-1][1]
            received = store.received_at(NODE, end)
            assert received is not None  # event `end` is there: its hash was just read
            if front is not None:
                front = merkle.extend(front, start, [merkle.leaf_hash(bytes(h))
                                                     for _, h in hashes])
            with store.write():
                # The anchor, then its record in the log, in one transaction: a kill at any
                # moment leaves both or neither (the chain covers the anchor from now on).
                new = Anchor(end, hash_, received, state.max_at, STATE_FORMAT,
                             encode_state(state), store.catalog_digest(end),
                             None if front is None else merkle.encode(front, end))
                dropped += store.drop_through(new)
                store.append([(now_us(), "", SOURCE_ANCHOR, b"", anchors.encode(new))])
            if progress is not None:
                progress(end - low, last - low)
        derive.catch_up(store, NODE, publish)  # the anchors' records, folded as nothing
        anchor = store.anchor(NODE)
        assert anchor is not None  # just moved: last > low, so at least one chunk ran
        try:
            store.conn.execute("VACUUM")
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as e:  # noqa: BLE001 - the events are gone either way; say so
            raise MembershipError(f"compacted {dropped} events, but the file could not be "
                                  f"shrunk: {e} (run membership compact again later)") from None
        return Compacted(dropped, anchor.seq, anchor.received_us, size_before, _size(path))
    finally:
        store.close()


def cover(store: NodeStore) -> int | None:
    """Record a retention anchor that its log does not record yet (one made by a release
    before 0005, which kept no record) as an ``anchor`` event, so that verify holds it to
    the chain from now on. Trusts the anchor as it stands at this upgrade; returns the
    anchor's seq if it recorded one."""
    anchor = store.anchor(NODE)
    if anchor is None or anchors.check(anchor, store.latest_anchors(NODE)) is None:
        return None
    with store.write():
        if anchor.catalog_sha256 is None:
            digest = store.catalog_digest(anchor.seq)
            if digest is not None:
                anchor = store.set_anchor_catalog(digest)
        store.append([(now_us(), "", SOURCE_ANCHOR, b"", anchors.encode(anchor))])
    return anchor.seq
