"""The engine side: read the live file, follow its changes, route around dead replicas.

The seed's other half. The engine starts with every catalog node live, keeps the live list in
memory, notices when the file is rewritten, drops its list and reads the new one, and routes
each request by that list. A public API, importable without the CLI::

    from membership_log import engine

    catalog = engine.load_catalog("catalog.json")
    live = engine.read_live("live-nodes.json")       # frozenset of node ids, or None
    for change in engine.watch("live-nodes.json", initial=catalog_node_ids):
        print(change.added, change.removed, change.live)
    engine.route(engine.load_datasets("catalog.json"), live)
    # Droonga 1.1: what a sender of a given role may read from and write to
    state = engine.read_state("state/cluster-state.json")  # node -> its value in the file
    engine.route(datasets, live, role="service-provider", state=state)

Reading follows Droonga's loader in one respect and departs from it in another: the keys of
``live-nodes.json`` are the live nodes (``cluster-state.json``: the nodes whose ``live`` is
true); but a missing, empty or unparsable file keeps the last good list (and says so)
instead of meaning "no node is live", which would be an outage.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator

from .core import catalog as _catalog
from .core.clock import now_us
from .core.errors import MembershipError
from .core.records import record

#: A change of the live set: ``at`` (UTC microseconds), ``added`` / ``removed`` / ``live``
#: (sorted tuples of node ids). The first change of a watch reports the initial set as added.
Change = record("Change", "at added removed live")


def parse_live(data: bytes) -> frozenset | None:
    """Live node ids from live-file bytes in either format; None if they are not a live
    file (empty, not JSON, not an object)."""
    state = parse_state(data)
    return None if state is None else frozenset(
        k for k, v in state.items() if v.get("live") is True)


def parse_state(data: bytes) -> dict | None:
    """Each node's value in live-file bytes of any format, as a Droonga 1.1 engine reads
    them: node -> ``{"live": ..., "role": ..., ...}``. ``live-nodes.json`` (1.0.x) lists
    only live nodes, without roles: each key is ``{"live": true}`` (no role: a service
    provider). None if the bytes are not a live file."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc and all(isinstance(v, dict) and "live" in v for v in doc.values()):
        return doc
    return {k: {"live": True} for k in doc}


def read_state(path: str) -> dict | None:
    """:func:`parse_state` of the file at ``path``; None if it is missing or not a live
    file."""
    try:
        with open(path, "rb") as f:
            return parse_state(f.read())
    except OSError:
        return None


def read_live(path: str) -> frozenset | None:
    """The live set in the file at ``path``; None if it is missing or not a live file."""
    try:
        with open(path, "rb") as f:
            return parse_live(f.read())
    except OSError:
        return None


def _catalog_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MembershipError(f"cannot read catalog {path}: {e.strerror}") from e


def load_catalog(path: str) -> _catalog.Catalog:
    """The catalog's nodes; :class:`MembershipError` if the file is unusable."""
    cat, warnings = _catalog.parse(_catalog_bytes(path))
    if cat is None:
        raise MembershipError(f"catalog {path}: {'; '.join(warnings)}")
    return cat


def load_datasets(path: str) -> list:
    """The catalog's datasets with replicas and slices; :class:`MembershipError` if none."""
    datasets, warnings = _catalog.parse_datasets(_catalog_bytes(path))
    if not datasets:
        raise MembershipError(f"catalog {path}: {'; '.join(warnings) or 'no datasets'}")
    return datasets


def watch(path: str, interval: float = 0.2, initial: frozenset | None = None,
          stop: threading.Event | None = None,
          on_problem: Callable[[str], None] | None = None) -> Iterator[Change]:
    """Yield a :data:`Change` each time the live set in ``path`` changes.

    Polls every ``interval`` seconds (sleeping in between: no busy loop) and compares the
    file's bytes, not its mtime, so a rename, an in-place rewrite or several rewrites within
    one mtime tick are all seen. A rewrite that leaves the set as it was yields nothing. A
    missing or unusable file keeps the last good set; ``on_problem`` hears of it once per
    spell. Without ``initial``, the first readable set is reported as all added.
    """
    stop = stop or threading.Event()
    current = initial
    last_bytes = None
    troubled = False
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            data, why = None, f"live file {path} unreadable ({e.strerror}); keeping the last " \
                              f"good list"
        if data is not None and data != last_bytes:
            live = parse_live(data)
            why = f"live file {path} is not a live-node list; keeping the last good list"
            if live is not None:
                last_bytes = data
                troubled = False
                if live != current:
                    before = current or frozenset()
                    current = live
                    yield Change(now_us(), tuple(sorted(live - before)),
                                 tuple(sorted(before - live)), tuple(sorted(live)))
            elif not troubled:
                troubled = True
                last_bytes = None
                if on_problem:
                    on_problem(why)
        elif data is None and not troubled:
            troubled = True
            last_bytes = None
            if on_problem:
                on_problem(why)
        stop.wait(interval)


class LiveWatcher:
    """:func:`watch` in a background thread, calling ``callback(change)`` for each change.

    ``watcher.live`` is the current set (what an engine routes by)."""

    def __init__(self, path: str, callback: Callable[[Change], None] | None = None,
                 interval: float = 0.2, initial: frozenset | None = None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.callback = callback
        self.interval = interval
        self.live = initial
        self.on_problem = on_problem
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-watcher")

    def _run(self) -> None:
        for change in watch(self.path, self.interval, self.live, self._stop, self.on_problem):
            self.live = frozenset(change.live)
            if self.callback:
                self.callback(change)

    def start(self) -> LiveWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> LiveWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- routing (pure) -------------------------------------------------------------------------


def slice_usable(sl: _catalog.Slice, live: frozenset) -> bool:
    """A slice is usable if its node is live, or (nested) any of its replicas is usable."""
    if sl.address is not None:
        return sl.node in live
    return any(replica_usable(r, live) for r in sl.replicas)


def replica_usable(replica: tuple, live: frozenset) -> bool:
    """A replica is usable only if every node holding one of its slices is live."""
    return bool(replica) and all(slice_usable(sl, live) for sl in replica)


def _nodes(replica: tuple) -> Iterator[str]:
    for sl in replica:
        if sl.address is not None:
            yield sl.node
        for r in sl.replicas:
            yield from _nodes(r)


def role_rules(state: dict, nodes: Iterable[str], role: str) -> dict:
    """Droonga 1.1's rules for a sender of ``role`` (:mod:`membership_log.core.droonga`,
    ``engine_node.rb``), per catalog node: its role and liveness as the file says
    (``state``: node -> value; a node missing from it is not live, a value without a role
    is a service provider's), and whether the sender may forward to it, read from it, write
    to it, and send a write at once rather than buffer it. The sender's own buffers are
    engine-local: only what the file says (``have_unprocessed_messages``) is seen."""
    from .core import droonga

    out = {}
    for node in sorted(nodes):
        info = state.get(node)
        out[node] = {
            "role": droonga.node_role(info),
            "live": droonga.is_live(info),
            "accept_messages_newer_than": (info or {}).get("accept_messages_newer_than"),
            "have_unprocessed_messages": bool((info or {}).get("have_unprocessed_messages")),
            "forwardable": droonga.forwardable(info, role),
            "readable": droonga.readable(info, role),
            "writable": droonga.writable(info, role),
            "delivers_now": droonga.delivers_now(info, role),
        }
    return out


def route(datasets: list, live: frozenset, role: str | None = None,
          state: dict | None = None) -> dict:
    """Per dataset: which replicas are usable, what is dead in the others, and per slice
    label the live volume addresses.

    With ``role`` (Droonga 1.1's rules for a sender of that role; ``state``: node -> its
    value in the live file, from :func:`parse_state`, else every node of ``live`` is a live
    service provider): usable means readable (Droonga routes a read step to the replicas
    whose every node is readable), ``writable_replicas`` lists the replicas whose every
    node is writable, and ``nodes`` gives :func:`role_rules` for the dataset's nodes."""
    if role is not None:
        if state is None:
            state = {n: {"live": True} for n in live}
        return _route_for_role(datasets, state, role)
    out = {}
    for ds in datasets:
        replicas = []
        slices: dict[str, list[str]] = {}
        for i, replica in enumerate(ds.replicas):
            usable = replica_usable(replica, live)
            replicas.append({
                "index": i,
                "usable": usable,
                "dead_nodes": sorted({n for n in _nodes(replica) if n not in live}),
                "slices": [{"label": sl.label, "address": sl.address, "node": sl.node,
                            "live": slice_usable(sl, live)} for sl in replica],
            })
            for sl in replica:
                addresses = slices.setdefault(sl.label, [])
                if sl.address is not None and sl.node in live:
                    addresses.append(sl.address)
        out[ds.name] = {
            "usable_replicas": [r["index"] for r in replicas if r["usable"]],
            "replicas": replicas,
            "slices": slices,
        }
    return out


def _route_for_role(datasets: list, state: dict, role: str) -> dict:
    out = {}
    for ds in datasets:
        nodes = {n for replica in ds.replicas for n in _nodes(replica)}
        rules = role_rules(state, nodes, role)
        readable = frozenset(n for n, r in rules.items() if r["readable"])
        writable = frozenset(n for n, r in rules.items() if r["writable"])
        (routed,) = route([ds], readable).values()
        routed["writable_replicas"] = [i for i, replica in enumerate(ds.replicas)
                                       if replica_usable(replica, writable)]
        routed["nodes"] = rules
        out[ds.name] = routed
    return out
