"""Sample inputs shared by the tests: the seed's cluster of three Droonga nodes, and a
builder of parsed events for tests of the pure core."""

import json

from membership_log.core import events as ev
from membership_log.core.catalog import parse as parse_catalog

CATALOG_V2 = {
    "version": 2,
    "effectiveDate": "2014-02-28T00:00:00Z",
    "datasets": {"Default": {"nWorkers": 4, "plugins": ["groonga"], "schema": {}, "replicas": [
        {"dimension": "_key", "slicer": "hash", "slices": [
            {"label": "slice000", "weight": 50,
             "volume": {"address": f"192.168.100.{50 + i}:10031/droonga.000"}},
            {"label": "slice001", "weight": 50,
             "volume": {"address": f"192.168.100.{50 + i}:10031/droonga.001"}}]}
        for i in range(3)
    ]}},
}
NODES = [f"192.168.100.{50 + i}:10031/droonga" for i in range(3)]

CATALOG, _ = parse_catalog(json.dumps(CATALOG_V2).encode())


class Log:
    """Builds parsed events with increasing seq and receive times (1 s apart unless
    ``at`` is given), as the store would hand them to the fold."""

    def __init__(self, start_us: int = 1_700_000_000_000_000):
        self.seq = 0
        self.now = start_us

    def _next(self, at=None):
        self.seq += 1
        self.now = at if at is not None else self.now + 1_000_000
        return self.seq, self.now

    def catalog(self, cat=CATALOG, at=None, observer="o"):
        return ev.Event(*self._next(at), observer, "catalog", None, None, (), None, cat, ())

    def member(self, kind, *members, at=None, observer="o"):
        ms = tuple(ev.Member(n, a, "", {}) for n, a in members)
        return ev.Event(*self._next(at), observer, kind, None, None, ms, None, None, ())

    def user(self, name, payload, ltime=None, kind="user", at=None, observer="o"):
        return ev.Event(*self._next(at), observer, kind, name, ltime, (), payload, None, ())


def collect_incidents(steps):
    """Every incident in ``(event, changes, nodes)`` steps, through the one reducer, as
    Incident records in the order they began (a plain fold's answer, for comparisons)."""
    from membership_log.core import incidents

    reducer = incidents.Reducer()
    found = {}
    for event, changes, nodes in steps:
        opened, closed = reducer.feed(event, changes, nodes)
        for r in opened + closed:
            found[(r.node, r.down_seq)] = incidents.record(r)
    return sorted(found.values(), key=lambda i: (i.down_at, i.node))
