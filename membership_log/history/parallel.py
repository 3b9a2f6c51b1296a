"""Both cores for the long jobs: a year of history is verified, replayed or audited in parts.

A log splits at its checkpoints into stretches that fold independently (each starts from the
checkpoint's state), and an audit splits by node. :func:`fork_map` runs the first part here
and the others in forked children, each with its own connection to the store (never the
parent's), and hands back their results in order. Where ``fork`` is missing, or the work is
small, it all runs here, one part after the other: the answers are the same either way.
"""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import MembershipError
from ..stores.protocol import Store

#: Below this many events a job is not worth a second process.
MIN_PARALLEL = 50_000


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector off for a long job, back as it was after. An audit, a
    replay or a verify of a year builds hundreds of thousands of tuples and strings and no
    reference cycles, and the collector would scan the growing heap again and again for
    nothing: a quarter of an audit's CPU time (benchmarks/engine.py). For bounded work only
    (a command that ends), never around a server's loop; a cycle made meanwhile is
    collected once it is back on. Forked workers inherit it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def workers() -> int:
    """How many parts to cut a long job into (the cores this process may use, at most 4)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def fork_map(fn: Callable[[Any], Any], items: list) -> list:
    """``[fn(item) for item in items]``, the first here and the rest in forked children."""
    if len(items) < 2 or not hasattr(os, "fork"):
        return [fn(item) for item in items]
    children = []
    for item in items[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, hand the result over, leave without cleanup
            code = 0
            try:
                os.close(read_end)
                try:
                    data = pickle.dumps((True, fn(item)), pickle.HIGHEST_PROTOCOL)
                except BaseException as e:  # noqa: BLE001 - re-raised in the parent
                    data = pickle.dumps((False, f"{type(e).__name__}: {e}"))
                view = memoryview(data)
                while view:
                    view = view[os.write(write_end, view):]
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(write_end)
        children.append((pid, read_end))
    try:
        first = fn(items[0])
    finally:
        results = [_collect(pid, fd) for pid, fd in children]
    out = [first]
    for ok, value in results:
        if not ok:
            raise MembershipError(value)
        out.append(value)
    return out


def _collect(pid: int, fd: int) -> tuple:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    os.waitpid(pid, 0)
    try:
        return pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - the child died before answering
        return False, "a worker process ended without an answer"


def split_at_checkpoints(store: Store, origin: str, first: int, last: int, parts: int) -> list:
    """Boundaries ``[first - 1, b1, ..., last]`` cutting events first..last into about
    ``parts`` stretches, each starting at a usable checkpoint."""
    bounds = [first - 1]
    if parts > 1 and last - first + 1 >= MIN_PARALLEL:
        step = (last - first + 1) // parts
        for k in range(1, parts):
            point = store.checkpoint_at_or_before(origin, first - 1 + k * step)
            if point is not None and bounds[-1] < point[0] < last:
                bounds.append(point[0])
    bounds.append(last)
    return bounds
