"""How long Serf waits for `membership handle`, next to the interpreter's bare start-up.

Serf runs handlers one at a time with no timeout, so the handler's whole-process wall time is
the product's most important number. Each round runs, back to back and in turn, the bare
interpreter (`python -c pass`) and the handler for each case, so machine noise hits all of
them alike; the table gives medians over the rounds and the ratio to the bare start-up.

    .venv/bin/python benchmarks/handler_startup.py            # 200 rounds
    .venv/bin/python benchmarks/handler_startup.py --quick    # 15 rounds (CI)
    .venv/bin/python benchmarks/handler_startup.py --live-format droonga-1.1
    .venv/bin/python benchmarks/handler_startup.py --store-group membership  # and with one

With ``--live-format droonga-1.1`` the handler writes droonga-engine 1.1's
``state/cluster-state.json``, and the member lines are Droonga 1.1's: named ``host:port/tag``,
with its tags (type, role, cluster_id of the catalog, internal-name).

Measure a non-editable install (`pip install .`, as scripts/demo and scripts/test make):
an editable install adds an import hook to every interpreter start-up in its venv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from membership_log.demo.localcluster import catalog_for, membership_command

TARGET_RATIO = 2.5


def _timed(argv: list[str], stdin: bytes, env: dict) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stderr.decode(errors='replace')}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="15 rounds, for CI")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--live-format", default="droonga",
                        help="the handler's --live-format (droonga, cluster-state, droonga-1.1)")
    parser.add_argument("--store-group", metavar="GROUP", help="also a 1-member event into a "
                        "store made group-readable by GROUP (its writers keep -wal and -shm)")
    args = parser.parse_args()
    rounds = 15 if args.quick else args.rounds
    membership = membership_command()
    python = str(Path(membership).with_name("python"))
    base = Path(tempfile.mkdtemp(prefix="membership-bench-"))
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(1000)]
    catalog = catalog_for(ips[:3])
    (base / "catalog.json").write_bytes(catalog)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    serf = dict(clean, SERF_SELF_NAME="node0")
    handler = [membership, "handle", "--base-dir", str(base)]
    if args.live_format != "droonga":
        handler += ["--live-format", args.live_format]
    if args.live_format == "droonga-1.1":
        from membership_log.core.droonga import cluster_id

        cid = cluster_id(json.loads(catalog))

        def member(ip: str) -> bytes:
            return (f"{ip}:10031/droonga\t{ip}\tservice-provider\ttype=engine,"
                    f"role=service-provider,cluster_id={cid},internal-name={ip}:10032/droonga"
                    f"\n").encode()

        serf["SERF_SELF_NAME"] = f"{ips[0]}:10031/droonga"
        one = member(ips[1])
        many = b"".join(member(ip) for ip in ips)
    else:
        one = b"node1\t10.0.0.2\t\t\n"
        many = b"".join(f"n{i}\t{ip}\t\t\n".encode() for i, ip in enumerate(ips))
    # Alternate failed/join so every run changes the live file (the full write path).
    cases = {
        "bare interpreter (python -c pass)": lambda i: ([python, "-c", "pass"], b"", clean),
        "handle: 1-member event": lambda i: (
            handler, one, dict(serf, SERF_EVENT=("member-failed", "member-join")[i % 2])),
        "handle: 1,000-member event": lambda i: (
            handler, many, dict(serf, SERF_EVENT=("member-failed", "member-join")[i % 2])),
        "handle: membership-live query": lambda i: (
            handler, b"", dict(serf, SERF_EVENT="query", SERF_QUERY_NAME="membership-live",
                               SERF_QUERY_LTIME=str(i))),
    }
    if args.store_group:
        shared = Path(tempfile.mkdtemp(prefix="membership-bench-group-"))
        (shared / "catalog.json").write_bytes(catalog_for(ips[:3]))
        grouped = [membership, "handle", "--base-dir", str(shared), *handler[4:],
                   "--store-group", args.store_group]
        cases["handle: 1-member event, --store-group"] = lambda i: (
            grouped, one, dict(serf, SERF_EVENT=("member-failed", "member-join")[i % 2]))
        _timed(*cases["handle: 1-member event, --store-group"](0))
    _timed(*cases["handle: 1-member event"](0))  # sets the store up (once, slow path)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(rounds):
        for name, make in cases.items():
            times[name].append(_timed(*make(i)))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    bare = medians["bare interpreter (python -c pass)"]
    rows = []
    for name, med in medians.items():
        rows.append({"case": name, "median_ms": round(med, 2), "ratio": round(med / bare, 2)})
    one_many = medians["handle: 1,000-member event"] - medians["handle: 1-member event"]
    if args.json:
        print(json.dumps({"rounds": rounds, "rows": rows,
                          "many_minus_one_ms": round(one_many, 2)}, indent=2))
        return 0
    print(f"membership handle --live-format {args.live_format}, whole process, median of "
          f"{rounds} interleaved rounds ({sys.implementation.name} {sys.version.split()[0]})")
    print(f"{'case':38} {'median':>9} {'x bare':>7}  target")
    for row in rows:
        target = "" if row["ratio"] == 1 else (
            f"<= {TARGET_RATIO}x" if "1,000" not in row["case"] else "")
        print(f"{row['case']:38} {row['median_ms']:7.1f}ms {row['ratio']:6.2f}x  {target}")
    print(f"1,000-member minus 1-member event: {one_many:.1f} ms (target <= 100 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
