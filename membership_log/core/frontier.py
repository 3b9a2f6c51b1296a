"""The frontier of an RFC 6962 Merkle tree: what each log keeps, and what its append path does.

The part of :mod:`membership_log.core.merkle` that ``membership handle`` runs for every
event (leaf and node hashes, :func:`append` / :func:`extend`, :func:`root`, the blob a store
keeps): on its own so that the hot path loads a few functions rather than the proofs too
(a third of the bytes to load). :mod:`membership_log.core.merkle` re-exports every name
here; read its docstring for the tree, the frontier and the proofs. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .raw import sha256  # the builtin SHA-256, imported the hot-path way (see core/raw.py)

HASH_SIZE = 32
#: RFC 6962: the root of the empty tree is the hash of the empty string.
EMPTY_ROOT = sha256(b"").digest()
#: Tree sizes are seqs, signed 64-bit in the stores.
MAX_SIZE = 2**63 - 1


def leaf_hash(event_hash: bytes) -> bytes:
    """RFC 6962 leaf: ``SHA-256(0x00 || event hash)``. The prefix keeps a leaf from ever
    passing for an inner node, or the reverse."""
    return sha256(b"\x00" + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 inner node: ``SHA-256(0x01 || left || right)``."""
    return sha256(b"\x01" + left + right).digest()


def _check(frontier: tuple[bytes, ...], size: int) -> None:
    if not 0 <= size <= MAX_SIZE or len(frontier) != size.bit_count():
        raise ValueError(f"a frontier of {len(frontier)} hashes cannot be a tree of size {size}")


def append(frontier: tuple[bytes, ...], size: int, leaf: bytes) -> tuple[bytes, ...]:
    """The frontier of size ``size + 1``: ``leaf`` added at index ``size``.

    Each trailing 1 bit of ``size`` is a perfect subtree the new leaf completes, so it merges
    with the smallest roots; on average one node hash per append (O(log n) at worst).
    """
    _check(frontier, size)
    keep = len(frontier)
    while size & 1:
        keep -= 1
        leaf = node_hash(frontier[keep], leaf)
        size >>= 1
    return frontier[:keep] + (leaf,)


def extend(frontier: tuple[bytes, ...], size: int, leaves: Sequence[bytes]) -> tuple[bytes, ...]:
    """:func:`append` of each of ``leaves`` in turn (a batch of events): :func:`join` of
    their :func:`blocks`."""
    return join(frontier, size, blocks(size, leaves))


def blocks(size: int, leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """``leaves``, to go in after leaf ``size - 1``, as the largest perfect subtrees that fit
    where the tree ends: ``(level, root)`` in order, each hashed level by level
    (:func:`root_of`). About three times faster than one append per leaf, which counts in
    verify's pass over a million events; and it needs no frontier, only where the leaves
    start, so each worker of a verify hashes its own stretch of the log (:class:`Stretch`)."""
    if not 0 <= size <= MAX_SIZE - len(leaves):
        raise ValueError(f"no tree of size {size} + {len(leaves)}")
    out = []
    done, total = 0, len(leaves)
    while done < total:
        # A subtree of 2**level leaves may start only where size is a multiple of it.
        level = min((total - done).bit_length() - 1, 16,
                    (size & -size).bit_length() - 1 if size else 16)
        out.append((level, root_of(leaves[done:done + (1 << level)])))
        size += 1 << level
        done += 1 << level
    return out


def join(frontier: tuple[bytes, ...], size: int,
         subtrees: Sequence[tuple[int, bytes]]) -> tuple[bytes, ...]:
    """The frontier once the perfect ``subtrees`` (:func:`blocks` of leaves from ``size``
    on) follow: each merges like one appended leaf a level up. ValueError for a subtree
    that cannot start where the tree then ends."""
    _check(frontier, size)
    front = list(frontier)
    for level, top in subtrees:
        if size & ((1 << level) - 1):
            raise ValueError(f"a perfect subtree of {1 << level} leaves cannot start at {size}")
        carry = size >> level
        while carry & 1:
            top = node_hash(front.pop(), top)
            carry >>= 1
        front.append(top)
        size += 1 << level
    return tuple(front)


#: Leaves a :class:`Stretch` hashes at a time (its memory bound).
STRETCH_CHUNK = 1 << 16


class Stretch:
    """The tree of one stretch of a log (from leaf ``start`` on), hashed without the
    frontier before it: ``pieces`` are ``(size, subtrees)``, the :func:`blocks` of the events
    added up to that size, cut at each of ``stops`` (the sizes whose roots are wanted) and
    every :data:`STRETCH_CHUNK` events. :func:`resume` joins the stretches of a log in order.
    """

    __slots__ = ("start", "pieces", "_stops", "_buf", "_at")

    def __init__(self, start: int, stops: Iterable[int] = ()) -> None:
        self.start = self._at = start
        self.pieces: list[tuple[int, list[tuple[int, bytes]]]] = []
        self._stops = frozenset(stops)
        self._buf: list[bytes] = []

    def add(self, seq: int, event_hash: bytes) -> None:
        """Event ``seq`` (the tree's leaf ``seq - 1``), whose chain hash is ``event_hash``."""
        buf = self._buf
        buf.append(event_hash)
        if len(buf) == STRETCH_CHUNK or seq in self._stops:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            leaves = [sha256(b"\x00" + h).digest() for h in self._buf]
            self.pieces.append((self._at + len(leaves), blocks(self._at, leaves)))
            self._at += len(leaves)
            self._buf = []


def resume(frontier: tuple[bytes, ...], size: int, stretches: Iterable[tuple],
           at: Iterable[int] = ()) -> tuple[
        int, tuple[bytes, ...], dict[int, bytes]]:
    """``(size, frontier, roots)`` once ``stretches`` (the ``(start, pieces)`` of each
    :class:`Stretch`, in order, the first starting at ``size``) follow the tree ``frontier``
    of ``size``: ``roots`` holds the root at each size of ``at`` that a piece ends at (or
    that is ``size`` itself) and at the end. ValueError if a stretch does not start where
    the one before ended."""
    want = set(at)
    roots = {size: root(frontier, size)} if size in want else {}
    for start, pieces in stretches:
        if start != size:
            raise ValueError(f"a stretch of the tree starts at {start}, not at {size}")
        for end, subtrees in pieces:
            frontier = join(frontier, size, subtrees)
            size = end
            if size in want:
                roots[size] = root(frontier, size)
    roots[size] = root(frontier, size)
    return size, frontier, roots


def root(frontier: tuple[bytes, ...], size: int) -> bytes:
    """The RFC 6962 root (MTH) of the tree the frontier covers.

    MTH splits at the largest power of two below the size, which is the frontier's first
    subtree; the rest splits the same way, so the root folds the roots from the smallest.
    """
    _check(frontier, size)
    if size == 0:
        return EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = node_hash(h, acc)
    return acc


def encode(frontier: tuple[bytes, ...], size: int) -> bytes:
    """The frontier as one blob: the size (8 bytes, big-endian), then its hashes."""
    _check(frontier, size)
    if any(len(h) != HASH_SIZE for h in frontier):
        raise ValueError("a frontier holds 32-byte hashes")
    return size.to_bytes(8, "big") + b"".join(frontier)


#: The frontier of the empty tree, for a log that has none stored yet.
EMPTY_BLOB = bytes(8)


def decode(blob: bytes) -> tuple[int, tuple[bytes, ...]]:
    """``(size, frontier)`` from :func:`encode`'s blob; ValueError if it is not one (wrong
    type, truncated, trailing bytes, a size beyond 2**63-1), never a wrong frontier."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"a frontier is bytes, not {type(blob).__name__}")
    data = bytes(blob)
    if len(data) < 8:
        raise ValueError(f"a frontier blob has at least 8 bytes, not {len(data)}")
    size = int.from_bytes(data[:8], "big")
    if size > MAX_SIZE:
        raise ValueError("a frontier's size is at most 2**63-1")
    count = size.bit_count()
    if len(data) != 8 + HASH_SIZE * count:
        raise ValueError(f"a frontier of size {size} has {count} hashes "
                         f"({8 + HASH_SIZE * count} bytes), not {len(data)} bytes")
    return size, tuple(data[i:i + HASH_SIZE] for i in range(8, len(data), HASH_SIZE))


def subtrees(frontier: tuple[bytes, ...], size: int) -> dict[tuple[int, int], bytes]:
    """The frontier's roots by leaf range: ``known`` for proofs after a compaction at
    ``size``."""
    _check(frontier, size)
    out: dict[tuple[int, int], bytes] = {}
    lo = 0
    hashes = iter(frontier)
    for bit in range(size.bit_length() - 1, -1, -1):
        if size >> bit & 1:
            out[(lo, lo + (1 << bit))] = next(hashes)
            lo += 1 << bit
    return out


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree of these leaf hashes, from scratch, level by level.

    Pairing neighbours and carrying a last odd node up unchanged builds the same tree as
    RFC 6962's split at the largest power of two; one list comprehension per level is the
    fastest way to hash a block of leaves in Python.
    """
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]
