"""Realistic synthetic logs for benchmarks and tests, as ``membership export`` writes them,
loaded through ``membership import`` (the handler's own append path, then the one fold).

A cluster whose members now and then fail and rejoin, amid the updates, queries and user
events that make up most of a real log::

    python -m membership_log.demo.synthetic --events 1000000 > node0.jsonl
    membership import --base-dir /tmp/node0 node0.jsonl

or in one step, with a progress bar: ``python -m membership_log.demo.synthetic --base-dir DIR``.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import settings
from ..core.raw import GENESIS, chain_hash, encode_env
from ..core.timespec import iso


def member_events(observer: str, n: int, start_us: int, members: int = 3, seed: int = 1,
                  step_us: int = 1000,
                  flap_rate: float = 0.01) -> Iterator[tuple[int, str, str, bytes, bytes]]:
    """``n`` events as the handler would record them: ``(received_us, observer, source, env
    blob, stdin)`` with the SERF_* variables Serf sets and its member-line format. Most are
    not failures: tag updates, ``membership-live`` queries and user events; about
    ``flap_rate`` of them are a member failing, and as many a failed member rejoining. The
    observer itself never fails (its own rejoin would be an agent restart)."""
    rng = random.Random(seed)
    alive = list(range(1, members + 1))  # member 0 is not used: node1..nodeN
    failed: list[int] = []
    own = {"SERF_SELF_NAME": observer, "SERF_SELF_ROLE": ""}
    envs: dict[tuple, bytes] = {}

    def env(**variables: str) -> bytes:
        key = tuple(sorted(variables.items()))
        blob = envs.get(key)
        if blob is None:
            blob = encode_env({**own, **{f"SERF_{k}": v for k, v in variables.items()}})
            if len(envs) < 64:
                envs[key] = blob
        return blob

    def line(m: int, tags: str = "") -> bytes:
        return f"node{m}\t192.168.{m // 250}.{m % 250 + 1}\t\t{tags}\n".encode()

    for i in range(n):
        at = start_us + (i + 1) * step_us
        roll = rng.random()
        if failed and roll < flap_rate:
            m = failed.pop(rng.randrange(len(failed)))
            alive.append(m)
            yield (at, observer, "serf", env(EVENT="member-join"), line(m))
        elif roll < 2 * flap_rate and alive:
            k = rng.randrange(len(alive))
            alive[k], alive[-1] = alive[-1], alive[k]
            m = alive.pop()
            failed.append(m)
            yield (at, observer, "serf", env(EVENT="member-failed"), line(m))
        elif roll < 0.55:
            m = rng.randint(1, members)
            yield (at, observer, "serf", env(EVENT="member-update"),
                   line(m, f"build={i},dc=east"))
        elif roll < 0.85:
            yield (at, observer, "serf", env(EVENT="query", QUERY_NAME="membership-live",
                                             QUERY_LTIME=str(i)), b"\n")
        else:
            yield (at, observer, "serf", env(EVENT="user", USER_EVENT="deploy",
                                             USER_LTIME=str(i)), f"release-{i}\n".encode())


def export_lines(items: Iterable[tuple], first_seq: int = 1,
                 prev: bytes = GENESIS) -> Iterator[str]:
    """Items as the JSON lines ``membership export`` writes (hash chain included)."""
    from ..core.raw import decode_env

    seq = first_seq - 1
    for received_us, observer, source, env, stdin in items:
        seq += 1
        prev = chain_hash(prev, seq, received_us, observer, source, env, stdin)
        yield json.dumps({"seq": seq, "received": iso(received_us), "observer": observer,
                          "source": source, "env": decode_env(env),
                          "stdin_b64": base64.b64encode(stdin).decode("ascii"),
                          "hash": prev.hex()}, separators=(",", ":"))


def make_store(base_dir: str, observer: str, n: int, start_us: int = 1_700_000_000_000_000,
               members: int = 3, catalog: bytes | None = None,
               progress: Callable[[int, int | None], None] | None = None,
               flap_rate: float = 0.01, **kw: Any) -> settings.Settings:
    """A node store holding ``n`` synthetic events, loaded through import (after the
    catalog, if given, recorded as ``init`` records it)."""
    import os

    from ..history import setup as admin
    from ..history import transfer

    os.makedirs(base_dir, exist_ok=True)
    s = settings.resolve(base_dir, **kw)
    if catalog is not None:
        with open(os.path.join(base_dir, "catalog.json"), "wb") as f:
            f.write(catalog)
        admin.init(s, observer=observer, received_us=start_us)
    lines = export_lines(member_events(observer, n, start_us, members, flap_rate=flap_rate))
    transfer.import_(s, lines, progress)
    return s


def main(argv: list[str] | None = None) -> int:
    """``python -m membership_log.demo.synthetic``: a synthetic node log as export JSON lines on
    stdout (or -o FILE), or loaded into --base-dir through import, with a progress bar on a
    terminal."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(prog="python -m membership_log.demo.synthetic",
                                     description=(main.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base-dir", help="load into this node store instead of printing")
    parser.add_argument("-o", "--output", help="write the JSON lines to this file")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--observer", default="node0")
    parser.add_argument("--flap-rate", type=float, default=0.01)
    parser.add_argument("--start-us", type=int, default=1_700_000_000_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    items = member_events(args.observer, args.events, args.start_us, args.members, args.seed,
                          flap_rate=args.flap_rate)
    if args.base_dir is None:
        out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
        try:
            for line in export_lines(items):
                out.write(line + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        return 0
    from ..history import transfer

    s = settings.resolve(args.base_dir)
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("loading", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("events", total=args.events)
            transfer.import_(s, export_lines(items),
                             lambda done, total: bar.update(task, completed=done))
    else:
        transfer.import_(s, export_lines(items))
    print(f"{args.events:,} events in {args.base_dir} ({time.perf_counter() - start:.1f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
