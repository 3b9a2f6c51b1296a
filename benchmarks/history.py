"""Time travel on long logs: `state --at` should not slow down as the log grows.

Builds two node stores of synthetic member events through the real append path (small and
large), then measures side by side, in one run:

- `state --at T` in-process (the command's own code, by CliRunner) at random points of each
  log: median milliseconds, and the large/small ratio (target <= 1.5, and < 50 ms);
- `audit --json` over the whole log, in-process: median of 3 (target < 1 s on 1,000,000);
- the baseline: a full fold from the first event to the same points;
- storage: bytes per event of the store file (target <= 250);
- `replay --json` streamed through a pipe: peak RSS for each log (memory must stay flat).

    .venv/bin/python benchmarks/history.py               # 10,000 vs 1,000,000 events
    .venv/bin/python benchmarks/history.py --quick       # 2,000 vs 50,000 (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from typer.testing import CliRunner

from membership_log import events, project
from membership_log.cli import app
from membership_log.localcluster import membership_command
from membership_log.store import Store
from membership_log.synthetic import make_store


def _progress(label):
    def show(done, total):
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{label}: {done:,}/{total:,}")
            sys.stderr.flush()
    return show


def measure(base: str, n: int, points: int, rng: random.Random) -> dict:
    runner = CliRunner()
    at_ms, fold_ms = [], []
    targets = [rng.randint(1, n) for _ in range(points)]
    for target in targets:
        start = time.perf_counter()
        r = runner.invoke(app, ["state", "--base-dir", base, "--at", f"@{target}", "--json"])
        at_ms.append((time.perf_counter() - start) * 1000)
        assert r.exit_code == 0, r.output
    audit_ms = []
    for _ in range(3):
        start = time.perf_counter()
        r = runner.invoke(app, ["audit", "--base-dir", base, "--json"])
        audit_ms.append((time.perf_counter() - start) * 1000)
        assert r.exit_code == 0, r.output
    with Store(f"sqlite:///{base}/membership.db") as st:
        for target in targets[:3]:  # the baseline is slow on a long log: three points
            start = time.perf_counter()
            project.fold(events.parse(raw) for raw in st.raw_events(until=target))
            fold_ms.append((time.perf_counter() - start) * 1000)
    size = os.path.getsize(f"{base}/membership.db")
    # A small helper starts replay and reads its output: a child forked from this (large)
    # process would count this process's pages in its peak RSS until it execs.
    helper = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "lines = sum(1 for _ in p.stdout)\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "print(lines, status, usage.ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", helper, membership_command(), "replay",
                          "--json", "--base-dir", base], capture_output=True, text=True,
                         check=True).stdout.split()
    lines, status, maxrss_kb = (int(x) for x in out)
    assert lines == n and status == 0, (lines, status)
    return {"events": n, "state_at_ms": statistics.median(at_ms),
            "audit_ms": statistics.median(audit_ms),
            "full_fold_ms": statistics.median(fold_ms), "bytes_per_event": size / n,
            "replay_peak_rss_mb": maxrss_kb / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2,000 vs 50,000 events (CI)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    small, large = (2_000, 50_000) if args.quick else (args.small, args.large)
    work = tempfile.mkdtemp(prefix="membership-history-bench-")
    rng = random.Random(5)
    rows = []
    for n in (small, large):
        base = os.path.join(work, f"n{n}")
        make_store(base, "node0", n, members=3, progress=_progress(f"building {n:,} events"))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        rows.append(measure(base, n, args.points, rng))
    ratio = rows[1]["state_at_ms"] / rows[0]["state_at_ms"]
    if args.json:
        print(json.dumps({"rows": rows, "state_at_ratio": round(ratio, 2)}))
        return 0
    print(f"membership state --at (in-process, median of {args.points} random points) and "
          f"storage, one run")
    print(f"{'events':>10} {'state --at':>11} {'audit':>9} {'full fold':>10} "
          f"{'bytes/event':>12} {'replay RSS':>11}")
    for r in rows:
        print(f"{r['events']:>10,} {r['state_at_ms']:9.1f}ms {r['audit_ms']:7.0f}ms "
              f"{r['full_fold_ms']:8.0f}ms {r['bytes_per_event']:12.0f} "
              f"{r['replay_peak_rss_mb']:9.0f}MB")
    print(f"state --at, large/small: {ratio:.2f} (target <= 1.5; and < 50 ms)")
    print(f"audit over {rows[1]['events']:,} events: {rows[1]['audit_ms']:.0f} ms (target < 1 s)"
          f"; bytes/event target <= 250; replay RSS must not grow with the log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
