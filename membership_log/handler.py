"""``membership handle``: the Serf event handler.

Order of work (SPEC "The handler"):

0. no store yet: set one up, as ``init`` would (the slow path, once);
1. record first: the ``SERF_*`` variables and stdin, byte for byte, in one transaction with
   2. the catalog, if its bytes changed, just before the event (and any spooled events
   before both, in arrival order), committed before anything parses them;
3. fold into the derived tables and rewrite the live file if its bytes change;
4. answer a ``membership-live`` query on stdout;
5. exit 0 once the event is durable. Anything that keeps the store from taking the event
   (unwritable, locked, wrong schema, a bug) spools it instead; the next run takes it in.

Serf runs handlers one at a time with no timeout, so this module imports only the stdlib
(sqlite3, marshal, SHA-256) and the pure core; Typer and SQLAlchemy stay off this path. The
catalog file is read before the store's write lock is taken, bounded in size, and only if
it is a regular file: a FIFO or /dev/zero there cannot hang or bloat recording.
"""

from __future__ import annotations

import os
import sys

from .core.catalog import CATALOG_LIMIT
from .core.clock import now_us
from .core.errors import MembershipError, NotInitialised
from .core.events import QUERY, clean_event_name
from .core.raw import SOURCE_SERF, encode_env, serf_env, text_of
from .history import driver
from .history.publish import publisher
from .render.livefile import json_string, render_compact
from .settings import parse_handler_args
from .stores import files
from .stores import node as nodestore
from .stores.protocol import NODE

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Callable

    from .settings import Settings

LIVE_QUERY = "membership-live"
#: Serf drops a query response over 1024 bytes.
MAX_ANSWER = 1024


def _read_stdin() -> tuple[bytes, str | None]:
    stream = sys.stdin
    if stream is None:
        return b"", None
    try:
        if stream.isatty():  # run by hand at a terminal: do not wait for input
            return b"", "stdin is a terminal; recorded as empty"
        return stream.buffer.read(), None
    except (OSError, ValueError) as e:
        return b"", f"stdin unreadable ({e}); recorded as empty"


def live_answer(observer: str, seq: int, live: list[str], live_bytes: bytes) -> str:
    """The ``membership-live`` answer: compact JSON, ASCII, never over Serf's 1024 bytes.

    When the list does not fit, ``live`` gives way to ``live_count`` and ``live_sha256``, and
    the observer's name is shortened until the whole answer fits (its JSON form can be six
    times its length in characters: every non-ASCII character is escaped)."""
    answer = render_compact({"observer": observer, "seq": seq, "live": live})
    if len(answer) <= MAX_ANSWER:
        return answer
    from .core.raw import sha256

    rest = render_compact({"seq": seq, "live_count": len(live),
                           "live_sha256": sha256(live_bytes).hexdigest()})
    room = MAX_ANSWER - len(rest) - len('{"observer":,')
    name = observer
    while len(json_string(name)) > room:
        excess = len(json_string(name)) - room
        name = name[:max(0, len(name) - max(1, excess // 12))]
    return '{"observer":' + json_string(name) + "," + rest[1:]


def _open(settings: Settings, item: tuple, warnings: list[str]) -> nodestore.NodeStore:
    path = settings.sqlite_path
    if os.path.exists(path):
        try:
            store = nodestore.NodeStore(path)
        except NotInitialised:
            pass  # an empty file (a set-up was interrupted before): finish it
        else:
            if settings.store_group is None or store._shared is not None:
                return store  # the hot path: nothing to change
            try:
                _share(settings)  # --store-group given to a store made without one: once
            except (MembershipError, OSError) as e:  # record the event all the same
                warnings.append(f"store not shared with group {settings.store_group}: "
                                f"{getattr(e, 'strerror', None) or e}")
                return store
            store.close()
            return nodestore.NodeStore(path)
    import gc

    gc.enable()  # launch turned the collector off for the hot path; this one is not it
    from .history.setup import init  # slow path: SQLAlchemy + Alembic, once per store

    warnings.extend(init(settings, observer=item[1], received_us=item[0])["warnings"])
    return nodestore.NodeStore(path)


def _share(settings: Settings) -> None:
    """Give the store and spool the group of ``--store-group`` (SPEC "Deployment")."""
    from .stores import access

    gid = access.group_id(settings.store_group)
    access.share_store(settings.sqlite_path, gid)
    access.share_spool(settings.spool_dir, gid)


def _spool_gid(settings: Settings) -> int | None:
    """The group a new spool gets, if any (an unknown group must not lose the event)."""
    if not settings.store_group:
        return None
    from .stores import access

    try:
        return access.group_id(settings.store_group)
    except MembershipError:
        return None


def _record(store: nodestore.NodeStore, settings: Settings, item: tuple, catalog: tuple,
            warnings: list[str]) -> list[int]:
    """In one transaction: spooled events not yet taken in, then a changed catalog, then
    ``item``. Returns the seqs appended, ``item``'s last."""
    spooled: list = []
    bad: list = []
    lock = None
    if os.path.isdir(settings.spool_dir):
        import fcntl

        from .stores import spool

        lock = files.open_lock(os.path.join(settings.spool_dir, ".lock"))
        fcntl.flock(lock, fcntl.LOCK_EX)
        spooled, bad = spool.scan(settings.spool_dir)
    try:
        with store.write():
            names = [os.path.basename(p) for p, _ in spooled]
            done = store.taken_in(names) if names else set()
            fresh = [(n, it) for n, (_, it) in zip(names, spooled, strict=True)
                     if n not in done]
            extra = nodestore.catalog_item(store, catalog[0], item[0], item[1], catalog[1])
            if extra is not None and catalog[1]:
                warnings.append(catalog[1])
            seqs = store.append([it for _, it in fresh] + ([extra] if extra else []) + [item])
            if fresh:
                # The files' identity goes in with their events, so a crash before they are
                # deleted cannot take them in twice.
                store.record_intake([(n, s) for (n, _), s in zip(fresh, seqs, strict=False)])
        if spooled or bad:
            _tidy_spool(settings.spool_dir, [p for p, _ in spooled], bad, warnings)
        return seqs
    finally:
        if lock is not None:
            os.close(lock)


def _tidy_spool(directory: str, taken: list[str], bad: list[str], warnings: list[str]) -> None:
    """After the commit: delete the spool files taken in, move the unreadable ones aside.

    Never raises: the event is durable by now, and an exception would make the caller spool
    it a second time. A file that cannot be deleted is harmless (its name is recorded in
    ``spool_intake``, so no run takes it in twice). An unreadable file is moved to
    ``unreadable/`` whether or not anything else was spooled: left in place it would be
    skipped by every run, in silence."""
    from .stores import spool

    try:
        spool.remove(taken)
    except OSError as e:
        warnings.append(f"spool files taken in could not be deleted ({e.strerror or e}); "
                        f"they will not be taken in again")
    if not bad:
        return
    names = ", ".join(os.path.basename(p) for p in bad[:3]) + (
        f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
    target = os.path.join(directory, spool.UNREADABLE)
    try:
        kept = spool.quarantine(directory, bad)
    except OSError as e:
        warnings.append(f"{len(bad)} spool file(s) cannot be read ({names}) and could not be "
                        f"moved to {target}: {e.strerror or e}")
        return
    if kept:
        warnings.append(f"{len(kept)} spool file(s) cannot be read ({names}); moved to "
                        f"{target} for inspection")


def main(argv: list[str]) -> int:
    received_us = now_us()
    env = serf_env(os.environ)
    stdin, stdin_problem = _read_stdin()
    is_query = clean_event_name(env.get("SERF_EVENT", "")) == QUERY
    observer = text_of(env.get("SERF_SELF_NAME", ""))
    item = (received_us, observer, SOURCE_SERF, encode_env(env), stdin)
    warnings = [stdin_problem] if stdin_problem else []

    def say(line: str) -> None:
        # A query's answer is stdout AND stderr: while answering one, say nothing on stderr.
        if not is_query:
            sys.stderr.write(f"membership: {text_of(line)}\n")

    try:
        settings = parse_handler_args(argv)
    except MembershipError as e:
        say(str(e))
        return 2
    if settings.sqlite_path is None:
        from .stores import spool

        spool.put(settings.spool_dir, item, _spool_gid(settings))
        scheme = settings.db_url.split(":", 1)[0]
        say(f"handle writes a local SQLite store, not {scheme}; event spooled in "
            f"{settings.spool_dir} (ship to a central store with: membership ship)")
        return 2

    # Read before any lock: a slow or hostile file cannot hold the store's write lock.
    catalog = files.read_regular(settings.catalog, CATALOG_LIMIT)
    try:
        store = _open(settings, item, warnings)
    except Exception as e:  # noqa: BLE001 - whatever keeps the store from taking it: spool
        return _spooled(settings, item, e, say)
    try:
        try:
            seqs = _record(store, settings, item, catalog, warnings)
        except Exception as e:  # noqa: BLE001
            return _spooled(settings, item, e, say)
        seq = seqs[-1]
        # The event is durable from here on: whatever follows, exit 0.
        try:
            state, live_bytes, parse_warnings = driver.catch_up(
                store, NODE, publisher(settings.live_file, settings.live_format))
            for s in seqs:  # this event's, and those of a catalog or spool taken in with it
                warnings.extend(parse_warnings.get(s, ()))
        except Exception as e:  # noqa: BLE001 - the event is recorded; report, do not crash
            state, live_bytes = None, None
            warnings.append(f"recorded as event {seq}, but the live file was not updated: {e}")
        if (is_query and env.get("SERF_QUERY_NAME") == LIVE_QUERY and state is not None
                and live_bytes is not None):  # both come from catch_up, or neither
            from .core.fold import live_nodes

            sys.stdout.write(live_answer(observer, seq, sorted(live_nodes(state)), live_bytes))
            sys.stdout.flush()
        if warnings:
            try:
                with store.write():
                    store.add_notes(seq, warnings)
            except MembershipError:
                pass
            more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
            say(f"event {seq}: {warnings[0]}{more}")
        return 0
    finally:
        store.close()


def _spooled(settings: Settings, item: tuple, error: Exception,
             say: Callable[[str], None]) -> int:
    from .stores import spool

    try:
        path = spool.put(settings.spool_dir, item, _spool_gid(settings))
    except Exception as e:  # noqa: BLE001
        say(f"EVENT LOST: store unavailable ({error}) and spool unwritable ({e})")
        return 1
    why = str(error) if isinstance(error, MembershipError) else \
        f"{type(error).__name__}: {error}"
    say(f"store unavailable ({why.splitlines()[0] if why else type(error).__name__}); "
        f"event spooled to {path}")
    return 0
