"""The ``membership`` command line: a thin shell over the library.

Each command resolves where things live, calls the core, and renders a table for people or
JSON for machines. Errors are one line (``membership: ...``) and exit 1; usage errors exit 2.
``membership handle`` itself runs without this module (see :mod:`membership_log.launch`).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import cluster, events, livefile, project, settings, timespec
from .errors import MembershipError
from .timespec import duration, iso
from .version import __version__


class _Group(TyperGroup):
    """Turns a :class:`MembershipError` into one line on stderr and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MembershipError as e:
            typer.echo(f"membership: {e}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="membership",
    help="Give a Serf-managed cluster a memory: an append-only log of membership events, "
    "the live-node file derived from it, and the means to replay and audit it.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(cls=_Group, help="Manage the store's schema.", rich_markup_mode=None,
                     no_args_is_help=True)
app.add_typer(db_app, name="db")

# The options that follow every command (SPEC "Where things live"), declared once.
BaseDir = Annotated[str | None, typer.Option(
    "--base-dir", envvar="MEMBERSHIP_BASE_DIR", metavar="DIR", show_default="current directory",
    help=settings.OPTIONS["--base-dir"][1])]
Db = Annotated[str | None, typer.Option(
    "--db", envvar="MEMBERSHIP_DB", metavar="URL", show_default="<base-dir>/membership.db",
    help=settings.OPTIONS["--db"][1])]
CatalogPath = Annotated[str | None, typer.Option(
    "--catalog", envvar="MEMBERSHIP_CATALOG", metavar="PATH",
    show_default="<base-dir>/catalog.json", help=settings.OPTIONS["--catalog"][1])]
LiveFile = Annotated[str | None, typer.Option(
    "--live-file", envvar="MEMBERSHIP_LIVE_FILE", metavar="PATH",
    show_default="<base-dir>/live-nodes.json", help=settings.OPTIONS["--live-file"][1])]
LiveFormat = Annotated[str | None, typer.Option(
    "--live-format", envvar="MEMBERSHIP_LIVE_FORMAT", metavar="FORMAT", show_default="droonga",
    help=settings.OPTIONS["--live-format"][1])]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _time(value: str | timespec.Point | None) -> timespec.Point | None:
    if value is None or isinstance(value, timespec.Point):
        return value
    try:
        return timespec.parse(value, time.time_ns() // 1000)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


_TIME_HELP = "ISO 8601 (no zone = UTC), 'now', '15m ago', '2h ago', '3d ago' or '@N'."
At = Annotated[timespec.Point | None, typer.Option(
    "--at", parser=_time, metavar="T", help=f"The moment to show. {_TIME_HELP}")]
Since = Annotated[timespec.Point | None, typer.Option(
    "--since", parser=_time, metavar="T", help=f"From this moment on. {_TIME_HELP}")]
Until = Annotated[timespec.Point | None, typer.Option(
    "--until", parser=_time, metavar="T", help=f"Up to this moment. {_TIME_HELP}")]
NodeOpt = Annotated[str | None, typer.Option(
    "--node", metavar="N", help="Only this node (catalog id, Serf member name or address).")]
ObserverOpt = Annotated[str | None, typer.Option(
    "--observer", metavar="O", help="Only what this reporting node (SERF_SELF_NAME) saw.")]


def _settings(base_dir, db, catalog, live_file, live_format=None) -> settings.Settings:
    return settings.resolve(base_dir, db, catalog, live_file, live_format)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


@app.command()
def init(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
         live_file: LiveFile = None, live_format: LiveFormat = None) -> None:
    """Create or upgrade the store, record the catalog, write the live file. Idempotent.

    Every catalog node starts live (Droonga's rule). Without a catalog file, every Serf
    member seen becomes a node.

    Example:

        membership init --base-dir /var/lib/droonga
    """
    from . import store

    s = _settings(base_dir, db, catalog, live_file, live_format)
    result = store.init(s)
    if s.sqlite_path is None:
        typer.echo(f"store {result['store']}: schema {result['from']} -> {result['to']}")
        return
    typer.echo(f"store {result['store']} at schema {result['to']}, {result['seq']} events")
    typer.echo(f"live file {s.live_file}: {len(result['live'])} live node(s)")
    for warning in result["warnings"]:
        typer.echo(f"warning: {warning}", err=True)


@app.command(context_settings={"ignore_unknown_options": True})
def handle(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
           live_file: LiveFile = None, live_format: LiveFormat = None) -> None:
    """The Serf event handler: record the event, update the live file, answer queries.

    Serf runs it for every event with SERF_* variables set and the event on stdin. It
    records the raw event (every SERF_* variable and stdin byte for byte) before anything
    parses it, records catalog.json if it changed, folds the event into the projection,
    rewrites the live file atomically when its content changes, and answers a
    `membership-live` query with this node's live set. A base dir with no store is set up
    on the spot. If the store cannot be written the event is spooled and taken in later.

    Serf configuration (options after the command name: Serf reads text before a `=` as an
    event filter):

        event_handlers = ["membership handle --base-dir /var/lib/droonga"]

    Operator marks: `serf event membership-down NODE...` / `serf event membership-up NODE...`.
    """
    from .handler import main as handle_main

    args = []
    for flag, value in (("--base-dir", base_dir), ("--db", db), ("--catalog", catalog),
                        ("--live-file", live_file), ("--live-format", live_format)):
        if value:
            args += [flag, value]
    raise typer.Exit(handle_main(args))


def _events(store, observer: str | None = None):
    """One log's parsed events: a node's store (``observer``: only its events, see
    :func:`_parsed`) or one node's log in a central store."""
    if store.central:
        return (events.parse(r) for r in store.raw_events(origin=observer))
    return _parsed(store, observer)


def _parsed(store, observer: str | None = None):
    """A node's store: its events, parsed, in log order. With ``observer``, only that
    observer's events, plus those recorded without one (``init``'s catalog), which belong to
    every observer's view."""
    for raw in store.raw_events():
        if observer is None or raw.observer in (observer, ""):
            yield events.parse(raw)


def _history(store, observer: str | None = None):
    """``(origin, Step)`` for every event, in order, through the one fold: a node's log
    (origin None), one node's log in a central store (``--observer``), or all of a central
    store's logs combined cluster-wide (:mod:`membership_log.cluster`)."""
    if not store.central or observer is not None:
        origin = observer if store.central else None
        return ((origin, st) for st in project.steps(_events(store, observer)))
    return cluster.merged_steps((o, events.parse(r)) for o, r in store.raw_events_by_time())


def _needs_observer(store, observer, *points) -> None:
    if store.central and observer is None and any(p is not None and p.seq is not None
                                                  for p in points):
        raise MembershipError("@N names an event of one node's log: with a central store, "
                              "add --observer NODE")


def _view_at(store, at: timespec.Point | None, observer: str | None = None):
    """``(view, seq, received_us)`` right after the last event at or before ``at``.

    A node's store starts from the nearest checkpoint, so the cost does not grow with the
    log; a central store, or one observer's events picked out of a node's store, is folded
    from the start."""
    _needs_observer(store, observer, at)
    if store.central and observer is None:  # merged: the combined view needs every step
        last = None
        for _, st in _history(store):
            if not timespec.reached(at, st.event.seq, st.event.at):
                break
            last = st
        return (last.view, last.event.seq, last.event.at) if last else ({}, 0, None)
    if store.central or observer is not None:  # one log, folded from its start
        state, last = project.EMPTY, None
        for e in _events(store, observer):
            if not timespec.reached(at, e.seq, e.at):
                break
            state, last = project.step(state, e), e
        return (project.view(state), last.seq, last.at) if last else ({}, 0, None)
    head = store.head_seq()
    if at is None:
        target = head
    elif at.seq is not None:
        target = min(at.seq, head)
    else:
        target = store.last_seq_at_or_before(at.us)
    if target == 0:
        return {}, 0, None
    start, state = store.checkpoint_at_or_before(target)
    state = project.fold((events.parse(r) for r in store.raw_events(after=start, until=target)),
                         state)
    return project.view(state), target, store.received_at(target)


@app.command()
def state(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
          live_file: LiveFile = None, live_format: LiveFormat = None, at: At = None,
          observer: ObserverOpt = None, json_out: Json = False,
          as_live_file: Annotated[bool, typer.Option(
              "--as-live-file", help="Print exactly the bytes the live file had right after "
              "the last event at or before --at.")] = False) -> None:
    """Every known node and its liveness now, or at any moment of the log (--at).

    LIVE is what the live file said; SERF the status Serf last reported for the node's
    member (`-` if none yet: catalog nodes start live); MARK an operator's membership-down.
    The catalog in force at that moment is the one used (catalog versions are events).

    Example:

        membership state --base-dir /var/lib/droonga
        membership state --at '2026-11-25T03:12:00' --json
        membership state --at @42 --as-live-file > live-nodes.json
    """
    from .store import Store

    if json_out and as_live_file:
        raise typer.BadParameter("--json and --as-live-file exclude each other")
    s = _settings(base_dir, db, catalog, live_file, live_format)
    with Store(s.db_url) as store:
        nodes, seq, last_at = _view_at(store, at, observer)
    if as_live_file:
        sys.stdout.buffer.write(livefile.render_view(nodes, s.live_format))
        sys.stdout.buffer.flush()
        return
    if json_out:
        typer.echo(json.dumps({
            "seq": seq,
            "at": iso(last_at) if last_at is not None else None,
            "nodes": {n.name: {"live": n.live, "serf": n.serf, "marked": n.marked,
                               "address": n.address, "member": n.member,
                               "in_catalog": n.in_catalog}
                      for n in nodes.values()},
        }, indent=2, sort_keys=True))
        return
    rows = [[n.name, "live" if n.live else "DEAD", n.serf or "-", "down" if n.marked else "",
             n.address or "-", n.member or "-", "" if n.in_catalog else "not in catalog"]
            for n in sorted(nodes.values(), key=lambda n: (n.live, n.name))]
    when = iso(last_at) if last_at is not None else "no events"
    live = sum(1 for n in nodes.values() if n.live and n.in_catalog)
    prefix = f"at {at.text}: " if at is not None else ""
    typer.echo(f"{prefix}after event {seq} ({when}): {live} of "
               f"{sum(1 for n in nodes.values() if n.in_catalog)} node(s) live")
    if rows:
        typer.echo(_table(["NODE", "LIVE", "SERF", "MARK", "ADDRESS", "MEMBER", ""], rows))


def event_json(event, changes, duplicate: bool = False) -> dict:
    """One replay line (SPEC "Replay and audit JSON")."""
    return {
        "seq": event.seq,
        "at": iso(event.at),
        "observer": event.observer,
        "event": event.kind,
        "name": event.name,
        "ltime": event.ltime,
        "members": [{"name": m.name, "address": m.address, "role": m.role, "tags": m.tags}
                    for m in event.members],
        "payload": event.payload,
        "changes": [{"node": c.node, "from": c.before, "to": c.after} for c in changes],
        "duplicate": duplicate,
        "warnings": list(event.warnings),
    }


def _summary(event) -> str:
    if event.members:
        shown = ", ".join(f"{m.name} {m.address}".strip() for m in event.members[:3])
        more = f" (+{len(event.members) - 3} more)" if len(event.members) > 3 else ""
        return shown + more
    if event.kind in (events.USER, events.QUERY):
        payload = (event.payload or "").replace("\n", "\\n")
        return f"{event.name} {payload[:60]}".strip()
    if event.kind == events.CATALOG:
        if event.catalog is None:
            return "unusable catalog (last good one kept)"
        return f"version {event.catalog.version}, {len(event.catalog.nodes)} node(s)"
    return "; ".join(event.warnings)[:80]


def _touches(step, node: str) -> bool:
    """Whether an event concerns ``node``: it changed it, or names it (as a catalog node,
    member name or address, or in an operator payload)."""
    e = step.event
    if any(c.node == node for c in step.changes):
        return True
    if any(node in (m.name, m.address) for m in e.members):
        return True
    v = step.view.get(node)
    if v is not None and v.member is not None and any(m.name == v.member for m in e.members):
        return True
    return e.kind in (events.USER, events.QUERY) and node in (e.payload or "").split()


@app.command()
def replay(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
           live_file: LiveFile = None, since: Since = None, until: Until = None,
           node: NodeOpt = None, observer: ObserverOpt = None, json_out: Json = False) -> None:
    """The log in order, each event with the liveness changes it caused.

    The whole log is always folded (so every change is judged in its full context); the
    options only choose which events are shown. A user event Serf delivered again is shown
    as a duplicate with no changes: the raw log keeps every delivery.

    --json prints one JSON object per line: seq, at, observer, event, name, ltime,
    members, payload, changes ([{node, from, to}]), duplicate and warnings.

    Example:

        membership replay --base-dir /var/lib/droonga --since '2h ago'
        membership replay --node node1 --json | jq 'select(.changes != [])'
    """
    from .store import Store

    s = _settings(base_dir, db, catalog, live_file)
    out = sys.stdout
    rows = []
    with Store(s.db_url) as store:
        _needs_observer(store, observer, since, until)
        for origin, st in _history(store, observer):
            e = st.event
            if not timespec.reached(until, e.seq, e.at):
                break
            if not timespec.since_ok(since, e.seq, e.at):
                continue
            if node is not None and not _touches(st, node):
                continue
            if json_out:
                line = event_json(e, st.changes, st.redelivery)
                if origin is not None:
                    line["origin"] = origin
                out.write(json.dumps(line, sort_keys=True) + "\n")
                continue
            effect = ", ".join(f"{c.node} {c.before or 'new'} -> {c.after or 'gone'}"
                               for c in st.changes)
            if st.redelivery:
                effect = "(delivered again: no effect)"
            seq = f"{origin}:{e.seq}" if origin is not None and observer is None else str(e.seq)
            rows.append([seq, iso(e.at)[:23], e.observer or origin or "-", e.kind,
                         _summary(e), effect])
    if json_out:
        return
    if rows:
        typer.echo(_table(["SEQ", "AT (UTC)", "OBSERVER", "EVENT", "DETAIL", "CHANGES"], rows))
    else:
        typer.echo("no events match")


def _window(store, since, until, observer, node=None):
    """Incidents for audit/timeline: (incidents, nodes, since_us, until_us), for one
    ``node`` if given."""
    from . import audit as _audit

    now = time.time_ns() // 1000

    _needs_observer(store, observer, since, until)

    def resolve(point, default):
        if point is None:
            return default
        if point.seq is None:
            return point.us
        at = store.received_at(point.seq, observer)
        if at is None:
            raise MembershipError(f"there is no event {point.seq} in this store")
        return at

    until_us = resolve(until, now)
    if observer is None and store.derived_current():
        # A node's store keeps its incidents as events arrive: read them, not the log.
        incidents = store.incidents(until_us)
        view = project.view(store.head_state())
        nodes = {n for n, v in view.items() if v.in_catalog}
        first_at = store.received_at(1)
    else:
        steps = (st for _, st in _history(store, observer))
        incidents, nodes, first_at, _ = _audit.collect(steps, until_us)
    nodes |= {i.node for i in incidents}
    if node is not None:
        incidents = [i for i in incidents if i.node == node]
        nodes = {n for n in nodes if n == node}
    since_us = resolve(since, first_at if first_at is not None else until_us)
    return incidents, nodes, since_us, until_us


@app.command()
def audit(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
          live_file: LiveFile = None, since: Since = None, until: Until = None,
          node: NodeOpt = None, observer: ObserverOpt = None, json_out: Json = False) -> None:
    """Incidents per node (down, up, how long, why) and figures over a window.

    An incident opens when a node goes dead and closes when it is live again; its cause is
    failed (member-failed), left (member-leave) or operator (membership-down). One still
    open at the end of the window is reported open (up_at null). Per node: downtime,
    availability over the window, MTTR (mean time to recovery of closed incidents) and
    flaps (times it went down). The window runs from the first event (or --since) to now
    (or --until). The worst node comes first.

    Example:

        membership audit --base-dir /var/lib/droonga --since '1d ago'
        membership audit --node 192.168.100.51:10031/droonga --json
    """
    from . import audit as _audit
    from .store import Store

    s = _settings(base_dir, db, catalog, live_file)
    with Store(s.db_url) as store:
        incidents, nodes, since_us, until_us = _window(store, since, until, observer, node)
    doc = _audit.report(incidents, nodes, since_us, until_us, iso)
    if json_out:
        # Compact: the C encoder. An indented dump of a long audit is ~10x slower.
        typer.echo(json.dumps(doc))
        return
    typer.echo(f"audit {doc['since']} to {doc['until']} "
               f"({duration((until_us - since_us) / 1e6)})")
    if not doc["nodes"]:
        typer.echo("no nodes")
        return
    rows = []
    for name, n in doc["nodes"].items():
        avail = "-" if n["availability"] is None else f"{100 * n['availability']:.3f}%"
        still = sum(1 for i in n["incidents"] if i["up_at"] is None)
        rows.append([name, str(len(n["incidents"])) + (f" ({still} open)" if still else ""),
                     duration(n["downtime_s"]), avail, duration(n["mttr_s"]),
                     str(n["flaps"])])
    typer.echo(_table(["NODE", "INCIDENTS", "DOWNTIME", "AVAILABILITY", "MTTR", "FLAPS"],
                      rows))
    detail = [[name, i["down_at"][:23], (i["up_at"] or "still down")[:23],
               duration(i["duration_s"]), i["cause"], ",".join(i["observers"]) or "-"]
              for name, n in doc["nodes"].items() for i in n["incidents"]]
    if detail:
        typer.echo("")
        typer.echo(_table(["NODE", "DOWN AT (UTC)", "UP AT (UTC)", "DURATION", "CAUSE",
                           "OBSERVERS"], sorted(detail, key=lambda r: r[1])))


@app.command()
def timeline(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
             live_file: LiveFile = None, since: Since = None, until: Until = None,
             node: NodeOpt = None, observer: ObserverOpt = None,
             output: Annotated[str, typer.Option(
                 "-o", "--output", metavar="FILE.svg|FILE.html",
                 help="Where to write the picture; the suffix chooses SVG or HTML.")] = ...,
             ) -> None:
    """A picture: one row per node, live and dead bands over time, incidents marked.

    Incident bands are coloured by cause (failed, left, operator) and carry a hover title
    with their times and duration. The file is self-contained: it fetches nothing.

    Example:

        membership timeline --base-dir /var/lib/droonga --since '1d ago' -o last-day.html
    """
    from . import audit as _audit
    from . import timeline as _timeline
    from .store import Store

    if not output.endswith((".svg", ".html", ".htm")):
        raise typer.BadParameter(f"{output!r}: the file must end in .svg or .html",
                                 param_hint="-o")
    s = _settings(base_dir, db, catalog, live_file)
    with Store(s.db_url) as store:
        incidents, nodes, since_us, until_us = _window(store, since, until, observer, node)
    order = list(_audit.report(incidents, nodes, since_us, until_us, iso)["nodes"])
    svg = _timeline.render_svg(order, incidents, since_us, until_us, iso)
    data = svg if output.endswith(".svg") else _timeline.render_html(svg)
    with open(output, "w", encoding="utf-8") as f:
        f.write(data)
    typer.echo(f"wrote {output}: {len(order)} node(s), "
               f"{sum(1 for i in incidents if i.node in set(order))} incident(s), "
               f"{iso(since_us)} to {iso(until_us)}")


@app.command()
def verify(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
           live_file: LiveFile = None, live_format: LiveFormat = None) -> None:
    """Check the hash chain, and that the snapshot and live file equal a fresh fold.

    An edited, deleted, inserted or reordered raw event breaks the chain at the first event
    it touches; verify names it and exits 1. So does a snapshot or live file that disagrees
    with a fresh fold of the raw log (repair those with `membership rebuild`), and events
    still waiting in the spool. Derived state that only lags the log (a handler killed
    after recording, before folding) is reported, not failed.

    Example:

        membership verify --base-dir /var/lib/droonga
    """
    from . import integrity, spool
    from .store import Store

    s = _settings(base_dir, db, catalog, live_file, live_format)
    with Store(s.db_url) as store:
        if store.central:
            _verify_central(store)
            return
        count, _, broken = integrity.check_chain(store.raw_events())
        problems = [broken] if broken else []
        notes: list[str] = []
        if broken is None:
            typer.echo(f"ok: {count} events, hash chain intact")
            snap = store.snapshot()
            if snap is not None and snap[1] is None:
                notes.append("the snapshot is in another format (another Python or release); "
                             "it is refolded on the next run")
                snap = None
            live_path = s.live_file if s.sqlite_path else None
            live_bytes = livefile.read(live_path) if live_path else None
            derived, more = integrity.check_derived(store.raw_events(), snap, live_bytes,
                                                    live_path, s.live_format,
                                                    store.checkpoints())
            if not more:  # incidents are as current as the snapshot; lagging is a note
                derived += integrity.check_incidents(store.raw_events(),
                                                     store.incidents(2**62))
            problems += derived
            notes += more
            if not derived:
                if snap is not None:
                    typer.echo(f"ok: snapshot at event {snap[0]} agrees with a fresh fold")
                if live_path:
                    typer.echo(f"ok: live file {live_path} agrees with the log")
    if s.sqlite_path is not None:
        waiting = spool.pending(s.spool_dir)
        if waiting:
            problems.append(integrity.Problem(None, f"{len(waiting)} event(s) wait in the "
                            f"spool {s.spool_dir}: the next handler run that can write the "
                            f"store takes them in"))
        else:
            typer.echo("ok: spool empty")
    for note in notes:
        typer.echo(f"note: {note}")
    for p in problems:
        typer.echo(f"FAILED: {p.what}")
    if problems:
        first = next((p.seq for p in problems if p.seq is not None), None)
        where = f"first bad event {first}" if first is not None else "spool waiting"
        raise MembershipError(f"verify failed: {where}")


def _verify_central(store) -> None:
    """Each node's log in a central store carries its own hash chain."""
    from . import integrity

    bad = []
    for origin in store.origins():
        count, _, broken = integrity.check_chain(store.raw_events(origin=origin))
        if broken is None:
            typer.echo(f"ok: {origin}: {count} events, hash chain intact")
        else:
            typer.echo(f"FAILED: {origin}: {broken.what}")
            bad.append(f"{origin} event {broken.seq}")
    if not bad:
        typer.echo(f"ok: {len(store.origins())} node log(s)")
        return
    raise MembershipError(f"verify failed: first bad event {', '.join(bad)}")


@app.command()
def ship(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
         live_file: LiveFile = None,
         to: Annotated[str, typer.Option(
             "--to", metavar="URL", help="The central store (postgresql://...).")] = ...,
         follow: Annotated[bool, typer.Option(
             "--follow", help="Keep shipping as events arrive, until interrupted.")] = False,
         interval: Annotated[float, typer.Option(
             "--interval", min=0.1, help="With --follow: seconds between looks.")] = 1.0,
         ) -> None:
    """Copy this node's new events to a central store (PostgreSQL), in batches.

    Idempotent and resumable: the central store's last event of this node says where to go
    on, each batch is one transaction, and a second run copies nothing twice. The central
    copy must continue the local hash chain, or nothing is shipped. The node is named by the
    observer (SERF_SELF_NAME) of its latest event. Run `membership db upgrade --db URL` once
    to create the central schema.

    Example:

        membership ship --base-dir /var/lib/droonga --to postgresql://membership@db/central
        membership ship --to postgresql://membership@db/central --follow
    """
    import signal
    import time as _time

    from . import store as _store

    s = _settings(base_dir, db, catalog, live_file)
    if s.sqlite_path is None:
        raise MembershipError("ship copies a node's SQLite store; --db names a central store")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            with _progress("shipping") as progress:
                r = _store.ship(s.sqlite_path, to, progress)
            if r["copied"] or not follow:
                typer.echo(f"shipped {r['copied']} event(s) of {r['origin']}: the central "
                           f"store holds its events up to {r['central_head']}")
            if not follow:
                return
            _time.sleep(interval)
    except KeyboardInterrupt:
        return


@app.command()
def rebuild(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
            live_file: LiveFile = None, live_format: LiveFormat = None) -> None:
    """Rebuild everything derived from the raw log, and rewrite the live file.

    Drops the snapshots, folds the whole raw log again and writes the live file if its bytes
    differ. The raw log itself is never changed. Safe while Serf keeps running: handlers
    wait for the store's lock.

    Example:

        membership rebuild --base-dir /var/lib/droonga
    """
    from . import journal

    s = _settings(base_dir, db, catalog, live_file, live_format)
    if s.sqlite_path is None:
        raise MembershipError("rebuild works on a node's SQLite store; a central store holds "
                              "raw events only")
    j = journal.Journal(s.sqlite_path)
    try:
        with _progress("folding the raw log") as progress:
            with j.write():
                j.forget_snapshots()
            state, live, _ = journal.catch_up(j, s.live_file, progress, s.live_format)
    finally:
        j.close()
    typer.echo(f"rebuilt from {state.seq} events: snapshot at event {state.seq}, live file "
               f"{s.live_file} with {len(project.live_nodes(state))} live node(s)")


class _progress:
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.bar = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task(self.what, total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@app.command()
def watch(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
          live_file: LiveFile = None, json_out: Json = False,
          interval: Annotated[float, typer.Option(
              "--interval", min=0.01, help="Seconds between looks at the file.")] = 0.2,
          ) -> None:
    """For the engine side: print the live set each time the live file changes.

    One line per change: time, nodes added (+), removed (-), and the full live set; the
    first line is the set found at start. The file's bytes are compared, not its mtime, so
    same-second rewrites are seen; a rewrite that leaves the set as it was prints nothing.
    A missing or unreadable file keeps the last good set and says so on stderr. Runs until
    interrupted (Ctrl-C or SIGTERM), then exits 0.

    Example:

        membership watch --base-dir /var/lib/droonga
        membership watch --live-file /var/lib/droonga/live-nodes.json --json
    """
    import signal

    from . import engine

    s = _settings(base_dir, db, catalog, live_file)

    def problem(message: str) -> None:
        typer.echo(f"membership: {message}", err=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        for change in engine.watch(s.live_file, interval, on_problem=problem):
            if json_out:
                line = json.dumps({"at": iso(change.at), "added": list(change.added),
                                   "removed": list(change.removed), "live": list(change.live)})
            else:
                diff = " ".join([f"+{n}" for n in change.added] +
                                [f"-{n}" for n in change.removed])
                line = f"{iso(change.at)[:23]}  {diff}  live ({len(change.live)}): " \
                       f"{' '.join(change.live)}"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@app.command()
def route(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
          live_file: LiveFile = None,
          dataset: Annotated[str | None, typer.Option(
              "--dataset", metavar="NAME", help="Only this dataset.")] = None,
          json_out: Json = False) -> None:
    """For the engine side: per dataset, the replicas usable now and the live volumes of
    each slice, from the catalog and the live file.

    A replica is usable only if every node holding one of its slices is live (a slice
    holding nested replicas is usable if one of them is). A dataset with no usable replica
    is flagged, and the command exits 1.

    Example:

        membership route --base-dir /var/lib/droonga
        membership route --dataset Default --json
    """
    from . import engine

    s = _settings(base_dir, db, catalog, live_file)
    datasets = engine.load_datasets(s.catalog)
    if dataset is not None:
        datasets = [d for d in datasets if d.name == dataset]
        if not datasets:
            raise MembershipError(f"no dataset {dataset!r} in {s.catalog}")
    live = engine.read_live(s.live_file)
    if live is None:
        raise MembershipError(f"no usable live file at {s.live_file} (run: membership init)")
    routes = engine.route(datasets, live)
    stranded = [name for name, r in routes.items() if not r["usable_replicas"]]
    if json_out:
        typer.echo(json.dumps({"datasets": routes}, indent=2))
    else:
        for name, r in routes.items():
            n = len(r["replicas"])
            head = f"dataset {name}: {len(r['usable_replicas'])} of {n} replica(s) usable"
            typer.echo(head + ("  ** NO USABLE REPLICA **" if name in stranded else ""))
            for rep in r["replicas"]:
                state = "usable" if rep["usable"] else \
                    f"DOWN (dead: {', '.join(rep['dead_nodes']) or 'nested replicas'})"
                typer.echo(f"  replica {rep['index']}: {state}")
            for label, addresses in r["slices"].items():
                typer.echo(f"  slice {label}: {' '.join(addresses) or '(no live volume)'}")
    if stranded:
        raise MembershipError(f"no usable replica for dataset(s): {', '.join(stranded)}")


@db_app.command("upgrade")
def db_upgrade(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
               live_file: LiveFile = None) -> None:
    """Run the Alembic migrations on --db (creating the schema if it is empty).

    A store made by an older release is upgraded only by this command (or init), never
    silently. Works on SQLite and PostgreSQL.

    Example:

        membership db upgrade --db postgresql://membership@db.example/membership
    """
    from . import store

    s = _settings(base_dir, db, catalog, live_file)
    before, after = store.upgrade(s.db_url)
    if before == after:
        typer.echo(f"store already at schema {after}")
    else:
        typer.echo(f"store upgraded: {before or 'empty'} -> {after}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"membership-log {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version.")] = False
) -> None:
    pass


def run(args: list[str]) -> int:
    """Run the CLI and return its exit status."""
    try:
        app(args=args, prog_name="membership")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BrokenPipeError:  # `membership replay | head`
        return 0
    return 0
