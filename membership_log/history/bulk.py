"""The long outputs, on every core: a whole log's ``replay --json``, a busy year's
``audit --json``.

Same records, same bytes as the plain path (:func:`history.replay` and :func:`history.audit`
through :mod:`membership_log.render.jsondoc`); only the work is shared. A replay is cut at
checkpoints into stretches (each worker writes its JSON lines to a file of its own, copied
out in order); an audit is cut by node (each worker encodes its nodes; the parent puts them
in the report's order). Small jobs take the plain path.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from typing import Any

from ..core.timespec import Point
from ..render import jsondoc
from ..stores.protocol import Store
from . import api as history
from . import driver, parallel


def _at(seq: int) -> Point:
    return Point(f"@{seq}", None, seq)


def _replay_part(job: tuple) -> int:
    store, lo, hi, node, observer, dest = job
    own = isinstance(store, str)
    if own:
        store = history.open_store(store)
    try:
        out = dest if not isinstance(dest, str) else open(dest, "w")  # noqa: SIM115
        try:
            records = history.replay(store, _at(lo + 1), _at(hi), node, observer)
            jsondoc.write_lines(out, (jsondoc.replay_doc(r) for r in records))
        finally:
            if out is not dest:
                out.close()
        return hi - lo
    finally:
        if own:
            store.close()


def replay_json(url: str, store: Store, out: jsondoc.Lines, since: Point | None = None,
                until: Point | None = None, node: str | None = None,
                observer: str | None = None) -> None:
    """``replay --json`` of ``store`` (opened from ``url``) to ``out``."""
    scope = store.scope(observer)
    if scope.merged:  # merged logs: one stream by receive time
        jsondoc.write_lines(out, (jsondoc.replay_doc(r) for r in
                                  history.replay(store, since, until, node, observer)))
        return
    origin = scope.origins[0]
    records = history.replay(store, since, until, node, observer)
    first_record = next(records, None)  # every check of the window and the names, done
    if first_record is None:
        return
    first = first_record.raw.seq
    last = driver.point_seq(store, origin, until)
    bounds = parallel.split_at_checkpoints(store, origin, first, last, parallel.workers())
    if len(bounds) <= 2:
        jsondoc.write_lines(out, (jsondoc.replay_doc(r) for r in
                                  itertools.chain([first_record], records)))
        return
    records.close()
    files = []
    try:
        jobs = []
        dest: jsondoc.Lines | str  # the stream itself for the first share, a file after
        for k in range(len(bounds) - 1):
            if k == 0:
                dest = out
            else:
                fd, path = tempfile.mkstemp(prefix="membership-replay-", suffix=".jsonl")
                os.close(fd)
                files.append(path)
                dest = path
            jobs.append((store if k == 0 else url, bounds[k], bounds[k + 1], node, observer,
                         dest))
        parallel.fork_map(_replay_part, jobs)
        for path in files:
            with open(path) as f:
                shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
    finally:
        for path in files:
            try:
                os.unlink(path)
            except OSError:
                pass


def _audit_part(job: tuple) -> tuple:
    args: tuple[Point | None, Point | None, str | None, str | None]  # since until node observer
    kw: dict[str, Any]
    store, part, args, kw = job
    own = isinstance(store, str)
    if own:
        store = history.open_store(store)
    try:
        audit = history.audit(store, *args, part=part, **kw)
        delay = audit.detection_delay_us
        encoded = [((-n.downtime_us, -n.flaps, name), jsondoc.node_fragment(name, n, delay))
                   for name, n in audit.nodes.items()]
        return audit._replace(nodes={}), encoded
    finally:
        if own:
            store.close()


def audit_json(url: str, store: Store, since: Point | None = None, until: Point | None = None,
               node: str | None = None, observer: str | None = None, now: int | None = None,
               **kw: Any) -> str:
    """``audit --json`` of ``store`` (opened from ``url``): exactly the bytes of
    ``jsondoc.audit_text(history.audit(...))``."""
    kw["now"] = now if now is not None else history.now_us()
    args = (since, until, node, observer)
    scope = store.scope(observer)
    size = sum(store.head_seq(o) - store.first_seq(o) + 1 for o in scope.origins)
    k = parallel.workers()
    if node is not None or k < 2 or size < parallel.MIN_PARALLEL:
        return jsondoc.audit_text(history.audit(store, *args, **kw))
    # Shares by name: ranges of the incident table's key, cut where the nodes known now
    # would split evenly (any cut is correct; an even one is fast).
    names = sorted(history.state_at(store, None, observer).nodes)
    cuts = sorted({names[len(names) * i // k] for i in range(1, k)} if names else set())
    bounds = [None, *cuts, None]
    shares = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    parts = parallel.fork_map(_audit_part, [(store if i == 0 else url, share, args, kw)
                                            for i, share in enumerate(shares)])
    fragments = sorted((e for _, encoded in parts for e in encoded), key=lambda e: e[0])
    return jsondoc.audit_text(parts[0][0], [f for _, f in fragments])
