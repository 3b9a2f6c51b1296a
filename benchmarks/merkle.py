"""Witnessed history's Merkle core (core/merkle): what the append path, the roots and the
proofs cost, in-process (no `membership` process: the integration adds these to commands
measured elsewhere).

    .venv/bin/python benchmarks/merkle.py            # 1,000,000 leaves and a real store (~2 min)
    .venv/bin/python benchmarks/merkle.py --quick    # 20,000 leaves, to check it runs (CI)

Figures, each with the leaves it read:
- the frontier append per event (median over blocks of 1,000 appends at size N), and the
  handler's whole step: decode the stored blob, append one leaf, encode, root;
- the root at the head from the frontier, and verify's pass (the frontier rebuilt from N);
- an inclusion proof and consistency proofs over N leaves, read from an in-memory list and
  from a real SQLite store built with `membership import` (leaf hashes computed from the
  stored event hashes as they are read, as `prove` will);
- the same proofs with the roots of every whole 1,024-leaf block known (what a derived table
  of block roots would give), and after a compaction of the first 90%, the anchor's
  frontier standing in for the dropped leaves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from membership_log.core import merkle
from membership_log.demo.localcluster import membership_command
from membership_log.demo.synthetic import export_lines, member_events

START = 1_700_000_000_000_000
BLOCK = 1024


class Counted:
    """A ``leaves(lo, hi)`` that counts what it reads."""

    def __init__(self, read) -> None:
        self.read, self.count = read, 0

    def __call__(self, lo: int, hi: int) -> list[bytes]:
        self.count += hi - lo
        return self.read(lo, hi)


def median_s(fn, times: int) -> float:
    out = []
    for _ in range(times):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def per_call_us(fn, calls: int, rounds: int) -> float:
    """Median over ``rounds`` blocks of ``calls`` calls, per call, in microseconds."""
    return median_s(lambda: [fn() for _ in range(calls)], rounds) / calls * 1e6


def proof_rows(kind: str, n: int, read, rows: list, times: int) -> None:
    """Inclusion and consistency proofs over ``n`` leaves read through ``read``, whole and
    after a compaction of the first 90%."""
    def row(figure: str, make, counted: Counted) -> None:
        counted.count = 0
        t = median_s(make, times)
        rows.append({"figure": f"{figure} ({kind})", "value": t * 1e3, "unit": "ms",
                     "leaves_read": counted.count // times})

    c = Counted(read)
    row(f"inclusion proof, leaf {n // 2:,} of {n:,}",
        lambda: merkle.inclusion_proof(n // 2, n, c), c)
    row(f"consistency proof, {n - 1000:,} -> {n:,}",
        lambda: merkle.consistency_proof(n - 1000, n, c), c)
    half = 1 << (n.bit_length() - 1)
    row(f"consistency proof, {half:,} -> {n:,} (old root apart)",
        lambda: (merkle.consistency_proof(half, n, c), merkle.subtree_root(0, half, c)), c)
    # Roots of every whole block of BLOCK leaves, as a derived table could keep them: a
    # proof then reads only inside the leaf's block and the last, partial one.
    blocks = {(lo, lo + BLOCK): merkle.root_of(read(lo, lo + BLOCK))
              for lo in range(0, n - BLOCK + 1, BLOCK)}
    row(f"inclusion proof, leaf {n // 2:,} of {n:,}, {BLOCK:,}-leaf block roots stored",
        lambda: merkle.inclusion_proof(n // 2, n, c, blocks, chunk=BLOCK), c)
    row(f"consistency proof, {n - 1000:,} -> {n:,}, {BLOCK:,}-leaf block roots stored",
        lambda: merkle.consistency_proof(n - 1000, n, c, blocks, chunk=BLOCK), c)
    a = n * 9 // 10
    known = merkle.subtrees(frontier_at(read, a), a)  # what the anchor would keep
    m = n * 95 // 100
    row(f"inclusion proof, leaf {m:,}, compacted before {a:,}",
        lambda: merkle.inclusion_proof(m, n, c, known, a), c)
    row(f"consistency proof, {a:,} -> {n:,}, compacted before {a:,}",
        lambda: merkle.consistency_proof(a, n, c, known, a), c)


def frontier_at(read, a: int) -> tuple[bytes, ...]:
    front: tuple[bytes, ...] = ()
    for lo in range(0, a, merkle.CHUNK):
        hi = min(a, lo + merkle.CHUNK)
        front = merkle.extend(front, lo, read(lo, hi))
    return front


def store_reader(n: int, work: Path):
    """A real node store of ``n`` synthetic events (`membership import`), read as leaves."""
    log = work / "log.jsonl"
    with open(log, "w") as f:
        for line in export_lines(member_events("node0", n, START, 3, 1, 1000, 0.01)):
            f.write(line + "\n")
    base = work / "node"
    r = subprocess.run([membership_command(), "import", "--base-dir", str(base), str(log)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"membership import failed: {r.stderr.decode(errors='replace')}")
    conn = sqlite3.connect(base / "membership.db")

    def read(lo: int, hi: int) -> list[bytes]:
        return [merkle.leaf_hash(h) for (h,) in conn.execute(
            "SELECT hash FROM event WHERE seq > ? AND seq <= ? ORDER BY seq", (lo, hi))]

    return read, conn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 leaves, for CI")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    n = 20_000 if args.quick else 1_000_000
    times = 1 if args.quick else 3
    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    rows: list[dict] = []

    t = time.perf_counter()
    front = merkle.extend((), 0, leaves)
    rows.append({"figure": f"verify's pass: the frontier of {n:,} leaves", "value":
                 (time.perf_counter() - t) * 1e3, "unit": "ms", "leaves_read": n})
    state = {"front": front, "size": n}

    def one_append() -> None:
        state["front"] = merkle.append(state["front"], state["size"], leaves[state["size"] % n])
        state["size"] += 1

    rows.append({"figure": f"frontier append at size {n:,}+", "value":
                 per_call_us(one_append, 1000, 201), "unit": "us", "leaves_read": 1})
    blob = merkle.encode(front, n)
    event_hash = bytes(32)

    def handler_step() -> None:
        size, f = merkle.decode(blob)
        f = merkle.append(f, size, merkle.leaf_hash(event_hash))
        merkle.encode(f, size + 1)
        merkle.root(f, size + 1)

    rows.append({"figure": "handler step: decode + leaf hash + append + encode + root",
                 "value": per_call_us(handler_step, 1000, 201), "unit": "us",
                 "leaves_read": 1})
    rows.append({"figure": f"root from the frontier at size {n:,}", "value": per_call_us(
        lambda: merkle.root(front, n), 1000, 101), "unit": "us", "leaves_read": 0})
    worst = (1 << (n.bit_length() - 1)) - 1  # all bits set: the longest frontier below n
    wfront = merkle.extend((), 0, leaves[:worst])
    rows.append({"figure": f"root from the frontier at size {worst:,} (longest)", "value":
                 per_call_us(lambda: merkle.root(wfront, worst), 1000, 101), "unit": "us",
                 "leaves_read": 0})

    proof_rows("in-memory list", n, lambda lo, hi: leaves[lo:hi], rows, times)
    work = Path(tempfile.mkdtemp(prefix="membership-merkle-bench-"))
    try:
        read, conn = store_reader(n, work)
        try:
            proof_rows("SQLite store", n, read, rows, times)
        finally:
            conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"quick": args.quick, "leaves": n, "rows": rows}))
        return 0
    print(f"membership-log Merkle core, in-process ({'quick' if args.quick else 'full'} run, "
          f"{n:,} leaves)")
    print(f"{'figure':<96} {'measured':>12}  {'leaves read':>11}")
    for r in rows:
        print(f"{r['figure']:<96} {r['value']:>9.2f} {r['unit']:<2}  {r['leaves_read']:>11,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
