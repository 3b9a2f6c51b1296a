"""Witnessed history's pure core: RFC 6962 trees (core/merkle) and proof documents
(core/proofs).

The trees are held to a literal transcription of RFC 6962 section 2.1 (the oracle below)
and to the Certificate Transparency reference vectors; the proof documents are built from a
real store (``membership handle`` and ``membership export``), checked, and tampered with.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli
from hypothesis import given, settings
from hypothesis import strategies as st

from membership_log.core import merkle, proofs
from membership_log.core.raw import GENESIS
from membership_log.core.timespec import iso, parse

# -- the oracle: RFC 6962 2.1 as written, over the entries d(0)..d(n-1) ------------------------


def _k(n: int) -> int:
    """The largest power of two smaller than n (RFC 6962: "k < n <= 2k")."""
    k = 1
    while 2 * k < n:
        k *= 2
    return k


class Oracle:
    """MTH, PATH and PROOF/SUBPROOF of RFC 6962 2.1, recursing on sublists as the RFC does
    (ranges of one list, memoised, so that hundreds of proofs stay cheap)."""

    def __init__(self, entries: list[bytes]) -> None:
        self.d = entries
        self.memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        if (lo, hi) not in self.memo:
            if hi == lo:
                h = hashlib.sha256(b"").digest()
            elif hi - lo == 1:
                h = hashlib.sha256(b"\x00" + self.d[lo]).digest()
            else:
                k = _k(hi - lo)
                h = hashlib.sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi)).digest()
            self.memo[(lo, hi)] = h
        return self.memo[(lo, hi)]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _k(hi - lo)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        # The RFC defines PROOF for 0 < m <= n; from the empty tree nothing needs proving.
        return self.subproof(m, 0, n, True) if m else []

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if b else [self.mth(lo, hi)]
        k = _k(hi - lo)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]


def directions(m: int, n: int) -> tuple[str, ...]:
    """The side of each PATH element, leaf first: all an inclusion path's shape is."""
    if n == 1:
        return ()
    k = _k(n)
    return directions(m, k) + ("right",) if m < k else directions(m - k, n - k) + ("left",)


def program(m: int, n: int) -> tuple[str, ...]:
    """The shape of SUBPROOF(m, D[n], true), bottom up: each node joins the new tree on the
    right, or both trees on the left; "seed" if the proof carries the old tree's last node
    (else the verifier starts from the old root)."""
    ops, size, whole = [], n, True
    while m != size:
        k = _k(size)
        if m <= k:
            ops.append("right")
            size = k
        else:
            ops.append("left")
            m, size, whole = m - k, size - k, False
    if not whole:
        ops.append("seed")
    return tuple(reversed(ops))


def entries(n: int, salt: bytes = b"") -> list[bytes]:
    """n distinct event hashes."""
    return [hashlib.sha256(salt + i.to_bytes(8, "big")).digest() for i in range(n)]


def leaf_hashes(d: list[bytes]) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + e).digest() for e in d]


def reader(leaves: list[bytes], floor: int = 0, chunk: int = merkle.CHUNK):
    """``leaves(lo, hi)`` over a list, refusing what a compacted store could not give."""
    def read(lo: int, hi: int) -> list[bytes]:
        assert floor <= lo < hi <= len(leaves) and hi - lo <= chunk, (lo, hi)
        return leaves[lo:hi]
    return read


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# -- the Certificate Transparency reference vectors --------------------------------------------
# From github.com/transparency-dev/merkle (formerly Trillian's): testonly/constants.go for the
# leaf inputs, node hashes and roots, proof/verify_test.go for the proofs (its leaf indexes
# are 1-based there).

CT_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
#: Node hashes by level (0 = leaves) and position.
CT_NODES = [[bytes.fromhex(h) for h in level] for level in (
    ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",))]
#: testonly/constants.go CompactTrees: the frontier at each size, as (level, position).
CT_FRONTIERS = [(), ((0, 0),), ((1, 0),), ((1, 0), (0, 2)), ((2, 0),), ((2, 0), (0, 4)),
                ((2, 0), (1, 2)), ((2, 0), (1, 2), (0, 6)), ((3, 0),)]
CT_INCLUSION = [  # (1-based leaf, size, path)
    (1, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, ("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (3, 3, ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",)),
    (2, 5, ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]
CT_CONSISTENCY = [  # (size1, size2, path)
    (1, 1, ()),
    (1, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, ("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]


def test_ct_vectors_roots_and_frontiers():
    leaves = [merkle.leaf_hash(e) for e in CT_INPUTS]
    front: tuple[bytes, ...] = ()
    for n in range(len(leaves) + 1):
        assert merkle.root(front, n) == CT_ROOTS[n] == merkle.root_of(leaves[:n])
        assert front == tuple(CT_NODES[lv][i] for lv, i in CT_FRONTIERS[n])
        if n < len(leaves):
            front = merkle.append(front, n, leaves[n])
    assert merkle.EMPTY_ROOT == CT_ROOTS[0]


def test_ct_vectors_proofs():
    leaves = [merkle.leaf_hash(e) for e in CT_INPUTS]
    read = reader(leaves)
    for leaf, size, path in CT_INCLUSION:
        want = [bytes.fromhex(h) for h in path]
        assert merkle.inclusion_proof(leaf - 1, size, read) == want
        assert merkle.verify_inclusion(leaves[leaf - 1], leaf - 1, size, want, CT_ROOTS[size])
    for m, n, path in CT_CONSISTENCY:
        want = [bytes.fromhex(h) for h in path]
        assert merkle.consistency_proof(m, n, read) == want
        assert merkle.verify_consistency(m, n, CT_ROOTS[m], CT_ROOTS[n], want)


# -- the frontier ------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(st.binary(max_size=8))
def test_frontier_root_is_the_root_from_scratch_after_every_append(salt):
    d = entries(300, salt)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    front: tuple[bytes, ...] = ()
    for n in range(301):
        assert merkle.root(front, n) == oracle.mth(0, n) == merkle.root_of(leaves[:n])
        assert len(front) <= n.bit_length()
        assert merkle.subtrees(front, n) == {r: oracle.mth(*r) for r in merkle.subtrees(front, n)}
        assert sum(hi - lo for lo, hi in merkle.subtrees(front, n)) == n
        if n < 300:
            front = merkle.append(front, n, leaves[n])


@settings(max_examples=8, deadline=None)
@given(st.integers(301, 6000), st.integers(0, 50))
def test_frontier_of_large_sizes_in_batches(n, batch):
    d = entries(n)
    leaves = leaf_hashes(d)
    front: tuple[bytes, ...] = ()
    size = 0
    while size < n:  # as the append path does: a batch of events at a time
        step = min(n - size, batch + 1)
        front = merkle.extend(front, size, leaves[size:size + step])
        size += step
    assert merkle.root(front, n) == merkle.root_of(leaves) == Oracle(d).mth(0, n)
    one_by_one: tuple[bytes, ...] = ()
    for i, leaf in enumerate(leaves):
        one_by_one = merkle.append(one_by_one, i, leaf)
    assert front == one_by_one


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.lists(st.integers(0, 700), max_size=4),
       st.lists(st.integers(0, 1500), max_size=6))
def test_stretches_hashed_apart_join_into_the_tree_from_scratch(base, cuts, stops):
    """verify's workers hash their stretch of the log without the frontier before it
    (frontier.Stretch); resume joins them: the same frontier as one extend from scratch,
    and the root at every stop (and at the end) that of the prefix."""
    from membership_log.core import frontier

    n = base + 1500
    hashes = [hashlib.sha256(b"e%d" % i).digest() for i in range(n)]
    leaves = [merkle.leaf_hash(h) for h in hashes]
    front = merkle.extend((), 0, leaves[:base])
    bounds = sorted({base, n, *(base + c for c in cuts)})
    want = sorted({base + s for s in stops})
    stretches = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = frontier.Stretch(lo, [q for q in want if lo < q <= hi])
        for seq in range(lo + 1, hi + 1):
            part.add(seq, hashes[seq - 1])
        part.flush()
        stretches.append((part.start, part.pieces))
    size, got, roots = frontier.resume(front, base, stretches, want)
    assert size == n and got == merkle.extend((), 0, leaves)
    for q in [*want, n]:
        assert roots[q] == merkle.root_of(leaves[:q]), q
    if len(stretches) > 1:  # out of order: refused, never a wrong tree
        with pytest.raises(ValueError):
            frontier.resume(front, base, stretches[1:], want)
    with pytest.raises(ValueError):
        frontier.join((), 1, [(1, bytes(32))])  # a 2-leaf subtree cannot start at leaf 1


def test_a_stretch_hashes_a_chunk_at_a_time(monkeypatch):
    """A long stretch is hashed a chunk at a time (its memory bound): the pieces still join
    into the tree from scratch."""
    from membership_log.core import frontier

    monkeypatch.setattr(frontier, "STRETCH_CHUNK", 7)
    hashes = [hashlib.sha256(b"c%d" % i).digest() for i in range(100)]
    part = frontier.Stretch(3)
    for seq in range(4, 101):
        part.add(seq, hashes[seq - 1])
    part.flush()
    assert len(part.pieces) == 14 and part.pieces[0][0] == 10
    leaves = [merkle.leaf_hash(h) for h in hashes]
    size, front, roots = frontier.resume(merkle.extend((), 0, leaves[:3]), 3,
                                         [(part.start, part.pieces)])
    assert size == 100 and front == merkle.extend((), 0, leaves)
    assert roots == {100: merkle.root_of(leaves)}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, merkle.MAX_SIZE), st.binary(min_size=1, max_size=4))
def test_encode_decode_round_trips(size, salt):
    front = tuple(hashlib.sha256(salt + bytes([i])).digest() for i in range(size.bit_count()))
    blob = merkle.encode(front, size)
    assert len(blob) == 8 + 32 * size.bit_count()
    assert merkle.decode(blob) == (size, front)
    assert merkle.decode(memoryview(blob)) == (size, front)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_accepts_only_what_encode_writes(blob):
    try:
        size, front = merkle.decode(blob)
    except ValueError:
        return
    assert merkle.encode(front, size) == blob


def test_decode_rejects_garbage():
    good = merkle.encode(merkle.extend((), 0, leaf_hashes(entries(5))), 5)  # 2 hashes
    assert merkle.decode(merkle.EMPTY_BLOB) == (0, ())
    for bad in (b"", good[:7], good[:-1], good + b"\0", good[:8] + good[40:],
                (2**63).to_bytes(8, "big") + bytes(32), (6).to_bytes(8, "big") + bytes(32),
                "00" * 40, None, 5, [good]):
        with pytest.raises(ValueError):
            merkle.decode(bad)


def test_a_frontier_and_a_size_that_do_not_match_are_refused():
    front = merkle.extend((), 0, leaf_hashes(entries(3)))
    for call in (lambda: merkle.append(front, 4, bytes(32)), lambda: merkle.root(front, 2),
                 lambda: merkle.encode(front, 4), lambda: merkle.subtrees(front, 1),
                 lambda: merkle.encode((b"short", bytes(32)), 3)):
        with pytest.raises(ValueError):
            call()


# -- inclusion proofs --------------------------------------------------------------------------


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70), st.binary(max_size=4), st.data())
def test_inclusion_proofs_verify_and_nothing_else_does(n, salt, data):
    d = entries(n + 40, salt)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    roots = [oracle.mth(0, s) for s in range(len(d) + 1)]
    chunk = data.draw(st.sampled_from([1, 2, 3, 8, merkle.CHUNK]))
    read = reader(leaves[:n], chunk=chunk)
    for m in range(n):
        path = merkle.inclusion_proof(m, n, read, chunk=chunk)
        assert path == oracle.path(m, 0, n)
        assert merkle.verify_inclusion(leaves[m], m, n, path, roots[n])
        assert merkle.root_from_inclusion(leaves[m], m, n, path) == roots[n]
        # Any other leaf, index, path or root fails.
        assert not merkle.verify_inclusion(leaves[(m + 1) % len(d)], m, n, path, roots[n])
        assert not any(merkle.verify_inclusion(leaves[m], i, n, path, roots[n])
                       for i in range(n + 2) if i != m)
        for i in range(len(path)):
            for bit in (0, 7):
                bad = path[:i] + [flip(path[i], bit)] + path[i + 1:]
                assert not merkle.verify_inclusion(leaves[m], m, n, bad, roots[n])
        assert not merkle.verify_inclusion(leaves[m], m, n, path + [roots[n]], roots[n])
        assert not merkle.verify_inclusion(leaves[m], m, n, [roots[n]] + path, roots[n])
        if path:
            assert not merkle.verify_inclusion(leaves[m], m, n, path[:-1], roots[n])
        assert not any(merkle.verify_inclusion(leaves[m], m, n, path, roots[s])
                       for s in range(len(roots)) if s != n)
        assert not merkle.verify_inclusion(leaves[m], m, n, path, flip(roots[n]))
        # A size is bound only through its root: another size verifies exactly when the
        # path has the same shape there (so a size must come with its root, in one head).
        for s in range(m + 1, 2 * n + 2):
            assert merkle.verify_inclusion(leaves[m], m, s, path, roots[n]) == (
                directions(m, s) == directions(m, n))


def test_inclusion_arguments_out_of_range():
    read = reader(leaf_hashes(entries(4)))
    for m, n in ((4, 4), (-1, 4), (0, 0), (True, 4), (0, 2**63)):
        with pytest.raises(ValueError):
            merkle.inclusion_proof(m, n, read)
        assert merkle.root_from_inclusion(bytes(32), m, n, []) is None
    with pytest.raises(ValueError):
        merkle.inclusion_proof(0, 4, lambda lo, hi: [bytes(32)])  # a reader that gives too few
    assert not merkle.verify_inclusion(b"short", 0, 1, [], b"short")


# -- consistency proofs ------------------------------------------------------------------------


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.binary(max_size=4), st.data())
def test_consistency_proofs_verify_and_nothing_else_does(n, salt, data):
    d = entries(2 * n + 2, salt)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    roots = [oracle.mth(0, s) for s in range(len(d) + 1)]
    chunk = data.draw(st.sampled_from([1, 2, 5, merkle.CHUNK]))
    read = reader(leaves[:n], chunk=chunk)
    assert merkle.consistency_proof(0, n, read, chunk=chunk) == []
    assert merkle.verify_consistency(0, n, merkle.EMPTY_ROOT, roots[n], [])
    assert not merkle.verify_consistency(0, n, roots[1], roots[n], [])
    for m in range(1, n + 1):
        path = merkle.consistency_proof(m, n, read, chunk=chunk)
        assert path == oracle.proof(m, n)
        assert merkle.verify_consistency(m, n, roots[m], roots[n], path)
        if m == n:
            assert path == []
            assert not merkle.verify_consistency(m, n, roots[m], flip(roots[n]), path)
            continue
        assert merkle.consistency_roots(m, n, path, roots[m]) == (roots[m], roots[n])
        assert not merkle.verify_consistency(m, n, roots[n], roots[m], path)
        assert not any(merkle.verify_consistency(m, n, roots[s], roots[n], path)
                       for s in range(len(roots)) if s != m)
        assert not any(merkle.verify_consistency(m, n, roots[m], roots[s], path)
                       for s in range(len(roots)) if s != n)
        for i in range(len(path)):
            bad = path[:i] + [flip(path[i], 4)] + path[i + 1:]
            assert not merkle.verify_consistency(m, n, roots[m], roots[n], bad)
        for bad in (path[:-1], path + [roots[n]], [roots[m]] + path, [path[0]] + path, []):
            assert not merkle.verify_consistency(m, n, roots[m], roots[n], bad)
        # As for inclusion: other sizes verify exactly when the proof has the same shape.
        for m2 in range(0, n + 2):
            for n2 in range(m2, 2 * n + 2):
                if (m2, n2) != (m, n):
                    same = 0 < m2 < n2 and program(m2, n2) == program(m, n)
                    assert merkle.verify_consistency(m2, n2, roots[m], roots[n], path) == same


def test_consistency_arguments_out_of_range():
    read = reader(leaf_hashes(entries(4)))
    for m, n in ((5, 4), (-1, 4), (1, 2**63)):
        with pytest.raises(ValueError):
            merkle.consistency_proof(m, n, read)
        assert not merkle.verify_consistency(m, n, bytes(32), bytes(32), [])
    assert merkle.consistency_roots(0, 4, [], bytes(32)) is None


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 90), st.data())
def test_known_block_roots_spare_the_reads_and_change_nothing(n, data):
    d = entries(n)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    blocks = {(lo, lo + 4): oracle.mth(lo, lo + 4) for lo in range(0, n - 3, 4)}
    seen: list[int] = []

    def read(lo: int, hi: int) -> list[bytes]:
        assert hi - lo <= 4
        seen.append(hi - lo)
        return leaves[lo:hi]

    m = data.draw(st.integers(0, n - 1))
    assert merkle.inclusion_proof(m, n, read, blocks, chunk=4) == oracle.path(m, 0, n)
    assert sum(seen) <= 3 + 3  # the leaf's own block (not the leaf) and the partial last one
    seen.clear()
    m = data.draw(st.integers(1, n))
    assert merkle.consistency_proof(m, n, read, blocks, chunk=4) == oracle.proof(m, n)
    assert sum(seen) <= 4 + 3  # the block the old size cuts, and the partial last one


# -- after a compaction ------------------------------------------------------------------------


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 90), st.data())
def test_proofs_with_a_compacted_prefix_are_the_proofs_of_the_whole_log(n, data):
    """With only the frontier at the anchor a for leaves before a, every proof the module
    docstring calls provable comes out identical to the one from all leaves, and the leaves
    before a are never read."""
    a = data.draw(st.integers(0, n), label="anchor")
    chunk = data.draw(st.sampled_from([1, 3, 4, merkle.CHUNK]), label="chunk")
    d = entries(n)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    known = merkle.subtrees(merkle.extend((), 0, leaves[:a]), a)
    read = reader(leaves, floor=a, chunk=chunk)
    kw = {"known": known, "floor": a, "chunk": chunk}
    for s in range(a, n + 1):
        assert merkle.subtree_root(0, s, read, **kw) == oracle.mth(0, s)
    for m in range(a, n):
        for s in range(m + 1, n + 1):
            assert merkle.inclusion_proof(m, s, read, **kw) == oracle.path(m, 0, s)
    for m in range(a, n + 1):
        for s in range(m, n + 1):
            assert merkle.consistency_proof(m, s, read, **kw) == oracle.proof(m, s)
    # Before the anchor: refused, or (when every node it needs is known) still right.
    for m in range(a):
        try:
            assert merkle.inclusion_proof(m, n, read, **kw) == oracle.path(m, 0, n)
        except merkle.Unprovable:
            pass
        try:
            assert merkle.consistency_proof(m, n, read, **kw) == oracle.proof(m, n)
        except merkle.Unprovable:
            pass
    if a >= 2:  # leaf 0's first sibling, leaf 1, is inside every frontier's first subtree
        with pytest.raises(merkle.Unprovable):
            merkle.inclusion_proof(0, n, read, **kw)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 90), st.data())
def test_a_stored_bridge_keeps_consistency_from_a_head_before_the_anchor(n, data):
    """For a head (W, root W) witnessed before the anchor a: the nodes of the proof from W to
    a, plus root W, keep the proof from W to every size >= a computable."""
    a = data.draw(st.integers(2, n), label="anchor")
    w = data.draw(st.integers(1, a - 1), label="witnessed size")
    d = entries(n)
    oracle, leaves = Oracle(d), leaf_hashes(d)
    known = merkle.subtrees(merkle.extend((), 0, leaves[:a]), a)
    bridge = dict(zip(merkle.consistency_ranges(w, a),
                      merkle.consistency_proof(w, a, reader(leaves)), strict=True))
    bridge[(0, w)] = oracle.mth(0, w)
    read = reader(leaves, floor=a)
    for s in range(a, n + 1):
        got = proofs.consistency("node0", w, s, read, known | bridge, a)
        assert got["path"] == [h.hex() for h in oracle.proof(w, s)]
        assert (got["root_from"], got["root_to"]) == (oracle.mth(0, w).hex(),
                                                      oracle.mth(0, s).hex())


# -- proof documents of a real store -----------------------------------------------------------

#: Every kind of event a log holds: joins, failures, a user event with binary stdin and a
#: variable that is not UTF-8, a query (the first event is the catalog the handler records).
EVENTS = [
    ("member-join", b"node0\t192.168.100.50\t\t\nnode1\t192.168.100.51\t\t\n", {}),
    ("member-failed", b"node1\t192.168.100.51\t\t\n", {}),
    ("user", b"\xff\x00deploy\n", {"SERF_USER_EVENT": "deploy", "SERF_USER_LTIME": "7",
                                   "SERF_TAG_NOTE": "caf\udce9"}),
    ("member-join", b"node1\t192.168.100.51\t\t\n", {}),
    ("query", b"", {"SERF_QUERY_NAME": "membership-live", "SERF_QUERY_LTIME": "3"}),
    ("member-leave", b"node2\t192.168.100.52\t\t\n", {}),
]


@pytest.fixture
def exported(handle, membership, base) -> list[dict]:
    for event, stdin, extra in EVENTS:
        assert handle(event, stdin, extra).returncode == 0
    r = cli(membership, "export", "--base-dir", str(base))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(EVENTS) + 2))
    return lines


def _documents(lines: list[dict]) -> tuple[list[bytes], dict, dict]:
    leaves = [merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in lines]
    n = len(lines)
    user = next(e for e in lines if e["env"].get("SERF_EVENT") == "user")
    prev = bytes.fromhex(lines[user["seq"] - 2]["hash"])
    inc = proofs.inclusion("node0", user, prev, n, reader(leaves))
    con = proofs.consistency("node0", 3, n, reader(leaves))
    return leaves, inc, con


def test_proofs_of_a_real_store_check(exported):
    leaves, _, _ = _documents(exported)
    n = len(exported)
    front = merkle.extend((), 0, leaves)  # what the append path would have kept
    assert merkle.root(front, n) == merkle.root_of(leaves)
    for e in exported:
        prev = GENESIS if e["seq"] == 1 else bytes.fromhex(exported[e["seq"] - 2]["hash"])
        for size in range(e["seq"], n + 1):
            doc = proofs.inclusion("node0", e, prev, size, reader(leaves))
            assert doc["root"] == merkle.root_of(leaves[:size]).hex()
            assert list(doc) == ["origin", "seq", "size", "root", "event", "prev", "path"]
            ok, why = proofs.check(doc)
            assert ok and why.startswith("ok: ") and "document's own root" in why, why
            ok, why = proofs.check_bytes(json.dumps(doc).encode(), doc["root"])
            assert ok and "given root" in why, why
    for m in range(n + 1):
        for s in range(m, n + 1):
            doc = proofs.consistency("node0", m, s, reader(leaves))
            assert (doc["root_from"], doc["root_to"]) == (merkle.root_of(leaves[:m]).hex(),
                                                          merkle.root_of(leaves[:s]).hex())
            ok, why = proofs.check_bytes(json.dumps(doc).encode(), doc["root_to"])
            assert ok, why


def _other(hex_hash: str) -> str:
    return ("1" if hex_hash[0] == "0" else "0") + hex_hash[1:]


def test_tampered_proofs_are_refused_with_a_reason(exported):
    _, inc, con = _documents(exported)
    assert proofs.check(inc)[0] and proofs.check(con)[0]
    event = inc["event"]
    stdin = base64.b64decode(event["stdin_b64"])
    us = parse(event["received"], 0).us

    def edit(doc, change):
        doc = copy.deepcopy(doc)
        change(doc)
        return doc

    content = "content and prev do not hash"
    cases = [
        (lambda d: d["event"].update(stdin_b64=base64.b64encode(
            bytes([stdin[0] ^ 1]) + stdin[1:]).decode()), content),
        (lambda d: d["event"]["env"].update(SERF_USER_LTIME="8"), content),
        (lambda d: d["event"]["env"].update(SERF_TAG_NOTE="caf\udcea"), content),
        (lambda d: d["event"]["env"].pop("SERF_TAG_NOTE"), content),
        (lambda d: d["event"].update(observer="node9"), content),
        (lambda d: d["event"].update(received=iso(us + 1)), content),
        (lambda d: d["event"].update(source="catalog"), content),
        (lambda d: d.update(prev=_other(d["prev"])), content),
        (lambda d: (d.update(seq=d["seq"] + 1), d["event"].update(seq=d["seq"])), content),
        (lambda d: d["event"].update(hash=_other(d["event"]["hash"])), content),
        (lambda d: d["path"].__setitem__(1, _other(d["path"][1])), "does not lead"),
        (lambda d: d.update(root=_other(d["root"])), "does not lead"),
        (lambda d: d.update(size=2 * d["size"]), "cannot be the one"),
        (lambda d: d["path"].append(d["root"]), "cannot be the one"),
        (lambda d: d["event"].update(seq=d["seq"] + 1), "not the proof's seq"),
    ]
    for change, reason in cases:
        ok, why = proofs.check(edit(inc, change))
        assert not ok and reason in why and "\n" not in why, why
    ok, why = proofs.check(inc, _other(inc["root"]))
    assert not ok and "not the given root" in why, why
    for change in (lambda d: d.update(root_from=_other(d["root_from"])),
                   lambda d: d.update(root_to=_other(d["root_to"])),
                   lambda d: d["path"].__setitem__(0, _other(d["path"][0])),
                   lambda d: d.update({"from": 2}), lambda d: d.update(to=2 * d["to"] + 1),
                   lambda d: d["path"].pop()):
        ok, why = proofs.check(edit(con, change))
        assert not ok and "is a prefix" in why, why
    ok, why = proofs.check(con, _other(con["root_to"]))
    assert not ok and "not the given root" in why, why


def test_malformed_documents_are_refused_in_one_line(exported):
    _, inc, con = _documents(exported)
    docs: list[object] = [None, [], "proof", 7, {}, {"event": None}, {"from": 0}]
    for doc in (inc, con):
        for key in doc:
            docs.append({k: v for k, v in doc.items() if k != key})
    for key in inc["event"]:
        docs.append({**inc, "event": {k: v for k, v in inc["event"].items() if k != key}})
    for key, value in [("seq", 10**30), ("seq", True), ("seq", 2.0), ("seq", 0),
                       ("size", 1), ("size", 2**63), ("root", "ab" * 31), ("root", "zz" * 32),
                       ("root", " " + inc["root"][1:]), ("prev", None), ("path", "ab"),
                       ("path", [inc["root"]] * 64), ("path", [1]), ("origin", 5)]:
        docs.append({**inc, key: value})
    for key, value in [("received", "now"), ("received", "2026-01-01"),
                       ("received", "9999-99-99T00:00:00.000000Z"), ("received", 5),
                       ("observer", "\ud800"), ("observer", None), ("source", "s\u00e9rf"),
                       ("env", {"SERF_EVENT": "user\0"}), ("env", {"A=B": "c"}),
                       ("env", {"SERF_EVENT": 1}), ("env", []), ("stdin_b64", "%%%"),
                       ("stdin_b64", "QQ"), ("stdin_b64", "\u00e9"), ("hash", "00")]:
        docs.append({**inc, "event": {**inc["event"], key: value}})
    for key, value in [("from", -1), ("from", 10**19), ("to", 1), ("root_to", 1),
                       ("path", [None])]:
        docs.append({**con, key: value})
    for doc in docs:
        ok, why = proofs.check(doc)
        assert not ok and why and "\n" not in why, (doc, why)
    assert proofs.check(inc, "not hex") == (False, "the given root is not a hash (64 hex "
                                                   "digits)")
    for data in (b"\xff{}", b"{", b"[" * 100_000 + b"]" * 100_000, b'{"from": NaN}', b""):
        ok, why = proofs.check_bytes(data)
        assert not ok and why and "\n" not in why, why


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["origin", "seq", "size", "root", "event", "prev",
                                        "path", "from", "to", "root_from", "root_to"]),
                       json_values) | json_values)
def test_check_never_raises(doc):
    ok, why = proofs.check(doc)
    assert isinstance(ok, bool) and "\n" not in why


def test_check_of_mutated_real_proofs_never_raises(exported):
    _, inc, con = _documents(exported)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([inc, con, inc["event"]]), st.data())
    def mutate(target, data):
        doc = copy.deepcopy(inc if target is inc["event"] else target)
        where = doc["event"] if target is inc["event"] else doc
        where[data.draw(st.sampled_from(sorted(where)))] = data.draw(json_values)
        ok, why = proofs.check(doc)
        assert isinstance(ok, bool) and "\n" not in why

    mutate()


@pytest.mark.e2e
def test_benchmark_quick_mode():
    """benchmarks/merkle.py keeps running; its leaf counts are what the design says: a proof
    reads every leaf but the proved one, only the kept ones after a compaction, and at most
    two blocks when block roots are known."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "merkle.py"
    r = subprocess.run([sys.executable, str(script), "--quick", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    n = doc["leaves"]
    rows = {row["figure"]: row for row in doc["rows"]}
    for kind in ("in-memory list", "SQLite store"):
        assert rows[f"inclusion proof, leaf {n // 2:,} of {n:,} ({kind})"]["leaves_read"] == n - 1
        assert rows[f"consistency proof, {n - 1000:,} -> {n:,} ({kind})"]["leaves_read"] == n
        a, m = n * 9 // 10, n * 95 // 100
        assert rows[f"inclusion proof, leaf {m:,}, compacted before {a:,} ({kind})"][
            "leaves_read"] == n - a - 1
        blocks = [r for f, r in rows.items() if "block roots stored" in f and kind in f]
        assert len(blocks) == 2 and all(0 < r["leaves_read"] <= 2 * 1024 for r in blocks)
    assert all(row["value"] > 0 for row in doc["rows"])
