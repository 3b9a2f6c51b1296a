"""Realistic synthetic logs for benchmarks and tests, through the real append path (the
journal's hash chain, then the one fold): a cluster whose members now and then fail and
rejoin, amid the updates, queries and user events that make up most of a real log."""

from __future__ import annotations

import random

from . import derive, nodestore, settings
from .raw import encode_env

BATCH = 10_000


def member_events(observer: str, n: int, start_us: int, members: int = 3, seed: int = 1,
                  step_us: int = 1000, flap_rate: float = 0.01):
    """``n`` events as the handler would record them (the SERF_* variables Serf sets, its
    member-line format). Like a real cluster's log, most are not failures: tag updates,
    ``membership-live`` queries and user events; about ``flap_rate`` of them are a member
    failing, and as many a failed member rejoining."""
    rng = random.Random(seed)
    failed: list[int] = []
    own = {"SERF_SELF_NAME": observer, "SERF_SELF_ROLE": ""}

    def env(**variables) -> bytes:
        return encode_env({**own, **{f"SERF_{k}": v for k, v in variables.items()}})

    def line(m: int, tags: str = "") -> bytes:
        return f"node{m}\t192.168.{m // 250}.{m % 250 + 1}\t\t{tags}\n".encode()

    for i in range(n):
        at = start_us + (i + 1) * step_us
        roll = rng.random()
        if failed and roll < flap_rate:
            m = failed.pop(rng.randrange(len(failed)))
            yield (at, observer, "serf", env(EVENT="member-join"), line(m))
        elif roll < 2 * flap_rate and len(failed) < members:
            m = rng.choice([k for k in range(members) if k not in failed])
            failed.append(m)
            yield (at, observer, "serf", env(EVENT="member-failed"), line(m))
        elif roll < 0.55:
            m = rng.randrange(members)
            yield (at, observer, "serf", env(EVENT="member-update"),
                   line(m, f"build={i},dc=east"))
        elif roll < 0.85:
            yield (at, observer, "serf", env(EVENT="query", QUERY_NAME="membership-live",
                                             QUERY_LTIME=str(i)), b"\n")
        else:
            yield (at, observer, "serf", env(EVENT="user", USER_EVENT="deploy",
                                             USER_LTIME=str(i)), f"release-{i}\n".encode())


def make_store(base_dir: str, observer: str, n: int, start_us: int = 1_700_000_000_000_000,
               members: int = 3, catalog: bytes | None = None, progress=None,
               flap_rate: float = 0.01, **kw) -> settings.Settings:
    """A node store holding ``n`` synthetic member events (plus the catalog, if given)."""
    import os

    os.makedirs(base_dir, exist_ok=True)
    if catalog is not None:
        with open(os.path.join(base_dir, "catalog.json"), "wb") as f:
            f.write(catalog)
    s = settings.resolve(base_dir, **kw)
    from .admin import init

    init(s, observer=observer, received_us=start_us)
    store = nodestore.NodeStore(s.sqlite_path)
    try:
        batch = []
        done = 0
        for item in member_events(observer, n, start_us, members, flap_rate=flap_rate):
            batch.append(item)
            if len(batch) == BATCH:
                with store.write():
                    store.append(batch)
                done += len(batch)
                batch = []
                if progress:
                    progress(done, n)
        if batch:
            with store.write():
                store.append(batch)
        derive.catch_up(store, nodestore.NODE, s.live_file)
    finally:
        store.close()
    return s


def main(argv: list[str] | None = None) -> int:
    """``python -m membership_log.synthetic --base-dir DIR --events N``: load a synthetic
    node log through the real append path, with a progress bar on a terminal."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(prog="python -m membership_log.synthetic",
                                     description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--base-dir", required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--observer", default="node0")
    parser.add_argument("--flap-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("appending", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("events", total=args.events)
            make_store(args.base_dir, args.observer, args.events, members=args.members,
                       flap_rate=args.flap_rate,
                       progress=lambda done, total: bar.update(task, completed=done))
    else:
        make_store(args.base_dir, args.observer, args.events, members=args.members,
                   flap_rate=args.flap_rate)
    print(f"{args.events:,} events in {args.base_dir} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
