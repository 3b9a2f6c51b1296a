"""Realistic synthetic logs for benchmarks and tests, through the real append path (the
journal's hash chain, then the one fold): a cluster whose members fail and rejoin."""

from __future__ import annotations

import random

from . import journal, settings, store

BATCH = 10_000


def member_events(observer: str, n: int, start_us: int, members: int = 3, seed: int = 1,
                  step_us: int = 1000):
    """``n`` member events as the handler would record them: one member per event, failing
    and rejoining, with Serf's member-line format and the SERF_* variables Serf sets."""
    rng = random.Random(seed)
    alive = [True] * members
    for i in range(n):
        m = rng.randrange(members)
        kind = "member-failed" if alive[m] else "member-join"
        alive[m] = not alive[m]
        env = (f"SERF_EVENT={kind}\0SERF_SELF_NAME={observer}\0SERF_SELF_ROLE=").encode()
        stdin = f"node{m}\t192.168.{m // 250}.{m % 250 + 1}\t\t\n".encode()
        yield (start_us + (i + 1) * step_us, observer, "serf", env, stdin)


def make_store(base_dir: str, observer: str, n: int, start_us: int = 1_700_000_000_000_000,
               members: int = 3, catalog: bytes | None = None, progress=None,
               **kw) -> settings.Settings:
    """A node store holding ``n`` synthetic member events (plus the catalog, if given)."""
    import os

    os.makedirs(base_dir, exist_ok=True)
    if catalog is not None:
        with open(os.path.join(base_dir, "catalog.json"), "wb") as f:
            f.write(catalog)
    s = settings.resolve(base_dir, **kw)
    store.init(s, observer=observer, received_us=start_us)
    j = journal.Journal(s.sqlite_path)
    try:
        batch = []
        done = 0
        for item in member_events(observer, n, start_us, members):
            batch.append(item)
            if len(batch) == BATCH:
                with j.write():
                    j.append(batch)
                done += len(batch)
                batch = []
                if progress:
                    progress(done, n)
        if batch:
            with j.write():
                j.append(batch)
        journal.catch_up(j, s.live_file)
    finally:
        j.close()
    return s
