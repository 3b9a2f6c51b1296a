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
from typing import Annotated

import typer
from typer.core import TyperGroup

from . import settings
from .core import timespec
from .core.clock import now_us
from .core.errors import MembershipError
from .core.redact import mask_url
from .core.timespec import iso
from .render import jsondoc
from .render import tables as render
from .version import __version__


class _Group(TyperGroup):
    """Turns a :class:`MembershipError` into one line on stderr and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
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


_APP = {"cls": _Group, "rich_markup_mode": None, "pretty_exceptions_enable": False,
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


def command(target=None, name: str | None = None, reads: tuple = STORE, **kw):
    """Register ``fn(s: Settings, ...)`` as a command that takes every location option
    (SPEC "Where things live") and documents those in ``reads``."""
    target = target or app

    def register(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = list(sig.parameters.values())[1:]  # the first is the resolved Settings

        def run(**kwargs):
            where = {n: kwargs.pop(n) for n in _LOCATION}
            return fn(settings.resolve(**where), **kwargs)

        params = own + [_location_param(n, n in reads) for n in _LOCATION]
        run.__signature__ = sig.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__ = fn.__doc__
        run.__name__ = fn.__name__
        return target.command(name, **kw)(run)

    return register


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


def _out(text: str) -> None:
    typer.echo(text)


# -- set-up and the handler --------------------------------------------------------------------


@command(reads=tuple(_LOCATION))
def init(s: settings.Settings) -> None:
    """Create or upgrade the store, record the catalog, write the live file. Idempotent.

    Every catalog node starts live (Droonga's rule). Without a catalog file, every Serf
    member seen becomes a node. On a central store URL (--db postgresql://...), creates or
    upgrades its schema.

    Example:

    \b
        membership init --base-dir /var/lib/droonga
    """
    from .history import setup as admin

    with _progress("folding the log") as progress:
        result = admin.init(s, progress=progress)
    if s.sqlite_path is None:
        _out(f"store {result['store']}: schema {result['from']} -> {result['to']}")
        return
    _out(f"store {result['store']} at schema {result['to']}, {result['seq']} events")
    _out(f"live file {s.live_file}: {len(result['live'])} live node(s)")
    for warning in result["warnings"]:
        typer.echo(f"warning: {render.printable(warning)}", err=True)


@command(reads=tuple(_LOCATION), context_settings={"ignore_unknown_options": True})
def handle(s: settings.Settings) -> None:
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
        reason = livefile.outage_reason(now.nodes)
        if reason is not None:
            raise MembershipError(f"no live file to print: {reason}")
        sys.stdout.buffer.write(livefile.render_view(now.nodes, s.live_format))
        sys.stdout.buffer.flush()
        return
    if json_out:
        _out(jsondoc.encode(jsondoc.state_doc(now)))
        return
    _out(render.state_table(now, at))


@command()
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


FlapWindow = Annotated[str, typer.Option(
    "--flap-window", metavar="DURATION", help="Flapping: incidents beginning within this "
    "long of each other ('10m', '90s', '1h').")]
FlapThreshold = Annotated[int, typer.Option(
    "--flap-threshold", min=2, help="Flapping: at least this many incidents within the "
    "window.")]
DetectionDelay = Annotated[float | None, typer.Option(
    "--detection-delay", metavar="S", min=0, help="Serf's failure detection delay in "
    "seconds: adds est_down_at and est_duration_s to failed incidents.")]


def _seconds(text: str, option: str) -> float:
    try:
        return timespec.parse_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


@command()
def audit(s: settings.Settings, since: Since = None, until: Until = None,
          node: NodeOpt = None, observer: ObserverOpt = None, json_out: Json = False,
          flap_window: FlapWindow = "10m", flap_threshold: FlapThreshold = 3,
          detection_delay: DetectionDelay = None) -> None:
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

    window = _seconds(flap_window, "--flap-window")
    options = {"flap_window_s": window, "flap_threshold": flap_threshold,
               "detection_delay_s": detection_delay}
    with _store(s) as store:
        if json_out:
            from .history import bulk

            _out(bulk.audit_json(s.db_url, store, since, until, node, observer, **options))
            return
        doc = history.audit(store, since, until, node, observer, **options)
    _out(render.audit_text(doc))


@command()
def timeline(s: settings.Settings, since: Since = None, until: Until = None,
             node: NodeOpt = None, observer: ObserverOpt = None,
             output: Annotated[str, typer.Option(
                 "-o", "--output", metavar="FILE.svg|FILE.html",
                 help="Where to write the picture; the suffix chooses SVG or HTML.")] = ...,
             flap_window: FlapWindow = "10m", flap_threshold: FlapThreshold = 3) -> None:
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
    window = _seconds(flap_window, "--flap-window")
    with _store(s) as store:
        svg = _timeline.picture(history.audit(store, since, until, node, observer,
                                              flap_window_s=window,
                                              flap_threshold=flap_threshold))
    data = svg if output.endswith(".svg") else _timeline.render_html(svg)
    try:
        files.write_atomic(output, data.encode("utf-8"))
    except OSError as e:
        raise MembershipError(f"cannot write {output}: {e.strerror or e}") from None
    _out(f"wrote {output}")


@command()
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


@command(name="import", reads=tuple(_LOCATION))
def import_(s: settings.Settings,
            file: Annotated[str, typer.Argument(
                metavar="[FILE]", help="JSON lines from membership export; - or none: "
                "stdin.")] = "-") -> None:
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
        from .ops import gossip

        gossip.send_user_event(HEAD_EVENT, head_payload(h.observer, h.size, h.root), rpc_addr)
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


@command(reads=STORE + ("live_file", "live_format"))
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


@command(reads=STORE + ("live_file", "live_format"))
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


@command(reads=STORE + ("live_file", "live_format"))
def compact(s: settings.Settings,
            before: Annotated[timespec.Point, typer.Option(
                "--before", parser=_time, metavar="T",
                help=f"Drop the events received before this moment. {_TIME_HELP}")] = ...,
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
        r = retention.compact(s, before, require_shipped, force, progress)
    if not r.dropped:
        _out("nothing to compact: no event kept was received before "
             f"{iso(before.us) if before.us is not None else before.text}")
        return
    _out(f"dropped {r.dropped} event(s); the log now starts after event {r.anchor} "
         f"({iso(r.anchor_at)}); {r.size_before:,} -> {r.size_after:,} bytes")


@command()
def ship(s: settings.Settings,
         to: Annotated[str, typer.Option(
             "--to", metavar="URL", help="The central store (postgresql://...).")] = ...,
         follow: Annotated[bool, typer.Option(
             "--follow", help="Keep shipping as events arrive, until interrupted; an outage "
             "of the central store is retried with backoff.")] = False,
         interval: Annotated[float, typer.Option(
             "--interval", min=0.1, help="With --follow: seconds between looks.")] = 1.0,
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

    signal.signal(signal.SIGTERM, terminate)
    try:
        if follow:
            transfer.follow(s, to, interval, lambda line: typer.echo(
                render.printable(line), err=False), lambda: _progress("shipping"))
            return
        with _progress("shipping") as progress:
            r = transfer.ship(s, to, progress)
        _out(f"shipped {r.copied} event(s) of {render.printable(r.origin)}: the central store "
             f"holds its events up to {r.central_head}")
    except KeyboardInterrupt:
        return


# -- the engine side ---------------------------------------------------------------------------


@command(reads=("base_dir", "live_file"))
def watch(s: settings.Settings, json_out: Json = False,
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


@command(reads=("base_dir", "catalog", "live_file"))
def route(s: settings.Settings,
          dataset: Annotated[str | None, typer.Option(
              "--dataset", metavar="NAME", help="Only this dataset.")] = None,
          json_out: Json = False) -> None:
    """For the engine side: per dataset, the replicas usable now and the live volumes of
    each slice, from the catalog and the live file.

    A replica is usable only if every node holding one of its slices is live (a slice
    holding nested replicas is usable if one of them is). A dataset with no usable replica
    is flagged, and the command exits 1.

    Example:

    \b
        membership route --base-dir /var/lib/droonga
        membership route --dataset Default --json
    """
    from . import engine

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
        _out(jsondoc.encode({"datasets": routes}))
    else:
        _out(render.route_text(routes, stranded))
    if stranded:
        raise MembershipError(f"no usable replica for dataset(s): {', '.join(stranded)}")


@command(target=db_app, name="upgrade", reads=STORE + ("live_file", "live_format"))
def db_upgrade(s: settings.Settings,
               role: Annotated[str | None, typer.Option(
                   "--role", metavar="node|central", help="For a new store: node (one "
                   "node's log) or central (every node's shipped logs). Default: node for "
                   "SQLite, central for PostgreSQL.")] = None) -> None:
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
    with _progress("upgrading") as progress:
        before, after = admin.upgrade_store(s, role, progress)
    if before == after:
        _out(f"store already at schema {after}")
    else:
        _out(f"store upgraded: {before or 'empty'} -> {after}")


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
            observer: ObserverOpt = None) -> None:
    """Prometheus metrics of the log, in the text exposition format (0.0.4).

    Per node: membership_node_up, membership_node_marked_down,
    membership_node_incidents_total{cause}, membership_node_downtime_seconds_total (open
    incidents counted up to now), membership_node_last_change_timestamp_seconds; and
    membership_live_nodes, membership_catalog_nodes, membership_events_total{observer,event},
    membership_last_event_timestamp_seconds{observer}, and
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
        data = metrics_text(store, observer)
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
          client_timeout: Annotated[float, typer.Option(
              "--client-timeout", metavar="S", min=1.0, help="Drop a client that sends "
              "nothing, or takes nothing of its answer, for this many seconds (a request "
              "must arrive whole within 10 s, or this if less).")] = 30.0) -> None:
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
        _serve.serve(s.db_url, listen, observer, client_timeout=client_timeout)
    except KeyboardInterrupt:
        return


def _alert_seconds(text: str, option: str, zero: bool) -> float:
    t = text.strip()
    if zero and t in ("0", "0s", "0.0"):
        return 0.0
    return _seconds(t, option)


@command()
def alerts(s: settings.Settings,
           to: Annotated[str, typer.Option(
               "--to", metavar="URL", help="Alertmanager's base URL (http://HOST:9093); "
               "http://USER:PASSWORD@HOST:9093 for basic auth.")] = ...,
           follow: Annotated[bool, typer.Option(
               "--follow", help="Keep sending as the log changes, until interrupted; an "
               "unreachable Alertmanager is retried for ever.")] = False,
           min_duration: Annotated[str, typer.Option(
               "--min-duration", metavar="S", help="Only incidents that lasted (or have "
               "lasted so far) at least this long, like a rule's for: (seconds, or 90s, "
               "5m).")] = "0",
           resend: Annotated[str, typer.Option(
               "--resend", metavar="S", help="Re-send open alerts this often, well within "
               "Alertmanager's resolve_timeout (5m by default), so they keep firing.")] = "60",
           over_hold: Annotated[str, typer.Option(
               "--over-hold", metavar="S", help="An incident already over when first sent "
               "(while alerts or Alertmanager was down) is posted firing, as its own alert, "
               "until this long after delivery: Alertmanager notifies no alert it never saw "
               "firing. Keep it above your routes' group_wait.")] = "300",
           observer: ObserverOpt = None,
           interval: Annotated[float, typer.Option(
               "--interval", min=0.1, help="With --follow: seconds between looks at the "
               "log.")] = 1.0) -> None:
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

    min_s = _alert_seconds(min_duration, "--min-duration", zero=True)
    resend_s = _alert_seconds(resend, "--resend", zero=False)
    hold_s = _alert_seconds(over_hold, "--over-hold", zero=False)
    sender = _alerts.Sender(s.db_url, to, observer, min_s, resend_s, over_hold_s=hold_s)

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

