"""The SQL both stores run alike: written once, with named parameters (``:name``), which both
the stdlib ``sqlite3`` and SQLAlchemy's ``text()`` take, on SQLite and PostgreSQL.

Only questions whose SQL is the same on every database live here; each store translates its
own errors.
"""

from __future__ import annotations

#: The columns of an incident row, in :data:`membership_log.core.incidents.Row` order.
INCIDENT_COLUMNS = "node, down_at, up_at, cause, observer, down_seq, up_seq"


def incidents(since_us: int | None, until_us: int | None, nodes: tuple = (None, None),
              by_node: bool = False) -> tuple[str, dict, tuple[bool, bool]]:
    """The one incidents-in-a-window query: ``(sql, params, (filter_here, sort_here))``.

    Incidents that began at or before ``until_us`` and had not ended before ``since_us``,
    of nodes in ``[lo, hi)`` (a range of the primary key, so a share of an audit reads only
    its share). A window reaching back to the start reads the table in key order (three
    times faster on SQLite than walking the time index and looking every row up), filtered
    by the caller, and sorted by it unless ``by_node`` (key order gives each node's
    incidents in the order they began, all an audit needs); a recent window uses the
    index, already sorted.
    """
    lo, hi = nodes
    where = "origin = :origin"
    params: dict = {}
    if lo is not None:
        where += " AND node >= :lo"
        params["lo"] = lo
    if hi is not None:
        where += " AND node < :hi"
        params["hi"] = hi
    if since_us is None:
        return (f"SELECT {INCIDENT_COLUMNS} FROM incident WHERE {where}", params,
                (until_us is not None, not by_node))
    params.update(since=since_us, until=until_us if until_us is not None else 2**63 - 1)
    return (f"SELECT {INCIDENT_COLUMNS} FROM incident WHERE {where} AND down_at <= :until "
            f"AND (up_at IS NULL OR up_at >= :since) ORDER BY down_at, node", params,
            (False, False))


def finish_incidents(rows: list, until_us: int | None, post: tuple[bool, bool]) -> list:
    """The caller's half of :func:`incidents`: the filter and sort it left to Python."""
    filter_here, sort_here = post
    if filter_here:
        rows = [r for r in rows if r[1] <= until_us]
    if sort_here:
        rows.sort(key=_by_start)
    return rows


def _by_start(row: tuple) -> tuple:
    return row[1], row[0]


#: The earliest receive time among one log's events in ``(:after, :through]`` (a central
#: store's events live in ``cluster_event``, a node store's in ``event``).
MIN_RECEIVED = "SELECT min(received_us) FROM {table} WHERE {origin}seq > :after AND seq <= :through"

#: The latest checkpoint (and the one before it) of a stretch holding an event received at or
#: before ``:us``: walks the (origin, seq, min_at) index backwards.
STRETCH = ("SELECT seq FROM checkpoint WHERE origin = :origin AND min_at <= :us "
           "ORDER BY seq DESC LIMIT 1")
PREVIOUS_CHECKPOINT = ("SELECT max(seq) FROM checkpoint WHERE origin = :origin AND "
                       "seq < :seq")
LAST_CHECKPOINT = ("SELECT seq, length(state) FROM checkpoint WHERE origin = :origin ORDER BY "
                   "seq DESC LIMIT 1")
