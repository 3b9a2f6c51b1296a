"""The ``membership`` command line: a thin shell over the library.

Each command resolves where things live, calls the core, and renders a table for people or
JSON for machines. Errors are one line (``membership: ...``) and exit 1; usage errors exit 2.
``membership handle`` itself runs without this module (see :mod:`membership_log.launch`).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import events, project, settings
from .errors import MembershipError
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
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _settings(base_dir, db, catalog, live_file) -> settings.Settings:
    return settings.resolve(base_dir, db, catalog, live_file)


def iso(us: int) -> str:
    """UTC microseconds -> ISO 8601 with a Z."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


@app.command()
def init(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
         live_file: LiveFile = None) -> None:
    """Create or upgrade the store, record the catalog, write the live file. Idempotent.

    Every catalog node starts live (Droonga's rule). Without a catalog file, every Serf
    member seen becomes a node.

    Example:

        membership init --base-dir /var/lib/droonga
    """
    from . import store

    s = _settings(base_dir, db, catalog, live_file)
    result = store.init(s)
    if s.sqlite_path is None:
        typer.echo(f"store {result['store']}: schema {result['from']} -> {result['to']}")
        return
    typer.echo(f"store {result['store']} at schema {result['to']}, {result['seq']} events")
    typer.echo(f"live file {s.live_file}: {len(result['live'])} live node(s)")


@app.command(context_settings={"ignore_unknown_options": True})
def handle(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
           live_file: LiveFile = None) -> None:
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
                        ("--live-file", live_file)):
        if value:
            args += [flag, value]
    raise typer.Exit(handle_main(args))


def _folded(store, upto: int | None = None):
    """Fold the store's log, yielding (raw, event, state after it, changes) per event."""
    state = project.EMPTY
    for raw in store.raw_events(until=upto):
        event = events.parse(raw)
        state, changes = project.apply(state, event)
        yield raw, event, state, changes


@app.command()
def state(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
          live_file: LiveFile = None, json_out: Json = False) -> None:
    """Every known node and its liveness now, from a fold of the whole log.

    LIVE is what the live file says; SERF the status Serf last reported for the node's
    member (`-` if none yet: catalog nodes start live); MARK an operator's membership-down.

    Example:

        membership state --base-dir /var/lib/droonga
        membership state --json
    """
    from .store import Store

    s = _settings(base_dir, db, catalog, live_file)
    current = project.EMPTY
    last_at = None
    with Store(s.db_url) as store:
        for raw in store.raw_events():
            current = project.step(current, events.parse(raw))
            last_at = raw.received_us
    nodes = project.view(current)
    if json_out:
        typer.echo(json.dumps({
            "seq": current.seq,
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
    typer.echo(f"after event {current.seq} ({when}): {live} of "
               f"{sum(1 for n in nodes.values() if n.in_catalog)} node(s) live")
    if rows:
        typer.echo(_table(["NODE", "LIVE", "SERF", "MARK", "ADDRESS", "MEMBER", ""], rows))


def event_json(raw, event, changes) -> dict:
    """One replay line (SPEC "Replay and audit JSON")."""
    return {
        "seq": raw.seq,
        "at": iso(raw.received_us),
        "observer": raw.observer,
        "event": event.kind,
        "name": event.name,
        "ltime": event.ltime,
        "members": [{"name": m.name, "address": m.address, "role": m.role, "tags": m.tags}
                    for m in event.members],
        "payload": event.payload,
        "changes": [{"node": c.node, "from": c.before, "to": c.after} for c in changes],
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


@app.command()
def replay(base_dir: BaseDir = None, db: Db = None, catalog: CatalogPath = None,
           live_file: LiveFile = None, json_out: Json = False) -> None:
    """The log in order, each event with the liveness changes it caused.

    --json prints one JSON object per line: seq, at, observer, event, name, ltime,
    members, payload, changes ([{node, from, to}]) and warnings.

    Example:

        membership replay --base-dir /var/lib/droonga
        membership replay --json | jq 'select(.changes != [])'
    """
    from .store import Store

    s = _settings(base_dir, db, catalog, live_file)
    out = sys.stdout
    with Store(s.db_url) as store:
        if json_out:
            for raw, event, _, changes in _folded(store):
                out.write(json.dumps(event_json(raw, event, changes), sort_keys=True) + "\n")
            return
        rows = []
        for raw, event, _, changes in _folded(store):
            effect = ", ".join(f"{c.node} {c.before or 'new'} -> {c.after or 'gone'}"
                               for c in changes)
            rows.append([str(raw.seq), iso(raw.received_us)[:23], raw.observer or "-",
                         event.kind, _summary(event), effect])
    if rows:
        typer.echo(_table(["SEQ", "AT (UTC)", "OBSERVER", "EVENT", "DETAIL", "CHANGES"], rows))
    else:
        typer.echo("the log is empty")


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
