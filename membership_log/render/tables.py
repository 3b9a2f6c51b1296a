"""The one place that turns text into something safe to print in a terminal table.

Everything a table shows comes from the log, and the log holds what Serf members, user
events and catalogs said: anyone who can join the cluster chooses a member name. A name like
``evil\\x1b[2K\\r127.0.0.201:10031/droonga  live`` would erase the line it is printed on and
draw a fake row. So every character that could move the cursor, change colours, reorder text
or hide itself is shown as a visible escape, and the backslash itself is escaped, so that
what is printed maps back to exactly one string. Pure.

JSON is :mod:`membership_log.render.jsondoc`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.timespec import iso

if TYPE_CHECKING:
    from ..core.droonga import Command
    from ..core.events import Event
    from ..core.figures import Audit
    from ..core.timespec import Point

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    """The visible escape of one character that :func:`printable` does not pass through."""
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x80:  # C0 controls and DEL
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): the byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:  # C1 controls as \\u0080 (not \\x80: that is an undecodable byte)
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(s: str) -> str:
    """``s`` with every non-printable character, and ``\\``, shown as an escape.

    Escaped: C0 controls and DEL (``\\n``, ``\\r``, ``\\t``, else ``\\x1b``), C1 controls
    (``\\u009b``), bytes that were not UTF-8 (lone surrogates from ``surrogateescape``: the
    original byte, ``\\xff``; other lone surrogates as ``\\ud800``), bidi controls
    (``\\u202e``), line and paragraph separators, zero-width and other format characters,
    and anything else ``str.isprintable`` rejects except the ASCII space. Printable text,
    accented letters and CJK included, is unchanged. The common case (printable, no
    backslash) is two C-level scans and no copy.
    """
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in s)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned text table: columns two spaces apart, left-justified, trailing spaces
    stripped, one line per row after the header. Every cell goes through :func:`printable`,
    so a cell can never add a line, move the cursor or colour the terminal."""
    headers = [printable(h) for h in headers]
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# -- records as tables ------------------------------------------------------------------------


def _iso(us: int | None) -> str | None:
    return iso(us) if us is not None else None


def _droonga_notes(tags: dict | None, cluster_id: str | None) -> list[str]:
    """What a member's Droonga 1.1 tags say beyond its role, for the state table."""
    from ..core.droonga import BUFFERED_PREFIX, TAG_ACCEPT_NEWER_THAN, TAG_CLUSTER_ID

    if not tags:
        return []
    notes = []
    theirs = tags.get(TAG_CLUSTER_ID)
    if theirs is not None and cluster_id is not None and theirs != cluster_id:
        notes.append("another cluster")
    if tags.get(TAG_ACCEPT_NEWER_THAN) is not None:
        notes.append(f"accepts newer than {tags[TAG_ACCEPT_NEWER_THAN]}")
    held = sorted(k[len(BUFFERED_PREFIX):] for k, v in tags.items()
                  if k.startswith(BUFFERED_PREFIX) and v == "true")
    if held:
        notes.append("buffering for " + " ".join(held))
    return notes


def state_table(now: Any, at: Point | None = None) -> str:  # now: a history.api.StateAt
    from ..core.droonga import role_tag

    nodes = now.nodes.values()
    members = now.members or {}
    cluster_id = now.catalog.cluster_id if now.catalog is not None else None
    rows = []
    for n in sorted(nodes, key=lambda n: (n.live, n.name)):
        m = members.get(n.member) if n.member is not None else None
        tags = m.tags if m is not None else None
        notes = ([] if n.in_catalog else ["not in catalog"]) + _droonga_notes(tags, cluster_id)
        role = role_tag(tags)
        rows.append([n.name, "live" if n.live else "DEAD", n.serf or "-", role or "-",
                     "down" if n.marked else "", n.address or "-", n.member or "-",
                     "; ".join(notes)])
    when = _iso(now.at) or "no events"
    live = sum(1 for n in nodes if n.live and n.in_catalog)
    prefix = f"at {printable(at.text)}: " if at is not None else ""
    where = f"after event {now.seq} ({when})" if now.seq is not None else \
        f"merged over every node's log, last event {when}"
    head = (f"{prefix}{where}: {live} of {sum(1 for n in nodes if n.in_catalog)} node(s) live")
    if not rows:
        return head
    return head + "\n" + table(["NODE", "LIVE", "SERF", "ROLE", "MARK", "ADDRESS", "MEMBER", ""],
                               rows)


def _summary(event: Event) -> str:
    from ..core import events

    if event.members:
        shown = ", ".join(f"{m.name} {m.address}".strip() for m in event.members[:3])
        more = f" (+{len(event.members) - 3} more)" if len(event.members) > 3 else ""
        return shown + more
    if event.kind in (events.USER, events.QUERY):
        return f"{event.name} {(event.payload or '')[:60]}".strip()
    if event.kind == events.CATALOG:
        if event.catalog is None:
            return "unusable catalog (last good one kept)"
        return f"version {event.catalog.version}, {len(event.catalog.nodes)} node(s)"
    return "; ".join(event.warnings)[:80]


def _command_summary(c: Command) -> str:
    """A Droonga 1.1 command as the replay's DETAIL: name, target, what it sets, and whether
    the observer's Droonga handler acts on it."""
    target = c.target or (c.node if isinstance(c.node, str) else None)
    fields = ", ".join(f"{k} {'/'.join(v) if isinstance(v, tuple) else v}"
                       for k, v in c.fields.items() if v is not None)
    if c.payload is None:
        why = "payload unreadable"
    elif not c.for_cluster:
        why = "another cluster"
    elif c.for_node is False:
        why = "for another node"
    else:
        why = "acted on" if c.process else "not acted on"
    return " ".join(p for p in (c.name, f"-> {target}" if target else "",
                                f"({fields})" if fields else "", f"[{why}]") if p)


def replay_row(r: Any, observer: str | None = None) -> list[str]:  # r: history.api.Replayed
    e = r.event
    effect = ", ".join([f"{c.node} {c.before or 'new'} -> {c.after or 'gone'}"
                        for c in r.changes]
                       + [f"{c.member} role {c.before or '-'} -> {c.after or '-'}"
                          for c in r.roles])
    if r.redelivery:
        effect = "(delivered again: no effect)"
    seq = f"{r.origin}:{e.seq}" if r.origin is not None and observer is None else str(e.seq)
    detail = _summary(e) if r.command is None else _command_summary(r.command)
    return [seq, iso(e.at)[:23], e.observer or r.origin or "-", e.kind, detail, effect]


def audit_text(audit: Audit) -> str:
    """The audit for people (an :data:`~membership_log.core.figures.Audit`): a line per
    node, then a line per incident, then the unobserved stretches."""
    from ..core.figures import LOWER_BOUND_NOTE
    from ..core.incidents import as_incident
    from ..core.timespec import duration

    def seconds(us: int | None) -> float | None:
        return None if us is None else us / 1e6

    lines = [f"audit {iso(audit.since)} to {iso(audit.until)}"]
    if not audit.nodes:
        return "\n".join(lines + ["no nodes"])
    rows = []
    for name, n in audit.nodes.items():
        avail = "-" if n.availability is None else f"{100 * n.availability:.3f}%"
        still = sum(1 for r in n.incidents if r.incident[2] is None)
        flapping = f"{len(n.flapping)} stretch(es)" if n.flapping else ""
        rows.append([name, str(len(n.incidents)) + (f" ({still} open)" if still else ""),
                     duration(seconds(n.downtime_us)), avail, duration(seconds(n.mttr_us)),
                     str(n.flaps), flapping])
    lines.append(table(["NODE", "INCIDENTS", "DOWNTIME", "AVAILABILITY", "MTTR", "FLAPS",
                        "FLAPPING"], rows))
    reported = [(name, r) for name, n in audit.nodes.items() for r in n.incidents]
    blind = any(r.unobserved_us for _, r in reported)
    delay = audit.detection_delay_us
    estimated = delay is not None and any(r.incident[3] == "failed" for _, r in reported)
    headers = ["NODE", "DOWN AT (UTC)", "UP AT (UTC)", "DURATION", "CAUSE", "OBSERVERS"]
    headers += ["UNOBSERVED"] * blind + ["EST. DOWN AT"] * estimated
    detail = []
    for name, r in reported:
        i = as_incident(r.incident)
        row = [name, iso(i.down_at)[:23], (_iso(i.up_at) or "still down")[:23],
               duration(seconds(r.duration_us)), i.cause, ",".join(i.observers) or "-"]
        if blind:
            row.append(duration(seconds(r.unobserved_us)) if r.unobserved_us else "")
        if estimated:
            row.append(iso(i.down_at - delay)[:23] if i.cause == "failed" else "")
        detail.append((i.down_at, row))
    if detail:
        detail.sort(key=lambda d: d[0])
        lines += ["", table(headers, [row for _, row in detail])]
    roles = [(name, r) for name, n in audit.nodes.items() for r in n.roles
             if any(role not in (None, "service-provider") for _, _, role in n.roles)]
    if roles:  # only where a node was in another role than a service provider's
        lines += ["", table(["NODE", "ROLE", "FROM (UTC)", "TO (UTC)", "DURATION"],
                            [[name, role or "-", iso(a)[:23], iso(b)[:23],
                              duration(seconds(b - a))] for name, (a, b, role) in roles])]
    gaps = [(obs, g) for obs, s in audit.observers.items() for g in s.unobserved]
    if gaps:
        lines += ["", table(["OBSERVER", "UNOBSERVED FROM", "TO"],
                            [[o, iso(a)[:23], iso(b)[:23]] for o, (a, b) in gaps])]
    lines += ["", f"note: {LOWER_BOUND_NOTE}"]
    return "\n".join(lines)


def _role_nodes(routes: dict, role: str) -> str:
    """The nodes of every dataset under Droonga 1.1's rules for a sender of ``role``."""
    nodes: dict = {}
    for r in routes.values():
        nodes.update(r["nodes"])

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [[n, v["role"], "live" if v["live"] else "DEAD", yes(v["forwardable"]),
             yes(v["readable"]), yes(v["writable"]),
             "at once" if v["delivers_now"] else ("buffered" if v["writable"] else "-"),
             "unprocessed messages" if v["have_unprocessed_messages"] else ""]
            for n, v in sorted(nodes.items())]
    return f"sender role {role}\n" + table(
        ["NODE", "ROLE", "LIVE", "FORWARD", "READ", "WRITE", "WRITES", ""], rows)


def route_text(routes: dict, stranded: list, role: str | None = None) -> str:
    lines = [_role_nodes(routes, role), ""] if role is not None else []
    for name, r in routes.items():
        n = len(r["replicas"])
        if role is None:
            head = f"dataset {name}: {len(r['usable_replicas'])} of {n} replica(s) usable"
        else:
            head = (f"dataset {name}: {len(r['usable_replicas'])} of {n} replica(s) readable, "
                    f"{len(r['writable_replicas'])} writable")
        lines.append(printable(head + ("  ** NO USABLE REPLICA **" if name in stranded else "")))
        for rep in r["replicas"]:
            if role is None:
                st = "usable" if rep["usable"] else \
                    f"DOWN (dead: {', '.join(rep['dead_nodes']) or 'nested replicas'})"
            else:
                st = "readable" if rep["usable"] else \
                    f"not readable ({', '.join(rep['dead_nodes']) or 'nested replicas'})"
                st += ", writable" if rep["index"] in r["writable_replicas"] else \
                    ", not writable"
            lines.append(printable(f"  replica {rep['index']}: {st}"))
        for label, addresses in r["slices"].items():
            lines.append(printable(f"  slice {label}: {' '.join(addresses) or '(no live volume)'}"))
    return "\n".join(lines)
