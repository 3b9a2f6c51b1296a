"""How fast `membership ship` copies a node's log to the central PostgreSQL store.

Builds a node store of N synthetic member events (the real append path), creates a fresh
database on the server, and ships into it, timing the copy alone; repeats and reports the
median events per second next to the target.

    .venv/bin/python benchmarks/ship_throughput.py              # 200,000 events, 3 runs
    .venv/bin/python benchmarks/ship_throughput.py --quick      # 20,000 events, 1 run (CI)

MEMBERSHIP_TEST_PG_URL names the server (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid

from sqlalchemy import create_engine, text

from membership_log import store
from membership_log.synthetic import make_store

TARGET = 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 1 run (CI)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n, runs = (20_000, 1) if args.quick else (args.events, args.runs)
    server = os.environ.get("MEMBERSHIP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    work = tempfile.mkdtemp(prefix="membership-ship-bench-")
    local = make_store(os.path.join(work, "node0"), "node0", n)
    admin = create_engine(store.driver_url(server), isolation_level="AUTOCOMMIT")
    rates = []
    for _ in range(runs):
        name = f"membership_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.rpartition("/")[0] + "/" + name
        try:
            store.upgrade(url)
            start = time.perf_counter()
            result = store.ship(local.sqlite_path, url)
            elapsed = time.perf_counter() - start
            assert result["copied"] == n, result
            rates.append(n / elapsed)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    median = statistics.median(rates)
    if args.json:
        print(json.dumps({"events": n, "runs": runs, "events_per_s": round(median),
                          "target": TARGET}))
        return 0
    print(f"membership ship: {n:,} events to a fresh PostgreSQL database, median of {runs}")
    print(f"{'events/s':>12} {'target':>10} {'ratio':>7}")
    print(f"{median:12,.0f} {TARGET:10,} {median / TARGET:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
