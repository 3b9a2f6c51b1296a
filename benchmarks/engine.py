"""Post-mortems on a year of history: the history engine's figures beside their targets.

Every figure is a whole `membership` process (imports included), measured here in one run,
median of several where it is cheap enough; data is loaded the way an operator would,
through `membership import` of exported JSON lines (synthetic, realistic logs).

    .venv/bin/python benchmarks/engine.py            # the full sizes (~10 minutes)
    .venv/bin/python benchmarks/engine.py --quick    # small sizes, to check it runs (CI)

Sections (targets from issue 12, tightened by issue 19 where marked):
- node store, 1,000,000 events: `replay --since` the last 1,000 (< 0.3 s), `state --at`
  (< 0.25 s), `verify` (< 5 s, issue 19), full `replay --json` (>= 100,000 events/s),
  `import` (< 60 s).
- central store, 4 observers, 1.3M events (PostgreSQL): `ship` with the derived tables kept
  (>= 50,000 events/s), merged `audit` (< 1.5 s), merged `state --at` (< 0.5 s), merged
  `replay --since` the last 1,000 (< 0.5 s).
- cluster size: importing 100,000 events of a 1,000-member cluster within 2x of a 3-member one.
- a busy cluster (200 nodes, 1M events, 62% failures and rejoins): import >= 30,000
  events/s, `audit --json` < 1 s, `state --at` < 0.2 s, <= 200 bytes per event (issue 19).
- retention (issue 14): `compact` of the first 900,000 of the 1,000,000 events < 30 s, the
  file at most 15% of its size before, `verify` after it < 1 s, and no read slower than
  before (ratio after / before, 10% noise allowed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from membership_log.core.timespec import iso
from membership_log.demo.localcluster import membership_command
from membership_log.demo.synthetic import export_lines, member_events

START = 1_700_000_000_000_000
PG_ADMIN = os.environ.get("MEMBERSHIP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def run(argv: list[str], stdout=subprocess.DEVNULL) -> float:
    """Seconds one whole `membership` process takes; it must succeed."""
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace')}")
    return elapsed


#: Runs per median; --quick (which gives no verdict) runs each command once.
REPEAT = True


def median(argv: list[str], times: int) -> float:
    return statistics.median(run(argv) for _ in range(times if REPEAT else 1))


def write_log(path: Path, n: int, members: int, flap: float, observer: str = "node0",
              start: int = START, step_us: int = 1000, seed: int = 1) -> None:
    with open(path, "w") as f:
        for line in export_lines(member_events(observer, n, start, members, seed, step_us,
                                               flap)):
            f.write(line + "\n")


def db_size(base: Path) -> int:
    return sum(p.stat().st_size for p in base.glob("membership.db*") if p.is_file())


def node_section(m: str, work: Path, n: int, rows: list) -> None:
    log = work / "node.jsonl"
    write_log(log, n, 3, 0.01)
    base = work / "node"
    t = run([m, "import", "--base-dir", str(base), str(log)])
    rows.append(("node", f"import of {n:,} events", t, "s", 60 * n / 1e6, "<="))
    last = START + n * 1000
    rows.append(("node", "state --at (middle of the log)", median(
        [m, "state", "--base-dir", str(base), "--at", iso(START + n * 500)], 7), "s", 0.25,
        "<="))
    rows.append(("node", "replay --since the last 1,000 --json", median(
        [m, "replay", "--base-dir", str(base), "--since", iso(last - 1000 * 1000), "--json"],
        5), "s", 0.3, "<="))
    rows.append(("node", "verify", median([m, "verify", "--base-dir", str(base)], 3), "s",
                 5 * n / 1e6, "<="))
    t = run([m, "replay", "--base-dir", str(base), "--json"])
    rows.append(("node", "full replay --json", n / t, "events/s", 100_000, ">="))
    rows.append(("node", "bytes per event", db_size(base) / n, "B", 250, "<="))
    return base


def _reads(m: str, base: Path, n: int) -> dict:
    """Reads about the last 5% of the log: after the compaction below, they must answer as
    before (the last 1,000 events, or fewer on a quick run's small log)."""
    last = START + n * 1000
    recent = min(1000, n // 20)
    return {
        "state --at": median([m, "state", "--base-dir", str(base), "--at",
                              iso(START + n * 950)], 5),
        "replay --since the last 1,000": median(
            [m, "replay", "--base-dir", str(base), "--since", iso(last - recent * 1000),
             "--json"], 5),
        "audit --json (last 5%)": median(
            [m, "audit", "--base-dir", str(base), "--json", "--since", iso(START + n * 950),
             "--until", iso(last + 1)], 5),
    }


def retention_section(m: str, base: Path, n: int, rows: list) -> None:
    before = _reads(m, base, n)
    size = db_size(base)
    t = run([m, "compact", "--base-dir", str(base), "--force", "--before",
             iso(START + n * 900 + 1)])
    rows.append(("retention", f"compact the first {n * 9 // 10:,} of {n:,} events", t, "s",
                 30 * n / 1e6, "<="))
    rows.append(("retention", "file after / before", db_size(base) / size, "x", 0.15, "<="))
    rows.append(("retention", "verify after compacting", median(
        [m, "verify", "--base-dir", str(base)], 3), "s", 1.0 * n / 1e6, "<="))
    after = _reads(m, base, n)
    for what, t0 in before.items():
        rows.append(("retention", f"{what}: after / before", after[what] / t0, "x", 1.1,
                     "<="))


def cluster_size_section(m: str, work: Path, n: int, rows: list) -> None:
    times = {}
    for members in (3, 1000):
        log = work / f"c{members}.jsonl"
        write_log(log, n, members, 0.01)
        times[members] = min(run([m, "import", "--base-dir", str(work / f"c{members}"),
                                  str(log)]) for _ in range(1))
    rows.append(("cluster size", f"import {n:,} events, 3 members", times[3], "s", None, ""))
    rows.append(("cluster size", f"import {n:,} events, 1,000 members", times[1000], "s",
                 None, ""))
    rows.append(("cluster size", "1,000 members / 3 members", times[1000] / times[3], "x", 2.0,
                 "<="))


def busy_section(m: str, work: Path, n: int, rows: list) -> None:
    log = work / "busy.jsonl"
    write_log(log, n, 200, 0.31)
    base = work / "busy"
    t = run([m, "import", "--base-dir", str(base), str(log)])
    rows.append(("busy cluster", f"import {n:,} events (200 nodes, 62% fail/rejoin)", n / t,
                 "events/s", 30_000, ">="))
    rows.append(("busy cluster", "audit --json", median(
        [m, "audit", "--base-dir", str(base), "--json", "--until", iso(START + n * 1000 + 1)],
        5), "s", 1.0, "<="))
    rows.append(("busy cluster", "state --at (middle of the log)", median(
        [m, "state", "--base-dir", str(base), "--at", iso(START + n * 500)], 7), "s", 0.2,
        "<="))
    rows.append(("busy cluster", "bytes per event", db_size(base) / n, "B", 200, "<="))


def _pg_database() -> tuple[str, callable]:
    from sqlalchemy import create_engine, text

    from membership_log.stores.connect import driver_url

    name = f"membership_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(driver_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = :d"), {"d": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def central_section(m: str, work: Path, per_node: int, rows: list) -> None:
    url, drop = _pg_database()
    try:
        run([m, "db", "upgrade", "--db", url])
        total = 0
        ship_time = 0.0
        for k in range(4):
            log = work / f"o{k}.jsonl"
            # Four observers of one cluster, their clocks interleaved.
            write_log(log, per_node, 3, 0.01, observer=f"node{k}", start=START + k * 250,
                      seed=k + 1)
            base = work / f"o{k}"
            run([m, "import", "--base-dir", str(base), str(log)])
            ship_time += run([m, "ship", "--base-dir", str(base), "--to", url])
            total += per_node
        rows.append(("central", f"ship {total:,} events of 4 observers (derived kept)",
                     total / ship_time, "events/s", 50_000, ">="))
        last = START + per_node * 1000
        rows.append(("central", "merged audit --json", median(
            [m, "audit", "--db", url, "--json", "--until", iso(last + 1000)], 3), "s", 1.5,
            "<="))
        rows.append(("central", "merged state --at", median(
            [m, "state", "--db", url, "--at", iso(START + per_node * 500)], 5), "s", 0.5, "<="))
        rows.append(("central", "merged replay --since the last 1,000 --json", median(
            [m, "replay", "--db", url, "--since", iso(last - 250 * 1000), "--json"], 3), "s",
            0.5, "<="))
    finally:
        drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--only", choices=["node", "central", "cluster-size", "busy"],
                        action="append", help="run only these sections")
    args = parser.parse_args()
    m = membership_command()
    scale = 100 if args.quick else 1
    global REPEAT
    REPEAT = not args.quick
    work = Path(tempfile.mkdtemp(prefix="membership-engine-bench-"))
    rows: list = []
    sections = args.only or ["node", "cluster-size", "busy", "central"]
    try:
        if "node" in sections:
            base = node_section(m, work, 1_000_000 // scale, rows)
            retention_section(m, base, 1_000_000 // scale, rows)
        if "cluster-size" in sections:
            cluster_size_section(m, work, 100_000 // scale, rows)
        if "busy" in sections:
            busy_section(m, work, 1_000_000 // scale, rows)
        if "central" in sections:
            central_section(m, work, 325_000 // scale, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = []
    for section, what, value, unit, target, sense in rows:
        # Targets are for the full sizes; quick sizes only show the script works.
        met = None if target is None or args.quick else (
            value <= target if sense == "<=" else value >= target)
        out.append({"section": section, "figure": what, "value": value, "unit": unit,
                    "target": target, "sense": sense, "met": met})
    if args.json:
        print(json.dumps({"quick": args.quick, "rows": out}))
        return 0
    print(f"membership-log history engine, whole processes ({'quick' if args.quick else 'full'} "
          f"sizes), {time.strftime('%Y-%m-%d')}, cpython {sys.version.split()[0]}")
    print(f"{'section':<13} {'figure':<58} {'measured':>14}  {'target':>14}")
    for r in out:
        value = f"{r['value']:,.0f}" if r["unit"] == "events/s" else f"{r['value']:.3f}"
        target = "" if r["target"] is None else f"{r['sense']} {r['target']:,.2f}".rstrip("0") \
            .rstrip(".")
        mark = "" if r["met"] is None else ("ok" if r["met"] else "MISSED")
        print(f"{r['section']:<13} {r['figure']:<58} {value + ' ' + r['unit']:>14}  "
              f"{target:>14}  {mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
