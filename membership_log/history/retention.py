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
from collections import namedtuple

from ..core.errors import MembershipError
from ..core.timespec import Point
from ..settings import Settings
from ..stores.protocol import NODE
from ..stores.setup import open_node_store
from . import driver as derive
from .publish import publisher

#: ``dropped`` events, the ``anchor`` seq after it and its time, the file's bytes before and
#: after (store plus write-ahead log).
Compacted = namedtuple("Compacted", "dropped anchor anchor_at size_before size_after")

CHUNK = 100_000
COMPARE_BATCH = 50_000


def _size(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def _require_shipped(store, url: str, first: int, last: int, progress=None) -> None:
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


def compact(settings: Settings, before: Point, require_shipped: str | None = None,
            progress=None) -> Compacted:
    """Drop the events received before ``before`` (or before event ``@N``)."""
    store = open_node_store(settings.db_url, "compact")
    path = store.path
    size_before = _size(path)
    try:
        # Derived state first: the anchors come from checkpoints and the fold.
        derive.catch_up(store, NODE, publisher(settings.live_file, settings.live_format))
        anchor = store.anchor()
        low = anchor.seq if anchor is not None else 0
        head = store.head_seq()
        if before.seq is not None:
            last = min(before.seq - 1, head)
        else:
            last = derive.seq_at_time(store, NODE, before.us - 1)
        if last <= low:
            at = anchor.max_at if anchor is not None else None
            return Compacted(0, low, at, size_before, size_before)
        if require_shipped:
            _require_shipped(store, require_shipped, low + 1, last, progress)
        dropped = 0
        end = low
        while end < last:
            end = min(last, end + CHUNK)
            state = derive.start(store, NODE, end)
            (seq, hash_), = store.hashes(NODE, end, end)
            received = store.received_at(NODE, end)
            with store.write():
                dropped += store.drop_through(end, bytes(hash_), received, state)
            if progress is not None:
                progress(end - low, last - low)
        anchor = store.anchor()
        try:
            store.conn.execute("VACUUM")
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as e:  # noqa: BLE001 - the events are gone either way; say so
            raise MembershipError(f"compacted {dropped} events, but the file could not be "
                                  f"shrunk: {e} (run membership compact again later)") from None
        return Compacted(dropped, anchor.seq, anchor.max_at, size_before, _size(path))
    finally:
        store.close()
