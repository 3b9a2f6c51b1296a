"""RFC 6962 Merkle trees over a log's event hashes: the frontier each log keeps, and proofs.

SPEC "Witnessed history": leaf ``i`` (0-based) of a log's tree is ``leaf_hash(hash of event
seq i+1)``, so a tree of size ``n`` covers events 1..n and its size is the head seq,
compacted events included. Pure functions of bytes and ints; stdlib only.

The API the integration uses
----------------------------
A *frontier* (a "compact range") is a tuple of the roots of the perfect subtrees that cover
leaves ``[0, size)``, largest first: one per set bit of ``size``, so at most 64 hashes. With
its size it is everything needed to append, and it gives the root.

- Append path (``membership handle``; about 10 us, see benchmarks/merkle.py)::

      size, front = decode(blob)              # the log's stored frontier; EMPTY_BLOB if none
      front = extend(front, size, [leaf_hash(h) for h in new_event_hashes])
      blob = encode(front, size + len(new_event_hashes))   # same transaction as the events
      root(front, new_size)                   # the head's root (membership head), O(log n)

- ``verify``: fold the kept events' leaves into the anchor's frontier (or the empty one) with
  :func:`extend`; the result must equal the stored blob, and on the way ``root(front, W)``
  must equal the root of every head witnessed at size ``W``. One pass, no extra reads.
- Retention: when events up to seq ``a`` are dropped, keep ``encode(frontier at size a)``
  with the anchor; it is what every later proof needs (see "After compaction" below).
- Proofs: :func:`inclusion_proof` and :func:`consistency_proof` compute the audit path and
  the consistency path from a callable ``leaves(lo, hi)`` that returns the leaf hashes of
  leaves ``lo..hi-1`` (events seq ``lo+1..hi``; at most ``chunk`` at a time, so memory stays
  bounded whatever the log's size), plus ``known`` subtree roots and the ``floor``, the first
  leaf the store still holds: after compaction at ``a``, ``known=subtrees(anchor_front, a)``
  and ``floor=a``. :func:`subtree_root` gives the root at any size the same way.
  :func:`root_from_inclusion` and :func:`consistency_roots` give the roots a path implies;
  :func:`verify_inclusion` and :func:`verify_consistency` check them (RFC 9162 2.1.3.2 and
  2.1.4.2). A proof reads every leaf it does not find under a known subtree: O(n) hashes.

After compaction
----------------
Let the events before leaf ``a`` be dropped and the frontier at size ``a`` kept. Every node
of an RFC 6962 tree that starts at ``lo`` and holds ``s`` leaves has ``lo`` a multiple of the
smallest power of two >= ``s`` (the root starts at 0; a left child keeps its parent's start;
a right child starts ``k`` after it, ``k`` the power of two the parent splits at, and holds
at most ``k`` leaves). From that:

1. A node of ``k`` leaves wholly below ``a`` that is the *left* child of a node containing
   ``a`` (or ending at it) is a frontier subtree: the parent holds more than ``k`` leaves, so
   it starts at a multiple of ``2k``, namely ``a`` rounded down to one; its left child ends
   ``k`` later, at or before ``a``, so bit ``k`` of ``a`` is set, and the frontier's subtree
   for that bit is exactly this child.
2. A perfect node straddling ``a`` splits into a half of kind 1, a half at or after ``a``
   (readable), and at most one straddling half, recursively.

So, with ``known = subtrees(frontier at a)`` and ``floor = a``:

- *Provable*: the inclusion of every leaf ``m >= a`` in every tree of size ``n > m`` (each
  sibling on its path lies in ``[a, n)``, is a left sibling of kind 1, or straddles ``a``);
  every consistency proof between sizes ``a <= m <= n`` (its nodes are right siblings
  starting at or after ``m``, left siblings of kind 1, or straddling ones; the old tree's
  last node ``[lo, m)`` is a left child too, so when ``m == a`` it is the frontier's last
  subtree); and the root at every size ``>= a``. No subtree root straddling ``a`` has to be
  stored: each one is rebuilt from frontier subtrees and kept leaves.
- *Not provable*: the inclusion of a leaf ``m < a`` in general (its nearest siblings are
  gone; its event is gone too, so no proof document could carry it anyway), a root at a size
  below ``a``, and a consistency proof *from* a size ``W < a``: it needs nodes inside
  ``[W, a)`` that the frontier merged away (e.g. ``W=1, a=4``: the node of leaves 2..3).
  What to keep for that: for each witnessed head ``(W, root W)`` below the anchor, the nodes
  of the consistency proof from ``W`` to ``a`` (:func:`consistency_ranges` with their hashes,
  at most ``2*log2(a)`` of them) plus ``(0, W) -> root W``. Added to ``known``, they make the
  proof from ``W`` to every size ``>= a`` computable (tests/test_merkle.py shows it), since
  every node that proof needs below ``a`` is also a node of the proof from ``W`` to ``a``.

What a proof binds: the leaf, its index and the root, by the hashes; the tree size only
through the root. A path for leaf ``m`` in size ``n`` also verifies for any size with the
same shape (e.g. leaf 0 in sizes 5 and 6), against the size-``n`` root; so a size and a root
must always be taken together, from one witnessed head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

# The frontier and the hashes live in core/frontier (the handler's hot path loads only them);
# they are this module's names too.
from . import frontier as _frontier
from .frontier import (  # noqa: F401
    EMPTY_BLOB,
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    append,
    decode,
    encode,
    extend,
    leaf_hash,
    node_hash,
    root_of,
    subtrees,
)

root = _frontier.root  # (assigned: the proofs below take a parameter of that name)

#: ``leaves(lo, hi)``: the leaf hashes of leaves ``lo..hi-1``, in order.
Leaves = Callable[[int, int], Sequence[bytes]]
#: Roots of subtrees by their leaf range ``(lo, hi)``.
Known = Mapping[tuple[int, int], bytes]


#: Leaves read per ``leaves`` call: 2 MiB of hashes, so a proof's memory stays bounded.
CHUNK = 1 << 16


class Unprovable(ValueError):
    """A proof needs a subtree of leaves that were compacted and no stored root covers."""


# -- whole trees and proofs --------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two below ``n`` (``n >= 2``): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _sizes(*pairs: tuple[int, int]) -> None:
    for lo, hi in pairs:
        if type(lo) is not int or type(hi) is not int or not 0 <= lo <= hi <= MAX_SIZE:
            raise ValueError(f"sizes {lo} and {hi} are not 0 <= {lo} <= {hi} <= 2**63-1")


def inclusion_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges of the audit path of leaf ``m`` in a tree of size ``n``, nearest the
    leaf first (RFC 6962 2.1.1 PATH): the sibling of each node from the leaf up."""
    _sizes((m, n))
    if m >= n:
        raise ValueError(f"leaf {m} is not in a tree of size {n}")
    out = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges of the consistency proof from size ``m`` to ``n``, in proof order
    (RFC 6962 2.1.2 PROOF/SUBPROOF). Empty when ``m`` is 0 or ``n``: any tree extends the
    empty one, and a tree extends itself."""
    _sizes((m, n))
    out = []
    if 0 < m < n:
        lo, hi, whole = 0, n, True  # whole: the old tree is still all left of the cut
        while m != hi:
            k = _split(hi - lo)
            if m <= lo + k:
                out.append((lo + k, hi))
                hi = lo + k
            else:
                out.append((lo, lo + k))
                lo += k
                whole = False
        if not whole:  # the old tree's last node, which the verifier cannot derive
            out.append((lo, hi))
    out.reverse()
    return out


def subtree_root(lo: int, hi: int, leaves: Leaves, known: Known | None = None, floor: int = 0,
                 chunk: int = CHUNK) -> bytes:
    """The root of the subtree of leaves ``lo..hi-1`` (``subtree_root(0, n, ...)`` is the
    root at size ``n``).

    A range in ``known`` is taken as is; one at or after ``floor`` is hashed from its leaves,
    read ``chunk`` at a time; anything else is split at RFC 6962's split point until it is
    one or the other (:class:`Unprovable` if a single compacted leaf is left). A range of at
    most ``chunk`` leaves is read whole, so roots of blocks smaller than ``chunk`` in
    ``known`` are only used with ``chunk`` at most their size (e.g. roots of every aligned
    1,024-leaf block with ``chunk=1024``: a proof then reads at most two blocks of leaves).
    """
    _sizes((lo, hi), (0, floor))
    known = known or {}

    def node(lo: int, hi: int) -> bytes:
        got = known.get((lo, hi))
        if got is not None:
            return got
        if lo >= floor and hi - lo <= chunk:
            hashes = leaves(lo, hi)
            if len(hashes) != hi - lo:
                raise ValueError(f"leaves({lo}, {hi}) gave {len(hashes)} hashes, not "
                                 f"{hi - lo}")
            return root_of(hashes)
        if hi - lo == 1:
            raise Unprovable(f"leaf {lo} (event {lo + 1}) is compacted and no stored subtree "
                             f"root covers it")
        k = _split(hi - lo)
        return node_hash(node(lo, lo + k), node(lo + k, hi))

    if lo == hi:
        return EMPTY_ROOT
    return node(lo, hi)


def inclusion_proof(m: int, n: int, leaves: Leaves, known: Known | None = None, floor: int = 0,
                    chunk: int = CHUNK) -> list[bytes]:
    """The audit path of leaf ``m`` in the tree of size ``n`` (RFC 6962 2.1.1)."""
    return [subtree_root(lo, hi, leaves, known, floor, chunk)
            for lo, hi in inclusion_ranges(m, n)]


def consistency_proof(m: int, n: int, leaves: Leaves, known: Known | None = None,
                      floor: int = 0, chunk: int = CHUNK) -> list[bytes]:
    """The consistency proof from size ``m`` to size ``n`` (RFC 6962 2.1.2)."""
    return [subtree_root(lo, hi, leaves, known, floor, chunk)
            for lo, hi in consistency_ranges(m, n)]


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) -----------------------------------------------


def _hashes(*values: object) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def _climb(index: int, last: int, old: bytes, new: bytes,
           path: Sequence[bytes]) -> tuple[bytes, bytes] | None:
    """Hash a node up to the root through ``path``.

    ``index`` is the node's position in its level and ``last`` the position of that level's
    last node. A node that is a right child (odd index), or the last one of its level, has
    its path element on its left: that element lies in both the old tree and the new one,
    so both roots take it. A lone last node with no right neighbour rises unchanged until it
    is a right child, which the shifts skip. Otherwise the element is on the right, beyond
    the old tree: only the new root takes it. ``None`` if the path is too long or too short
    for the sizes.
    """
    for element in path:
        if last == 0:
            return None
        if index & 1 or index == last:
            old = node_hash(element, old)
            new = node_hash(element, new)
            while index and not index & 1:
                index >>= 1
                last >>= 1
        else:
            new = node_hash(new, element)
        index >>= 1
        last >>= 1
    return (old, new) if last == 0 else None


def root_from_inclusion(leaf: bytes, m: int, n: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` implies for ``leaf`` at index ``m`` in a tree of size ``n``;
    ``None`` if the path cannot be one for that position."""
    if type(m) is not int or type(n) is not int or not 0 <= m < n <= MAX_SIZE:
        return None
    if not _hashes(leaf, *path):
        return None
    got = _climb(m, n - 1, leaf, leaf, path)
    return None if got is None else got[1]


def verify_inclusion(leaf: bytes, m: int, n: int, path: Sequence[bytes], root: bytes) -> bool:
    """Whether ``path`` proves ``leaf`` is leaf ``m`` of the tree of size ``n`` with ``root``."""
    got = root_from_inclusion(leaf, m, n, path)
    return got is not None and got == root


def consistency_roots(m: int, n: int, path: Sequence[bytes],
                      root_m: bytes) -> tuple[bytes, bytes] | None:
    """The roots at sizes ``m`` and ``n`` that a consistency path implies (``0 < m < n``).

    The walk starts at the old tree's last node. When ``m`` is a power of two the old tree is
    itself a node of the new one and the proof leaves it out: ``root_m`` stands in for it.
    Otherwise the first element is that node, and the walk first rises past the levels where
    it is a right child (its left neighbours are inside it).
    """
    if type(m) is not int or type(n) is not int or not 0 < m < n <= MAX_SIZE:
        return None
    nodes = [root_m, *path] if m & (m - 1) == 0 else list(path)
    if not nodes or not _hashes(*nodes):
        return None
    index, last = m - 1, n - 1
    while index & 1:
        index >>= 1
        last >>= 1
    return _climb(index, last, nodes[0], nodes[0], nodes[1:])


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes,
                       path: Sequence[bytes]) -> bool:
    """Whether ``path`` proves the tree of size ``m`` with ``root_m`` is a prefix of the tree
    of size ``n`` with ``root_n``. For ``m == 0`` the path is empty and ``root_m`` the empty
    tree's root; for ``m == n`` the path is empty and the roots are equal."""
    if type(m) is not int or type(n) is not int or not 0 <= m <= n <= MAX_SIZE:
        return False
    if not _hashes(root_m, root_n):
        return False
    if m == 0:
        return not path and root_m == EMPTY_ROOT
    if m == n:
        return not path and root_m == root_n
    return consistency_roots(m, n, path, root_m) == (root_m, root_n)
