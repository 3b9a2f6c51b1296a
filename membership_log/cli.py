"""The ``membership`` command line: wiring around :mod:`membership_log.history.api`.

Each command parses its options, calls one library function and hands the records to
:mod:`membership_log.render.tables` (a table for people, JSON for machines). Where things live
(``--base-dir``, ``--db``, ``--catalog``, ``--live-file``, ``--live-format``) is declared once,
by :func:`command`: every command accepts all of them (SPEC), and shows in its ``--help`` only
those it reads. Errors are one line (``membership: ...``) and exit 1; usage errors exit 2.
``membership handle`` itself runs without this module (see :mod:`membership_log.launch`).

No ``from __future__ import annotations`` here: Typer reads the annotations at run time.
"""

import inspect
import sys
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
import typer.core
from typer.core import TyperGroup

from . import settings
from .core import timespec
from .core.clock import now_us
from .core.errors import MembershipError, UsageError
from .core.redact import mask_url
from .core.timespec import iso
from .render import jsondoc
from .render import tables as render
from .version import __version__

if TYPE_CHECKING:
    from rich.progress import Progress


class _Group(TyperGroup):
    """Turns a :class:`MembershipError` into one line on stderr and exit 1 (a
    :class:`UsageError`: exit 2, as Click's own usage errors)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as e:
            typer.echo(f"membership: {render.printable(str(e))}", err=True)
            raise typer.Exit(2) from None
        except MembershipError as e:
            typer.echo(f"membership: {render.printable(str(e))}", err=True)
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - a bug: still one line, the trace on request
            import os

            if os.environ.get("MEMBERSHIP_DEBUG"):
                raise
            if hasattr(e, "exit_code") and hasattr(e, "show"):  # Click's own: usage errors
                raise
            typer.echo(f"membership: internal error: {type(e).__name__}: "
                       f"{render.printable(str(e))[:300]} (run again with MEMBERSHIP_DEBUG=1 "
                       f"for the traceback, and report it)", err=True)
            raise typer.Exit(1) from None


# Typer prints an argument's Python type beside its name ("FILE <str>"); the help says what
# the argument is instead. (A method of some Typer releases the pin allows, absent from others:
# the ignore covers both.)
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[attr-defined, method-assign, unused-ignore]

_APP: dict[str, Any] = {
    "cls": _Group, "rich_markup_mode": None, "pretty_exceptions_enable": False,
    "no_args_is_help": True, "add_completion": False,
    "context_settings": {"help_option_names": ["-h", "--help"]}}
app = typer.Typer(name="membership", help="Give a Serf-managed cluster a memory: an "
                  "append-only log of membership events, the live-node file derived from it, "
                  "and the means to replay and audit it.", **_APP)
db_app = typer.Typer(help="Manage the store's schema.", **_APP)
app.add_typer(db_app, name="db")

# -- where things live: declared once --------------------------------------------------------

_LOCATION = {
    "base_dir": ("--base-dir", "DIR", "current directory"),
    "db": ("--db", "URL", "<base-dir>/membership.db"),
    "catalog": ("--catalog", "PATH", "<base-dir>/catalog.json"),
    "live_file": ("--live-file", "PATH", "<base-dir>/live-nodes.json"),
    "live_format": ("--live-format", "FORMAT", "droonga"),
}
STORE = ("base_dir", "db")


def _location_param(name: str, shown: bool) -> inspect.Parameter:
    flag, metavar, default = _LOCATION[name]
    env, help_text = settings.OPTIONS[flag]
    option = typer.Option(flag, envvar=env, metavar=metavar, show_default=default,
                          help=help_text, hidden=not shown)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[str | None, option])


def _summary(doc: str | None) -> str | None:
    """A command's one-line summary for the command list: its docstring's first paragraph,
    whole (Click would cut it at 45 characters with "...")."""
    if not doc:
        return None
    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())


def command(target=None, name: str | None = None, reads: tuple = STORE, bulk: bool = False,
            **kw):
    """Register ``fn(s: Settings, ...)`` as a command that takes every location option
    (SPEC "Where things live") and documents those in ``reads``. A ``bulk`` command (one
    that may go over a whole log, and ends) runs with the cycle collector paused
    (:func:`membership_log.history.parallel.paused_gc`)."""
    target = target or app

    def register(fn):
        kw.setdefault("short_help", _summary(fn.__doc__))
        sig = inspect.signature(fn, eval_str=True)
        own = list(sig.parameters.values())[1:]  # the first is the resolved Settings

        def run(**kwargs):
            where = {n: kwargs.pop(n) for n in _LOCATION}
            if not bulk:
                return fn(settings.resolve(**where), **kwargs)
            from .history.parallel import paused_gc

            with paused_gc():
                return fn(settings.resolve(**where), **kwargs)

        params = own + [_location_param(n, n in reads) for n in _LOCATION]
        # inspect.signature (hence Typer) reads __signature__, which functions do not declare.
        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__ = fn.__doc__
        run.__name__ = fn.__name__
        return target.command(name, **kw)(run)

    return register


def _duration(zero: bool = False):
    """The parser of a duration option: ``90``, ``90s``, ``5m``, ``2h``, ``1d`` (a plain
    number is seconds), the one way every duration option is read; a bad one exits 2."""

    def parse(value):
        if value is None or isinstance(value, (int, float)):
            return value
        try:
            return timespec.parse_duration(value, zero=zero)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

    return parse


def Duration(flag: str, help: str, zero: bool = False):  # noqa: N802 - reads as a type
    """A duration option (seconds as a float)."""
    return typer.Option(flag, parser=_duration(zero), metavar="DURATION",
                        help=help + " (90, 90s, 5m, 2h, 1d: a plain number is seconds)")


def _time(value):
    if value is None or isinstance(value, timespec.Point):
        return value
    try:
        return timespec.parse(value, now_us())
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
    "--observer", metavar="O", help="Only what this reporting node (SERF_SELF_NAME) saw; on "
    "a central store, that node's own log.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _store(s: settings.Settings):
    from .history import api as history

    return history.open_store(s.db_url)


class _progress:
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.bar: Progress | None = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import Progress

        bar = self.bar = Progress(console=Console(stderr=True), transient=True)
        bar.__enter__()
        task = bar.add_task(self.what, total=None)
        return lambda done, total: bar.update(task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _out(text: str) -> None:
    typer.echo(text)


StoreGroup = Annotated[str | None, typer.Option(
    settings.STORE_GROUP[0], envvar=settings.STORE_GROUP[1], metavar="GROUP",
    help=settings.STORE_GROUP[2])]


def _grouped(s: settings.Settings, store_group: str | None) -> settings.Settings:
    return s._replace(store_group=store_group) if store_group else s


# -- set-up and the handler --------------------------------------------------------------------


@command(reads=tuple(_LOCATION))
def init(s: settings.Settings, store_group: StoreGroup = None) -> None:
    """Create or upgrade the store, record the catalog, write the live file. Idempotent.

    Every catalog node starts live (Droonga's rule). Without a catalog file, every Serf
    member seen becomes a node. On a central store URL (--db postgresql://...), creates or
    upgrades its schema.

    Example:

    \b
        membership init --base-dir /var/lib/droonga
        membership init --base-dir /var/lib/droonga --store-group membership
    """
    from .history import setup as admin

    s = _grouped(s, store_group)
    with _progress("folding the log") as progress:
        result = admin.init(s, progress=progress)
    if s.sqlite_path is None:
        _out(f"store {result['store']}: schema {result['from']} -> {result['to']}")
        return
    _out(f"store {result['store']} at schema {result['to']}, {result['seq']} events")
    status, why = result["catalog"]
    if status == "unusable":
        kept = "left as it was" if result["live_file"] else "not written"
        raise MembershipError(f"catalog {s.catalog} is unusable ({why}); the live file "
                              f"{s.live_file} was {kept}")
    if result["not_written"] is not None:
        reason = why if status == "missing" else result["not_written"]
        _out(f"live file {s.live_file}: not written yet: {reason}")
    elif result["live"]:
        _out(f"live file {s.live_file}: {len(result['live'])} live node(s)")
    else:
        _out(f"live file {s.live_file}: no live node (the log says every node is dead)")
    for warning in result["warnings"]:
        typer.echo(f"warning: {render.printable(warning)}", err=True)


@command(reads=tuple(_LOCATION), context_settings={"ignore_unknown_options": True})
def handle(s: settings.Settings, store_group: StoreGroup = None) -> None:
    """The Serf event handler: record the event, update the live file, answer queries.

    Serf runs it for every event with SERF_* variables set and the event on stdin. It
    records the raw event (every SERF_* variable except SERF_RPC_*, and stdin byte for
    byte) before anything parses it, records catalog.json if it changed, folds the event,
    rewrites the live file atomically when its content changes, and answers a
    `membership-live` query with this node's live set. A base dir with no store is set up
    on the spot. If the store cannot be written the event is spooled and taken in later.

    Serf configuration (options after the command name: Serf reads text before a `=` as an
    event filter):

        event_handlers = ["membership handle --base-dir /var/lib/droonga"]

    Operator marks: `serf event membership-down NODE...` / `serf event membership-up NODE...`.

    Example:

    \b
        printf 'node1\\t192.168.100.51\\t\\t\\n' | SERF_EVENT=member-failed SERF_SELF_NAME=node0 \\
            membership handle --base-dir /var/lib/droonga
    """
    from .handler import main as handle_main

    args = ["--base-dir", s.base_dir, "--db", s.db_url, "--catalog", s.catalog,
            "--live-file", s.live_file, "--live-format", s.live_format]
    if store_group or s.store_group:
        args += [settings.STORE_GROUP[0], store_group or s.store_group]
    raise typer.Exit(handle_main(args))


# -- reading the history ---------------------------------------------------------------------


@command(reads=STORE + ("live_format",))
def state(s: settings.Settings, at: At = None, observer: ObserverOpt = None,
          json_out: Json = False,
          as_live_file: Annotated[bool, typer.Option(
              "--as-live-file", help="Print exactly the bytes the live file had right after "
              "the last event at or before --at.")] = False) -> None:
    """Every known node and its liveness now, or at any moment of the log (--at).

    LIVE is what the live file said; SERF the status Serf last reported for the node's
    member (`-` if none yet: catalog nodes start live); MARK an operator's membership-down.
    The catalog in force at that moment is the one used (catalog versions are events). On a
    central store the answer merges every node's log (a node is dead if any observer saw it
    dead) unless --observer picks one.

    Example:

    \b
        membership state --base-dir /var/lib/droonga
        membership state --at '2026-11-25T03:12:00' --json
        membership state --at @42 --as-live-file > live-nodes.json
    """
    from .history import api as history
    from .render import jsondoc, livefile

    if json_out and as_live_file:
        raise typer.BadParameter("--json and --as-live-file exclude each other")
    with _store(s) as store:
        now = history.state_at(store, at, observer)
    if as_live_file:
        if now.seq is None and s.live_format == settings.DROONGA_11:
            raise MembershipError("the droonga-1.1 file is one node's (its catalog, its "
                                  "members): with a central store, add --observer NODE")
        data, reason = livefile.file_of(now, s.live_format)
        if data is None:
            raise MembershipError(f"no live file to print: {reason}")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if json_out:
        _out(jsondoc.encode(jsondoc.state_doc(now)))
        return
    _out(render.state_table(now, at))


@command(bulk=True)
def replay(s: settings.Settings, since: Since = None, until: Until = None,
           node: NodeOpt = None, observer: ObserverOpt = None, json_out: Json = False) -> None:
    """The log in order, each event with the liveness changes it caused.

    Folding starts at the nearest checkpoint before --since, so every change is judged in its
    full context; the options choose which events are shown. A user event Serf delivered
    again is shown as a duplicate with no changes: the raw log keeps every delivery. On a
    central store, every node's log merged by receive time (changes cluster-wide) unless
    --observer picks one.

    --json prints one JSON object per line: seq, at, observer, event, name, ltime, members,
    payload, changes ([{node, from, to}]), duplicate and warnings (and origin when merged).

    Example:

    \b
        membership replay --base-dir /var/lib/droonga --since '2h ago'
        membership replay --node node1 --json | jq 'select(.changes != [])'
    """
    from .history import api as history

    with _store(s) as store:
        if json_out:
            from .history import bulk

            bulk.replay_json(s.db_url, store, sys.stdout, since, until, node, observer)
            return
        records = history.replay(store, since, until, node, observer)
        rows = [render.replay_row(r, observer) for r in records]
    _out(render.table(["SEQ", "AT (UTC)", "OBSERVER", "EVENT", "DETAIL", "CHANGES"], rows)
         if rows else "no events match")


FlapWindow = Annotated[float, Duration(
    "--flap-window", "Flapping: incidents beginning within this long of each other")]
FlapThreshold = Annotated[int, typer.Option(
    "--flap-threshold", min=2, metavar="N", help="Flapping: at least this many incidents "
    "within the window (2 or more).")]
DetectionDelay = Annotated[float | None, Duration(
    "--detection-delay", "Serf's failure detection delay: adds est_down_at and "
    "est_duration_s to failed incidents", zero=True)]


def _causes(value):
    """``--exclude-cause CAUSE[,CAUSE]``: causes among failed, left, operator."""
    from .core.incidents import CAUSES

    if value is None or isinstance(value, tuple):
        return value
    causes = tuple(c.strip() for c in value.split(",") if c.strip())
    bad = [c for c in causes if c not in CAUSES]
    if bad or not causes:
        raise typer.BadParameter(f"{value!r}: causes are {', '.join(CAUSES)} (comma-separated)")
    return causes


ExcludeCause = Annotated[tuple | None, typer.Option(
    "--exclude-cause", parser=_causes, metavar="CAUSE[,CAUSE]", help="Leave incidents of "
    "these causes (failed, left, operator) out of incidents, downtime and availability: "
    "planned leaves and operator marks out of the SLO.")]


@command(bulk=True)
def audit(s: settings.Settings, since: Since = None, until: Until = None,
          node: NodeOpt = None, observer: ObserverOpt = None, json_out: Json = False,
          flap_window: FlapWindow = "10m",  # type: ignore[assignment]  # parsed: a float
          flap_threshold: FlapThreshold = 3,
          detection_delay: DetectionDelay = None, exclude_cause: ExcludeCause = None) -> None:
    """Incidents per node (down, up, how long, why) and figures over a window.

    An incident opens when a node goes dead and closes when it is live again; its cause is
    failed (member-failed), left (member-leave) or operator (membership-down). One still
    open at the end of the window is reported open (up_at null). Per node: downtime,
    availability over the observed part of the window, MTTR (mean time to recovery of
    closed incidents), flaps (times it went down) and flapping stretches. Time when an
    observer's agent was down (between its last event and its restart) is unobserved. The
    window runs from the first event (or --since) to now (or --until); the worst node
    comes first. Serf reports a failure only after its suspicion timeout: every duration
    is a lower bound (--detection-delay estimates the real start).

    Example:

    \b
        membership audit --base-dir /var/lib/droonga --since '1d ago'
        membership audit --node 192.168.100.51:10031/droonga --json
        membership audit --flap-window 10m --flap-threshold 3 --detection-delay 5
    """
    from .history import api as history

    options: dict[str, Any] = {"flap_window_s": flap_window, "flap_threshold": flap_threshold,
               "detection_delay_s": detection_delay, "exclude": exclude_cause or ()}
    with _store(s) as store:
        if json_out:
            from .history import bulk

            _out(bulk.audit_json(s.db_url, store, since, until, node, observer, **options))
            return
        doc = history.audit(store, since, until, node, observer, **options)
    _out(render.audit_text(doc))


@command(bulk=True)
def timeline(s: settings.Settings, *, since: Since = None, until: Until = None,
             node: NodeOpt = None, observer: ObserverOpt = None,
             output: Annotated[str, typer.Option(
                 "-o", "--output", metavar="FILE.svg|FILE.html",
                 help="Where to write the picture; the suffix chooses SVG or HTML.")],
             flap_window: FlapWindow = "10m",  # type: ignore[assignment]  # parsed: a float
             flap_threshold: FlapThreshold = 3) -> None:
    """A picture: one row per node, live and dead bands over time, incidents marked.

    Incident bands are coloured by cause (failed, left, operator) and carry a hover title
    with their times and duration; unobserved time (an observer's agent down) is hatched,
    flapping stretches are underlined. The file is self-contained: it fetches nothing. It
    is written atomically: a failure never leaves an empty or half file.

    Example:

    \b
        membership timeline --base-dir /var/lib/droonga --since '1d ago' -o last-day.html
    """
    from .history import api as history
    from .render import timeline as _timeline
    from .stores import files

    if not output.endswith((".svg", ".html", ".htm")):
        raise typer.BadParameter(f"{output!r}: the file must end in .svg or .html",
                                 param_hint="-o")
    with _store(s) as store:
        svg = _timeline.picture(history.audit(store, since, until, node, observer,
                                              flap_window_s=flap_window,
                                              flap_threshold=flap_threshold))
    data = svg if output.endswith(".svg") else _timeline.render_html(svg)
    try:
        files.write_atomic(output, data.encode("utf-8"))
    except OSError as e:
        raise MembershipError(f"cannot write {output}: {e.strerror or e}") from None
    _out(f"wrote {output}")


@command(bulk=True)
def export(s: settings.Settings, since: Since = None, until: Until = None,
           observer: ObserverOpt = None) -> None:
    """The raw log as JSON lines, one event per line, in log order.

    Each line: {"seq", "received", "observer", "source", "env", "stdin_b64", "hash"}; the
    exact stdin bytes in base64, the recorded SERF_* variables in env. The way to back up,
    move, or inspect a log; `membership import` loads it into another store. On a central
    store, --observer picks the node's log to export.

    Example:

    \b
        membership export --base-dir /var/lib/droonga > node0.jsonl
        membership export --since '1d ago' | gzip > last-day.jsonl.gz
    """
    from .history import api as history

    with _store(s) as store:
        jsondoc.write_lines(sys.stdout, (jsondoc.export_doc(raw) for raw in
                                         history.export(store, since, until, observer)))


@command(name="import", reads=tuple(_LOCATION), bulk=True)
def import_(s: settings.Settings,
            file: Annotated[str, typer.Argument(
                metavar="FILE", show_default=False, help="JSON lines from membership "
                "export; - or none: stdin.")] = "-") -> None:
    """Append exported events to this node's store, then bring the live file up to date.

    Through the same append path as the handler, in file order: new sequence numbers
    continue this log; received time, observer, source, env and the stdin bytes are kept
    exactly; the chain is computed here (the input's seq and hash are not trusted). A base
    dir with no store gets one (its catalog file is not recorded: the log carries its own).
    A bad line stops the import, naming its line number; nothing of the import is kept.

    Example:

    \b
        membership import --base-dir /srv/restore node0.jsonl
        zcat last-day.jsonl.gz | membership import --base-dir /srv/copy
    """
    from .history import transfer

    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as e:
        raise MembershipError(f"cannot read {file}: {e.strerror or e}") from None
    try:
        with _progress("importing") as progress:
            r = transfer.import_(s, stream, progress)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if r.dropped:
        names = ", ".join(render.printable(n) for n in sorted(r.dropped)[:8])
        typer.echo(f"membership: warning: dropped variables the handler never records from "
                   f"{max(r.dropped.values())} line(s): {names}"
                   + (f" (+{len(r.dropped) - 8} more)" if len(r.dropped) > 8 else ""),
                   err=True)
    if r.appended:
        _out(f"imported {r.appended} event(s) as events {r.first}..{r.last}")
    else:
        _out("imported 0 events")


# -- witnessed history -------------------------------------------------------------------------


@command()
def head(s: settings.Settings, json_out: Json = False,
         publish: Annotated[bool, typer.Option(
             "--publish", help="Send the head as the Serf user event membership-head through "
             "the local agent (serf event -coalesce=false), for every other node to record."
             )] = False,
         rpc_addr: Annotated[str | None, typer.Option(
             "--rpc-addr", metavar="ADDR", help="With --publish: the agent's RPC address "
             "(default: Serf's own SERF_RPC_ADDR, else 127.0.0.1:7373).")] = None,
         observer: ObserverOpt = None) -> None:
    """This node's tree head: its name, the size of its log's Merkle tree and the root.

    The tree is RFC 6962's over the log's event hashes in seq order from event 1, so its size
    is the last event's seq (compacted events included). --json prints {"observer", "size",
    "root"} (root in hex). --publish sends it to the cluster as the Serf user event
    membership-head with the payload `<observer> <size> <root hex>`: every other node's
    handler records it, its fold keeps it, and a head that contradicts one seen before from
    the same node (another root at an equal size, or a smaller tree) is a warning on that
    event, the metric membership_witness_conflicts_total and an alert. The central store
    holds each shipped log to every head other nodes recorded of it (verify, ship). Run it
    every few minutes (examples/systemd/membership-head.timer). On a central store,
    --observer picks the log (no --publish there).

    Example:

    \b
        membership head --base-dir /var/lib/droonga
        membership head --base-dir /var/lib/droonga --publish --rpc-addr 127.0.0.1:7373
        membership head --db postgresql://membership@db/central --observer node1 --json
    """
    from .core.witness import HEAD_EVENT, head_payload
    from .history import witness

    if rpc_addr is not None and not publish:
        raise typer.BadParameter("--rpc-addr goes with --publish", param_hint="--rpc-addr")
    with _store(s) as store:
        if publish and store.role != "node":
            raise MembershipError("head --publish sends a node's own head: run it on the node, "
                                  "with its --base-dir")
        h = witness.head_of(store, observer)
    if publish:
        from .ops import serfagent

        serfagent.send_user_event(HEAD_EVENT, head_payload(h.observer, h.size, h.root), rpc_addr)
    if json_out:
        _out(jsondoc.encode({"observer": h.observer, "size": h.size, "root": h.root.hex()}))
    else:
        _out(render.printable(f"{h.observer}: size {h.size}, root {h.root.hex()}"
                              + (f" (published as Serf user event {HEAD_EVENT})"
                                 if publish else "")))


def _hex_root(value):
    if value is None:
        return None
    text = value.strip()
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise typer.BadParameter("a root is 64 hex digits (a witnessed head's root)")
    return text.lower()


@command()
def prove(s: settings.Settings,
          seq: Annotated[int | None, typer.Option(
              "--seq", metavar="N", min=1, help="Prove that event N is in the log's tree.")
          ] = None,
          size: Annotated[int | None, typer.Option(
              "--size", metavar="S", min=1, help="With --seq: the tree of this size (default: "
              "the latest head another node witnessed that holds event N, else the head).")
          ] = None,
          from_: Annotated[int | None, typer.Option(
              "--from", metavar="S1", min=0, help="Prove that the log at size S1 is a prefix "
              "of the log at --to.")] = None,
          to: Annotated[int | None, typer.Option(
              "--to", metavar="S2", min=0, help="With --from: the later size (default: the "
              "head).")] = None,
          observer: ObserverOpt = None) -> None:
    """Print a Merkle proof as JSON, for an auditor to check without the store.

    --seq N: an inclusion proof {"origin", "seq", "size", "root", "event", "prev", "path"}:
    the event as `membership export` writes it and the hash of event N-1, so that its hash
    is recomputed from its content, then the audit path up to the root of the tree of
    --size S. --from S1 --to S2: a consistency proof {"origin", "from", "to", "root_from",
    "root_to", "path"}: the log at S1 is a prefix of the log at S2. Check either with
    `membership check-proof FILE --root HEX`, against a root other nodes witnessed
    (`membership head`, their recorded membership-head events). A witnessed root at that
    size that is not this log's is a warning on stderr. After a compaction every kept event
    stays provable (the anchor keeps the tree's frontier); a compacted event does not, nor a
    consistency proof from a size before the anchor. On a central store --observer picks
    the log; on a node store it must be the node's own.

    Example:

    \b
        membership prove --base-dir /var/lib/droonga --seq 42 > event42.proof
        membership prove --db postgresql://membership@db/central --observer node1 --seq 42
        membership prove --base-dir /var/lib/droonga --from 40 --to 90
    """
    from .history import witness

    if (seq is None) == (from_ is None):
        raise typer.BadParameter("give --seq N (an inclusion proof) or --from S1 (a "
                                 "consistency proof), not both or neither")
    if seq is not None and to is not None:
        raise typer.BadParameter("--to goes with --from (with --seq, --size)",
                                 param_hint="--to")
    if from_ is not None and size is not None:
        raise typer.BadParameter("--size goes with --seq (with --from, --to)",
                                 param_hint="--size")
    if seq is not None and size is not None and size < seq:
        raise typer.BadParameter(f"a tree of size {size} does not hold event {seq}",
                                 param_hint="--size")
    if from_ is not None and to is not None and from_ > to:
        raise typer.BadParameter(f"--from {from_} is after --to {to}", param_hint="--from")
    with _store(s) as store:
        if seq is not None:
            doc, warnings = witness.inclusion(store, seq, size, observer)
        else:
            assert from_ is not None  # checked above: --seq or --from, one of them
            doc, warnings = witness.consistency(store, from_, to, observer)
    _out(jsondoc.encode(doc))
    for w in warnings:
        typer.echo(f"membership: warning: {render.printable(w)}", err=True)


@command(name="check-proof", reads=())
def check_proof(s: settings.Settings,
                file: Annotated[str, typer.Argument(
                    metavar="FILE", help="A proof from membership prove; - for stdin.")],
                root: Annotated[str | None, typer.Option(
                    "--root", metavar="HEX", parser=_hex_root, help="The root to hold it to: "
                    "a head another node witnessed (for a consistency proof, the later "
                    "one's). Without it the proof is checked against its own root.")] = None
                ) -> None:
    """Check a proof from `membership prove`, with nothing but the file.

    An inclusion proof: the event's hash is recomputed from its content and `prev` (exactly
    as the store chains it), its RFC 6962 leaf from that, and the path from the leaf to the
    root. A consistency proof: the path must show the tree at `from` is a prefix of the tree
    at `to`. Only the Python standard library is used; no store is opened. Exit 0 and one
    line `ok: ...`, or exit 1 and why.

    Example:

    \b
        membership check-proof event42.proof --root "$WITNESSED_ROOT"
        membership check-proof - --root "$WITNESSED_ROOT" < event42.proof
    """
    from .core import proofs

    try:
        if file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as f:
                data = f.read(64 * 1024 * 1024)
    except OSError as e:
        raise MembershipError(f"cannot read {file}: {e.strerror or e}") from None
    ok, why = proofs.check_bytes(data, root)
    if not ok:
        raise MembershipError(f"the proof does not hold: {why}")
    _out(render.printable(why))


# -- keeping the store ---------------------------------------------------------------------


@command(reads=STORE + ("live_file", "live_format"), bulk=True)
def verify(s: settings.Settings) -> None:
    """Check the hash chain, and that everything derived equals a fresh fold.

    An edited, deleted, inserted or reordered raw event breaks the chain at the first event
    it touches; verify names it and exits 1. So does a snapshot, checkpoint, incident or live
    file that disagrees with a fresh fold of the raw log (repair those with `membership
    rebuild`), and events still waiting in the spool or spool files that cannot be read.
    Derived state that only lags the log (a handler killed after recording, before folding)
    is reported, not failed. It reads one consistent snapshot of the store, so handlers can
    keep running. On a central store, each node's log is checked.

    Example:

    \b
        membership verify --base-dir /var/lib/droonga
    """
    from .history import integrity

    with _progress("verifying") as progress:
        report = integrity.verify(s, progress)
    for line in report.ok:
        _out(f"ok: {render.printable(line)}")
    for note in report.notes:
        _out(f"note: {render.printable(note)}")
    for p in report.problems:
        _out(f"FAILED: {render.printable(p.what)}")
    if report.problems:
        first = next((p.seq for p in report.problems if p.seq is not None), None)
        where = f"first bad event {first}" if first is not None else "see above"
        raise MembershipError(f"verify failed: {where}")


@command(reads=STORE + ("live_file", "live_format"), bulk=True)
def rebuild(s: settings.Settings) -> None:
    """Rebuild everything derived from the raw log, and rewrite the live file.

    Drops the snapshot, checkpoints, incidents and sessions, folds the raw log again (from
    the retention anchor, if the log was compacted) and writes the live file if its bytes
    differ. The raw log itself is never changed. Safe while Serf keeps running: the fold
    goes in chunks, handlers wait for one chunk at most, and a rebuild killed midway leaves
    derived state that merely lags (the next run goes on). On a central store, rebuilds
    every node's derived tables.

    Example:

    \b
        membership rebuild --base-dir /var/lib/droonga
    """
    from .history import setup

    with _progress("folding the raw log") as progress:
        r = setup.rebuild(s, progress)
    if r.seq is None:
        _out(f"rebuilt the derived tables of {r.logs} node log(s)")
        return
    _out(f"rebuilt from {r.seq} events: snapshot at event {r.seq}, live file "
         f"{s.live_file} with {len(r.live)} live node(s)")


@command(reads=STORE + ("live_file", "live_format"), bulk=True)
def compact(s: settings.Settings,
            before: Annotated[timespec.Point, typer.Option(
                "--before", parser=_time, metavar="T",
                help=f"Drop the events received before this moment. {_TIME_HELP}")],
            require_shipped: Annotated[str | None, typer.Option(
                "--require-shipped", metavar="URL", help="Refuse unless this central store "
                "holds every event to drop, with the same hash.")] = None,
            dry_run: Annotated[bool, typer.Option(
                "--dry-run", help="Print what would be dropped (events, time range, bytes) "
                "and change nothing.")] = False,
            force: Annotated[bool, typer.Option(
                "--force", help="Drop events no central store was shown to hold (without "
                "--require-shipped, compact refuses unless given this).")] = False) -> None:
    """Drop old events from this node's store, keeping an anchor the chain verifies from.

    The anchor is the last dropped event's seq and hash and the fold's state after it,
    recorded in the log itself (so the hash chain covers it): every answer about a time at
    or after it is unchanged; a time before it is an error naming the earliest time kept.
    Derived incidents are kept, so counters never go back. Safe under kill -9 at any moment
    and beside running handlers (it works in chunks). The file shrinks (VACUUM). Ship
    first: --require-shipped refuses unless the central store has everything it would
    drop; without it compact refuses unless --force says the events may go unshipped.
    --dry-run shows what would go.

    Example:

    \b
        membership compact --base-dir /var/lib/droonga --before '90d ago' --dry-run
        membership compact --base-dir /var/lib/droonga --before '90d ago' \\
            --require-shipped postgresql://membership@db/central
    """
    from .history import retention

    if dry_run:
        p = retention.plan(s, before)
        if not p.events:
            _out("would drop nothing: no event kept was received before "
                 f"{iso(before.us) if before.us is not None else before.text}")
            return
        _out(f"would drop {p.events} event(s): {p.first}..{p.last}, received "
             f"{iso(p.first_at)} to {iso(p.last_at)}, about {p.bytes:,} bytes "
             f"(nothing changed: --dry-run)")
        return
    with _progress("compacting") as progress:
        r = retention.compact(s, before, require_shipped and settings.store_url(require_shipped),
                              force, progress)
    if not r.dropped:
        _out("nothing to compact: no event kept was received before "
             f"{iso(before.us) if before.us is not None else before.text}")
        return
    _out(f"dropped {r.dropped} event(s); the log now starts after event {r.anchor} "
         f"({iso(r.anchor_at)}); {r.size_before:,} -> {r.size_after:,} bytes")


@command()
def ship(s: settings.Settings,
         to: Annotated[str, typer.Option(
             "--to", metavar="URL", help="The central store: a URL (postgresql://...), or a "
             "plain path for SQLite, as --db takes it.")],
         follow: Annotated[bool, typer.Option(
             "--follow", help="Keep shipping as events arrive, until interrupted; an outage "
             "of the central store is retried with backoff.")] = False,
         interval: Annotated[float, Duration(
             "--interval", "With --follow: how long between looks at the log")] = 1.0,
         ) -> None:
    """Copy this node's new events to a central store, in batches, with its derived tables.

    Idempotent and resumable: the central store's last event of this node says where to go
    on, each batch (with the checkpoints and incidents it gives) is one transaction, and a
    second run copies nothing twice. The central copy must continue the local hash chain,
    or nothing is shipped. The node is named by the observer (SERF_SELF_NAME) of its latest
    event. Run `membership db upgrade --db URL` once to create the central schema.

    Example:

    \b
        membership ship --base-dir /var/lib/droonga --to postgresql://membership@db/central
        membership ship --to postgresql://membership@db/central --follow
    """
    import signal

    from .history import transfer

    def terminate(signum, frame):
        raise KeyboardInterrupt

    to = settings.store_url(to)
    signal.signal(signal.SIGTERM, terminate)
    try:
        if follow:
            transfer.follow(s, to, interval, lambda line: typer.echo(
                render.printable(line), err=False), lambda: _progress("shipping"))
            return
        from .history.parallel import paused_gc

        with _progress("shipping") as progress, paused_gc():  # once (not --follow): bounded
            r = transfer.ship(s, to, progress)
        _out(f"shipped {r.copied} event(s) of {render.printable(r.origin)}: the central store "
             f"holds its events up to {r.central_head}")
    except KeyboardInterrupt:
        return


# -- the engine side ---------------------------------------------------------------------------


@command(reads=("base_dir", "live_file", "live_format"))
def watch(s: settings.Settings, json_out: Json = False,
          interval: Annotated[float, Duration(
              "--interval", "How long between looks at the file")] = 0.2,
          ) -> None:
    """For the engine side: print the live set each time the live file changes.

    One line per change: time, nodes added (+), removed (-), and the full live set; the
    first line is the set found at start. The file's bytes are compared, not its mtime, so
    same-second rewrites are seen; a rewrite that leaves the set as it was prints nothing.
    A missing or unreadable file keeps the last good set and says so on stderr. Runs until
    interrupted (Ctrl-C or SIGTERM), then exits 0.

    Example:

    \b
        membership watch --base-dir /var/lib/droonga
        membership watch --live-file /var/lib/droonga/live-nodes.json --json
    """
    import signal

    from . import engine

    def problem(message: str) -> None:
        typer.echo(f"membership: {render.printable(message)}", err=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        for change in engine.watch(s.live_file, interval, on_problem=problem):
            if json_out:
                line = jsondoc.encode({"at": iso(change.at), "added": list(change.added),
                                         "removed": list(change.removed),
                                         "live": list(change.live)})
            else:
                diff = " ".join([f"+{n}" for n in change.added] +
                                [f"-{n}" for n in change.removed])
                line = render.printable(f"{iso(change.at)[:23]}  {diff}  live "
                                        f"({len(change.live)}): {' '.join(change.live)}")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@command(reads=("base_dir", "catalog", "live_file", "live_format"))
def route(s: settings.Settings,
          dataset: Annotated[str | None, typer.Option(
              "--dataset", metavar="NAME", help="Only this dataset.")] = None,
          role: Annotated[str | None, typer.Option(
              "--role", metavar="ROLE", help="Droonga 1.1's rules for a sender of this "
              "role (service-provider, absorb-source, absorb-destination): which nodes it "
              "may forward to, read from and write to.")] = None,
          json_out: Json = False) -> None:
    """For the engine side: per dataset, the replicas usable now and the live volumes of
    each slice, from the catalog and the live file.

    A replica is usable only if every node holding one of its slices is live (a slice
    holding nested replicas is usable if one of them is). A dataset with no usable replica
    is flagged, and the command exits 1.

    With --role, Droonga 1.1's rules for a sender of that role, from the live file's values
    (--live-format droonga-1.1 reads <base-dir>/state/cluster-state.json; a file without
    roles makes every node a service provider): a node is forwardable if it is live and of
    the sender's role, readable if forwardable and (for a service provider) holding no
    unprocessed messages, writable for a service-provider sender always, for an absorb-*
    sender if of its role. A replica is usable for reads if all its nodes are readable, for
    writes if all are writable; a dataset with neither is flagged (exit 1).

    Example:

    \b
        membership route --base-dir /var/lib/droonga
        membership route --dataset Default --json
        membership route --live-format droonga-1.1 --role absorb-destination
    """
    from . import engine
    from .core.droonga import ROLES

    if role is not None and role.lower() not in ROLES:
        raise typer.BadParameter(f"{role!r}: the role must be one of {', '.join(ROLES)}",
                                 param_hint="--role")
    datasets = engine.load_datasets(s.catalog)
    if dataset is not None:
        datasets = [d for d in datasets if d.name == dataset]
        if not datasets:
            raise MembershipError(f"no dataset {dataset!r} in {s.catalog}")
    state = engine.read_state(s.live_file)
    if state is None:
        raise MembershipError(f"no usable live file at {s.live_file} (run: membership init)")
    live = frozenset(n for n, v in state.items() if v.get("live") is True)
    routes = engine.route(datasets, live, role=role and role.lower(), state=state)
    stranded = [name for name, r in routes.items()
                if not r["usable_replicas"] or (role is not None and not r["writable_replicas"])]
    if json_out:
        doc = {"datasets": routes} if role is None else {"role": role.lower(),
                                                          "datasets": routes}
        _out(jsondoc.encode(doc))
    else:
        _out(render.route_text(routes, stranded, role and role.lower()))
    if stranded:
        raise MembershipError(f"no usable replica for dataset(s): {', '.join(stranded)}")


@command(target=db_app, name="upgrade", reads=STORE + ("live_file", "live_format"))
def db_upgrade(s: settings.Settings,
               role: Annotated[str | None, typer.Option(
                   "--role", metavar="node|central", help="For a new store: node (one "
                   "node's log) or central (every node's shipped logs). Default: node for "
                   "SQLite, central for PostgreSQL.")] = None,
               store_group: StoreGroup = None) -> None:
    """Run the Alembic migrations on --db, then bring everything derived up to date.

    A store made by an older release is upgraded only by this command (or init), never
    silently; its derived tables are refolded from the raw log, so the upgraded store
    answers with its whole history. Works on SQLite and PostgreSQL.

    Example:

    \b
        membership db upgrade --db postgresql://membership@db.example/membership
    """
    from .history import setup as admin

    if role not in (None, "node", "central"):
        raise typer.BadParameter("--role must be node or central", param_hint="--role")
    s = _grouped(s, store_group)
    with _progress("upgrading") as progress:
        before, after = admin.upgrade_store(s, role, progress)
    if before == after:
        _out(f"store already at schema {after}")
    else:
        _out(f"store upgraded: {before or 'empty'} -> {after}")


# -- deployment: the heartbeat and the check-up (membership_log.ops) ---------------------------

RpcAddr = Annotated[str | None, typer.Option(
    "--rpc-addr", metavar="HOST:PORT", help="The local Serf agent's RPC address (default: "
    "Serf's own SERF_RPC_ADDR, else 127.0.0.1:7373).")]


@command(reads=())
def heartbeat(s: settings.Settings, rpc_addr: RpcAddr = None) -> None:
    """Send the Serf user event membership-heartbeat, with this node's name as its payload.

    It goes through the local agent (`serf event -coalesce=false`: Serf would otherwise
    merge heartbeats several nodes send at once), so every observer's handler records it.
    The metric membership_observer_last_heartbeat_timestamp_seconds{observer} then shows,
    per sender, when its last heartbeat was recorded: a log that records none is not
    listening. Run it every few minutes (examples/systemd/membership-heartbeat.timer).

    Example:

    \b
        membership heartbeat
        membership heartbeat --rpc-addr 127.0.0.1:7373
    """
    from .ops import serfagent

    sender = serfagent.send_heartbeat(rpc_addr)
    _out(f"sent {render.printable(serfagent.HEARTBEAT)} from {render.printable(sender)} "
         f"through the Serf agent at {serfagent.rpc_address(rpc_addr)}")


@command(reads=tuple(_LOCATION))
def doctor(s: settings.Settings, rpc_addr: RpcAddr = None,
           serf_config: Annotated[str | None, typer.Option(
               "--serf-config", metavar="FILE", help="The Serf agent's JSON config: check "
               "that its event_handlers line runs membership handle for this store.")] = None,
           central: Annotated[str | None, typer.Option(
               "--central", metavar="URL", help="The central store: check that it answers "
               "and how far it holds this node's log.")] = None,
           json_out: Json = False) -> None:
    """Check the set-up in one pass, one line per point: ok, warning or FAILED.

    The points: the store (role, schema revision, mode, owner, who may read it, whether
    members of its group can open it), the catalog (usable, its nodes, its cluster id, in
    force in the log), the live file (its format, whether it matches the log), the spool
    (events waiting, files that cannot be read), the local Serf agent (it answers, and runs
    membership handle for this store), and, if given, the agent's config file
    (--serf-config: the event_handlers line, and the `=` filter trap) and the central store
    (--central: it answers, its schema, how far it holds this node's log). Exits 1 if any
    point failed. --json prints {"checks": [{"name", "status", "detail"}]}.

    Example:

    \b
        membership doctor --base-dir /var/lib/droonga
        membership doctor --serf-config /etc/serf/serf.json --json
        membership doctor --central postgresql://membership@db/central
    """
    from .ops import doctor as _doctor

    checks = _doctor.run(s, rpc_addr, serf_config, central)
    if json_out:
        _out(jsondoc.encode({"checks": [{"name": c.name, "status": c.status,
                                         "detail": c.detail} for c in checks]}))
    else:
        words = {_doctor.OK: "ok", _doctor.WARNING: "warning", _doctor.FAILED: "FAILED"}
        for c in checks:
            _out(render.printable(f"{words[c.status]}: {c.name}: {c.detail}"))
    failed = sum(1 for c in checks if c.status == _doctor.FAILED)
    if failed:
        raise MembershipError(f"doctor: {failed} of {len(checks)} point(s) failed")


# -- operations: metrics, the dashboard, alerts (membership_log.ops) -------------------------------


def _stop_on_sigterm() -> None:
    """SIGTERM (systemctl stop) ends a long-running command as Ctrl-C does: cleanly, exit 0."""
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)


@command()
def metrics(s: settings.Settings,
            output: Annotated[str | None, typer.Option(
                "-o", "--output", metavar="FILE", help="Write to FILE atomically instead of "
                "stdout (node_exporter's textfile collector reads *.prom files).")] = None,
            observer: ObserverOpt = None, exclude_cause: ExcludeCause = None) -> None:
    """Prometheus metrics of the log, in the text exposition format (0.0.4).

    Per node: membership_node_up, membership_node_marked_down,
    membership_node_incidents_total{cause}, membership_node_downtime_seconds_total (open
    incidents counted up to now), membership_node_last_change_timestamp_seconds,
    membership_node_role{role} (1 for the Droonga 1.1 role its member's role tag gives); and
    membership_live_nodes, membership_catalog_nodes, membership_events_total{observer,event},
    membership_last_event_timestamp_seconds{observer},
    membership_observer_last_heartbeat_timestamp_seconds{observer} (the node whose
    `membership heartbeat` was recorded), membership_spool_files (events waiting in a node
    store's spool), membership_build_info{version} and
    membership_witness_conflicts_total{origin} (published heads of that node that
    contradicted an earlier one: see `membership head`). The counters come from the log, so
    they never reset. On a central store the figures merge every node's log (a node is down
    while any observer sees it down) unless --observer picks one. `membership serve` serves
    the same at /metrics.

    Example:

    \b
        membership metrics --base-dir /var/lib/droonga
        membership metrics -o /var/lib/prometheus/node-exporter/membership.prom
    """
    from .ops.serve import metrics_text
    from .stores import files

    with _store(s) as store:
        data = metrics_text(store, observer, exclude=exclude_cause or (),
                            spool_dir=s.spool_dir)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        files.write_atomic(output, data)
    except OSError as e:
        raise MembershipError(f"cannot write {output}: {e.strerror or e}") from None


@command()
def serve(s: settings.Settings,
          listen: Annotated[str, typer.Option(
              "--listen", metavar="HOST:PORT", help="Where to listen. The default answers "
              "this machine only; 0.0.0.0:9137 opens the log to the network (put a firewall "
              "or an authenticating proxy in front).")] = "127.0.0.1:9137",
          observer: ObserverOpt = None,
          client_timeout: Annotated[float, Duration(
              "--client-timeout", "Drop a client that sends nothing, or takes nothing of its "
              "answer, for this long (a request must arrive whole within 10 s, or this if "
              "less)")] = 30.0,
          stale_after: Annotated[float, Duration(
              "--stale-after", "The dashboard marks an observer stale (red, in words) when "
              "its latest event is older than this; heartbeats (membership heartbeat) keep a "
              "quiet cluster's observers fresh")] = 900.0) -> None:
    """Serve /metrics for Prometheus, the dashboard (/) and a JSON API over the log.

    GET /metrics is `membership metrics`, fresh at each scrape (?observer= on a central
    store). GET / is the dashboard: the cluster now, the timeline, the incidents, the state
    at any chosen moment; it updates itself within about a second of a change. The API
    answers with the commands' own JSON: /api/state?at=T, /api/audit?since=T&until=T&node=N,
    /api/replay?since=T&until=T&node=N (JSON lines, streamed), /api/heads (a change token),
    /api/timeline.svg?since=T&until=T. A bad parameter is HTTP 400, an unknown path 404, a
    store that cannot be read 503 (so Prometheus's `up` says so) while serving goes on.
    Each request opens the store and closes it: the handler is never held up (a replay
    stream reads the log a page at a time, so a stalled client pins nothing). Connections
    are capped from the open-file limit (24 at 64, 256 at 1024 and above), so the store can
    always be opened. Runs until interrupted (Ctrl-C or SIGTERM), then exits 0.

    Example:

    \b
        membership serve --base-dir /var/lib/droonga
        membership serve --db postgresql://membership@db/central
        membership serve --base-dir /var/lib/droonga --listen 0.0.0.0:9137
    """
    from .ops import serve as _serve

    try:
        _serve.parse_listen(listen)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--listen") from None
    _stop_on_sigterm()
    try:
        _serve.serve(s.db_url, listen, observer, client_timeout=client_timeout,
                     stale_after_s=stale_after, spool_dir=s.spool_dir)
    except KeyboardInterrupt:
        return


def _severity(value):
    """``--severity CAUSE=LEVEL`` (repeatable)."""
    from .core.incidents import CAUSES

    if value is None or isinstance(value, tuple):
        return value
    cause, eq, level = value.partition("=")
    if not eq or cause not in CAUSES or not level.strip():
        raise typer.BadParameter(f"{value!r}: give CAUSE=LEVEL, CAUSE one of "
                                 f"{', '.join(CAUSES)} (e.g. left=info)")
    return (cause, level.strip())


@command()
def alerts(s: settings.Settings,
           to: Annotated[str, typer.Option(
               "--to", metavar="URL", help="Alertmanager's base URL (http://HOST:9093); "
               "http://USER:PASSWORD@HOST:9093 for basic auth.")],
           follow: Annotated[bool, typer.Option(
               "--follow", help="Keep sending as the log changes, until interrupted; an "
               "unreachable Alertmanager is retried for ever.")] = False,
           min_duration: Annotated[float, Duration(
               "--min-duration", "Only incidents that lasted (or have lasted so far) at "
               "least this long, like a rule's for:", zero=True)] = 0.0,
           resend: Annotated[float, Duration(
               "--resend", "Re-send open alerts this often, well within Alertmanager's "
               "resolve_timeout (5m by default), so they keep firing")] = 60.0,
           over_hold: Annotated[float, Duration(
               "--over-hold", "An incident already over when first sent (while alerts or "
               "Alertmanager was down) is posted firing, as its own alert, until this long "
               "after delivery: Alertmanager notifies no alert it never saw firing. Keep it "
               "above your routes' group_wait")] = 300.0,
           observer: ObserverOpt = None,
           interval: Annotated[float, Duration(
               "--interval", "With --follow: how long between looks at the log")] = 1.0,
           severity: Annotated[list[str] | None, typer.Option(
               "--severity", parser=_severity, metavar="CAUSE=LEVEL", help="The severity "
               "label of a cause's alerts (default: failed=critical, left=warning, "
               "operator=warning); repeat for several.")] = None,
           exclude_cause: ExcludeCause = None,
           dashboard_url: Annotated[str | None, typer.Option(
               "--dashboard-url", metavar="URL", help="Where membership serve's dashboard "
               "is (e.g. http://monitor:9137/): every alert's generatorURL links there.")]
           = None) -> None:
    """Send incidents to Alertmanager (API v2) with their exact start and end times.

    Each incident is alert MembershipNodeDown with labels node, cause (failed, left,
    operator) and, for one node's view, observer; startsAt is the receive time of the event
    that took the node down, endsAt (once it is back) that of the event that brought it
    back. Open alerts are re-sent every --resend seconds. An incident that was over before it
    could be sent goes out firing until --over-hold seconds after delivery, with label
    incident (its start) and annotation ended_at (its exact end). What was delivered is
    kept in the store (table alert_delivery), so a restart neither loses nor repeats an
    incident. On a central store without --observer, the cluster-wide incidents are sent
    (no observer label). Without --follow: one pass; exit 0 once everything due was
    delivered, else exit 1 after a few retries. With --follow, Alertmanager being down, or
    answering an error, is reported once per outage and retried with backoff for ever;
    Ctrl-C or SIGTERM stops it (exit 0). A 4xx answer (a wrong --to, a wrong password) is
    never retried: one line, exit 1.

    Witness conflicts (a published membership-head that contradicts an earlier head of the
    same node, see `membership head`) are alert MembershipWitnessConflict with labels
    origin (whose head), observer (the witness) and conflict (its time), sent once, firing
    from the moment it was recorded until --over-hold seconds after delivery.

    Example:

    \b
        membership alerts --base-dir /var/lib/droonga --to http://127.0.0.1:9093
        membership alerts --to http://am:9093 --follow --min-duration 60
    """
    from .ops import alerts as _alerts

    min_s, resend_s, hold_s = min_duration, resend, over_hold
    sender = _alerts.Sender(s.db_url, to, observer, min_s, resend_s, over_hold_s=hold_s,
                            # Typer reads the annotation (list[str]); _severity gives pairs
                            severity=dict(cast("list[tuple[str, str]]", severity or ())),
                            generator_url=dashboard_url,
                            exclude=exclude_cause or ())

    def say(line: str) -> None:
        typer.echo(render.printable(line))

    def warn(line: str) -> None:
        typer.echo(f"membership alerts: {render.printable(line)}", err=True)

    if not follow:
        out = _alerts.once(sender)
        shown = [x for x in out.delivered if x.kind != _alerts.RESEND]
        for x in shown[:20]:
            say(_alerts.describe(x))
        if len(shown) > 20:
            say(f"... and {len(shown) - 20} more")
        kinds = [x.kind for x in out.delivered]
        over = kinds.count(_alerts.OVER)
        conflicts = kinds.count(_alerts.CONFLICT)
        say(f"{len(kinds)} alert(s) delivered to {sender.target}: "
            f"{kinds.count(_alerts.FIRING)} firing, {kinds.count(_alerts.RESEND)} re-sent "
            f"(still open), {kinds.count(_alerts.RESOLVED)} resolved"
            + (f", {over} already over (firing for {hold_s:g} s)" if over else "")
            + (f", {conflicts} witness conflict(s) (firing for {hold_s:g} s)"
               if conflicts else ""))
        return
    _stop_on_sigterm()
    warn(f"sending the incidents of {s.sqlite_path or mask_url(s.db_url)} to "
         f"{sender.target} "
         f"(--min-duration {min_s:g}s, --resend {resend_s:g}s, --over-hold {hold_s:g}s); "
         f"Ctrl-C stops")
    try:
        _alerts.follow(sender, interval, say=say, warn=warn)
    except KeyboardInterrupt:
        return


def _version(value: bool) -> None:
    if value:
        _out(f"membership-log {__version__}")
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

