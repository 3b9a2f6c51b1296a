"""``membership handle``: the Serf event handler.

Order of work (SPEC "The handler"):

0. no store yet: set one up, as ``init`` would (the slow path, once);
1. record first: the ``SERF_*`` variables and stdin, byte for byte, in one transaction with
   2. the catalog, if its bytes changed, just before the event (and any spooled events
   before both, in arrival order), committed before anything parses them;
3. fold into the projection and rewrite the live file if its bytes change;
4. answer a ``membership-live`` query on stdout;
5. exit 0 once the event is durable. A store that cannot take the event gets it spooled.

Serf runs handlers one at a time with no timeout, so this module imports only the stdlib
(sqlite3, hashlib, marshal) and the pure core; Typer and SQLAlchemy stay off this path.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

from . import journal
from .errors import MembershipError, NotInitialised, SchemaMismatch, StoreError
from .events import QUERY, clean_event_name
from .livefile import render_compact
from .raw import SOURCE_SERF, encode_env, serf_env
from .settings import parse_handler_args

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
    """The ``membership-live`` answer, compact JSON within Serf's 1024 bytes."""
    answer = render_compact({"observer": observer, "seq": seq, "live": live})
    if len(answer.encode()) <= MAX_ANSWER:
        return answer
    import hashlib

    return render_compact({
        "observer": observer[:200],
        "seq": seq,
        "live_count": len(live),
        "live_sha256": hashlib.sha256(live_bytes).hexdigest(),
    })


def _open(settings, item: tuple, warnings: list[str]) -> journal.Journal:
    path = settings.sqlite_path
    if os.path.exists(path):
        try:
            return journal.Journal(path)
        except NotInitialised:
            pass  # a set-up was interrupted: finish it
    from .store import init  # slow path: SQLAlchemy + Alembic, once per store

    warnings.extend(init(settings, observer=item[1], received_us=item[0])["warnings"])
    return journal.Journal(path)


def _append(j: journal.Journal, settings, item: tuple, spooled: list) -> list[int]:
    """In one transaction: spooled events, then a changed catalog, then ``item``."""
    with j.write():
        extra = journal.catalog_item(j, settings.catalog, item[0], item[1])
        return j.append(spooled + ([extra] if extra else []) + [item])


def _record(j: journal.Journal, settings, item: tuple) -> list[int]:
    """Record ``item`` (with any spooled events and a changed catalog); return the seqs
    appended, ``item``'s last."""
    if not os.path.isdir(settings.spool_dir):  # the usual case: nothing was ever spooled
        return _append(j, settings, item, [])
    import fcntl

    from . import spool

    # Serialise intake: files are deleted only after COMMIT, so a second handler must not
    # read them in between.
    with open(os.path.join(settings.spool_dir, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = spool.pending(settings.spool_dir)
        seqs = _append(j, settings, item, [it for _, it in waiting])
        spool.remove([p for p, _ in waiting])
    return seqs


def main(argv: list[str]) -> int:
    received_us = time.time_ns() // 1000
    env = serf_env(os.environ)
    stdin, stdin_problem = _read_stdin()
    is_query = clean_event_name(env.get("SERF_EVENT", "")) == QUERY
    observer = env.get("SERF_SELF_NAME", "")
    item = (received_us, observer, SOURCE_SERF, encode_env(env), stdin)
    warnings = [stdin_problem] if stdin_problem else []

    def say(line: str) -> None:
        # A query's answer is stdout AND stderr: while answering one, say nothing on stderr.
        if not is_query:
            sys.stderr.write(f"membership: {line}\n")

    try:
        settings = parse_handler_args(argv)
    except MembershipError as e:
        say(str(e))
        return 2
    if settings.sqlite_path is None:
        from . import spool

        spool.put(settings.spool_dir, item)
        scheme = settings.db_url.split(":", 1)[0]
        say(f"handle writes a local SQLite store, not {scheme}; event spooled in "
            f"{settings.spool_dir} (ship to a central store with: membership ship)")
        return 2

    try:
        j = _open(settings, item, warnings)
    except (StoreError, OSError, sqlite3.Error) as e:
        return _spooled(settings, item, e, say)
    try:
        try:
            seqs = _record(j, settings, item)
        except (sqlite3.Error, OSError) as e:
            return _spooled(settings, item, e, say)
        seq = seqs[-1]
        # The event is durable from here on: whatever follows, exit 0.
        try:
            state, live_bytes, parse_warnings = journal.catch_up(
                j, settings.live_file, fmt=settings.live_format)
            for s in seqs:  # this event's, and those of a catalog or spool taken in with it
                warnings.extend(parse_warnings.get(s, ()))
        except Exception as e:  # noqa: BLE001 - the event is recorded; report, do not crash
            state, live_bytes = None, None
            warnings.append(f"recorded as event {seq}, but the live file was not updated: {e}")
        if is_query and env.get("SERF_QUERY_NAME") == LIVE_QUERY and state is not None:
            from .project import live_nodes

            sys.stdout.write(live_answer(observer, seq, sorted(live_nodes(state)), live_bytes))
            sys.stdout.flush()
        if warnings:
            try:
                with j.write():
                    j.add_notes(seq, warnings)
            except sqlite3.Error:
                pass
            more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
            say(f"event {seq}: {warnings[0]}{more}")
        return 0
    finally:
        j.close()


def _spooled(settings, item: tuple, error: Exception, say) -> int:
    from . import spool

    try:
        path = spool.put(settings.spool_dir, item)
    except OSError as e:
        say(f"EVENT LOST: store unavailable ({error}) and spool unwritable ({e})")
        return 1
    hint = " (run: membership db upgrade)" if isinstance(error, SchemaMismatch) else ""
    say(f"store unavailable ({error}); event spooled to {path}{hint}")
    return 0
