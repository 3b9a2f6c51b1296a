"""The long outputs, on every core: a whole log's ``replay --json``, a busy year's
``audit --json``.

Same records, same bytes as the plain path (:func:`history.replay` and :func:`history.audit`
through :mod:`membership_log.render.tables`); only the work is shared. A replay is cut at
checkpoints into stretches (each worker writes its JSON lines to a file of its own, copied
out in order); an audit is cut by node (each worker encodes its nodes; the parent puts them
in the report's order). Small jobs take the plain path.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..core.timespec import Point
from ..render import tables as render
from . import api as history
from . import driver as derive
from . import parallel


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
            render.write_json_lines(out, (render.replay_record(r) for r in records))
        finally:
            if out is not dest:
                out.close()
        return hi - lo
    finally:
        if own:
            store.close()


def replay_json(url: str, store, out, since=None, until=None, node=None, observer=None) -> None:
    """``replay --json`` of ``store`` (opened from ``url``) to ``out``."""
    one_log = not history._central(store) or observer is not None
    if not one_log:  # merged logs: one stream by receive time
        render.write_json_lines(out, (render.replay_record(r) for r in
                                      history.replay(store, since, until, node, observer)))
        return
    history.check_window(since, until)
    origin = history._origins(store, observer)[0] if history._central(store) else \
        history.NODE
    first = history._start_seq(store, origin, since)
    last = derive.point_seq(store, origin, until)
    bounds = parallel.split_at_checkpoints(store, origin, first, last, parallel.workers())
    if len(bounds) <= 2:
        render.write_json_lines(out, (render.replay_record(r) for r in
                                      history.replay(store, since, until, node, observer)))
        return
    local_observer = None if history._central(store) else observer
    files = []
    try:
        jobs = []
        for k in range(len(bounds) - 1):
            if k == 0:
                dest = out
            else:
                fd, path = tempfile.mkstemp(prefix="membership-replay-", suffix=".jsonl")
                os.close(fd)
                files.append(path)
                dest = path
            jobs.append((store if k == 0 else url, bounds[k], bounds[k + 1], node,
                         observer if history._central(store) else local_observer, dest))
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


def _audit_part(job: tuple) -> tuple[dict, list]:
    store, part, args, kw = job
    own = isinstance(store, str)
    if own:
        store = history.open_store(store)
    try:
        doc = history.audit(store, *args, part=part, **kw)
        nodes = doc.pop("nodes")
        encoded = [((-n["downtime_s"], -n["flaps"], name),
                    render.json_doc(name) + ":" + render.json_doc(n))
                   for name, n in nodes.items()]
        return doc, encoded
    finally:
        if own:
            store.close()


def audit_json(url: str, store, since=None, until=None, node=None, observer=None,
               now: int | None = None, **kw) -> str:
    """``audit --json`` of ``store`` (opened from ``url``): exactly the bytes of
    ``render.json_doc(history.audit(...))``."""
    kw["now"] = now if now is not None else history.now_us()
    args = (since, until, node, observer)
    origins = history._origins(store, observer) if history._central(store) else [history.NODE]
    size = sum(store.head_seq(o) - store.first_seq(o) + 1 for o in origins)
    k = parallel.workers()
    if node is not None or k < 2 or size < parallel.MIN_PARALLEL:
        return render.json_doc(history.audit(store, *args, **kw))
    # Shares by name: ranges of the incident table's key, cut where the nodes known now
    # would split evenly (any cut is correct; an even one is fast).
    names = sorted(history.state_at(store, None, observer).nodes)
    cuts = sorted({names[len(names) * i // k] for i in range(1, k)} if names else set())
    bounds = [None, *cuts, None]
    shares = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    parts = parallel.fork_map(_audit_part, [(store if i == 0 else url, share, args, kw)
                                            for i, share in enumerate(shares)])
    head = parts[0][0]
    nodes = sorted((e for _, encoded in parts for e in encoded), key=lambda e: e[0])
    out = render.json_doc(head)
    observers = render.json_doc(head["observers"])
    body = ",".join(fragment for _, fragment in nodes)
    # The report's keys in its order: nodes goes before observers.
    before = out[: out.index(',"observers":')]  # the first: top level (values before it
    # are times and a fixed note; quotes inside JSON strings are escaped)
    return f'{before},"nodes":{{{body}}},"observers":{observers}}}'
