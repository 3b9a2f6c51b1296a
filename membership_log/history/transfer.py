"""Moving history between stores: ``import`` (JSON lines into a node store, through the
handler's own append path) and ``ship`` (a node store's new events into the central store,
whose derived tables are kept in the same transactions by the one fold driver).

``export`` lives with the other reads in :mod:`membership_log.history.api`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from ..core.errors import MembershipError, StoreError
from ..core.outage import Backoff, Outage
from ..core.raw import SOURCE_SERF, SOURCES, RawEvent, decode_env, encode_env, serf_env, text_of
from ..core.records import record
from ..core.redact import mask_url
from ..core.timespec import MAX_US, MIN_US, to_us
from ..settings import Settings
from ..stores.node import NodeStore
from ..stores.protocol import NODE
from ..stores.setup import open_node_store
from . import driver, witness
from .publish import publisher

if TYPE_CHECKING:
    from ..stores.central import CentralStore

#: A progress callback: ``progress(done, total)`` (total None: an import does not know it).
Progress = Callable[[int, int | None], None]

#: What an import did: events appended, the seqs they got, and the variables dropped from
#: their env (name -> how many lines carried it) because the handler never records them.
Imported = record("Imported", "appended first last dropped")

#: What a ship did: the node's name, events copied, the central head of its log after it.
Shipped = record("Shipped", "origin copied central_head")

IMPORT_BATCH = 10_000
SHIP_BATCH = 5_000


_DAYS: dict[str, int] = {}


def _received(value: object, where: str) -> int:
    # The form export writes, YYYY-MM-DDTHH:MM:SS.ffffffZ, read without datetime (a third
    # of an import's parsing time otherwise); anything else goes the general way.
    if (isinstance(value, str) and len(value) == 27 and value[10] == "T" and value[19] == "."
            and value[26] == "Z" and value.isascii() and value[11:19].replace(":", "").isdigit()
            and value[20:26].isdigit() and value[13] == value[16] == ":"):
        day = _DAYS.get(value[:10])
        if day is None:
            day = _general_received(value[:10] + "T00:00:00.000000Z", where)
            if len(_DAYS) > 4096:
                _DAYS.clear()
            _DAYS[value[:10]] = day
        h, m, sec = int(value[11:13]), int(value[14:16]), int(value[17:19])
        if h < 24 and m < 60 and sec < 60:
            return day + ((h * 60 + m) * 60 + sec) * 1_000_000 + int(value[20:26])
    return _general_received(value, where)


def _general_received(value: object, where: str) -> int:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise MembershipError(f"{where}: received must be ISO 8601 UTC ending in Z, like "
                              f"2026-11-25T03:12:00.123456Z")
    try:
        us = to_us(datetime.fromisoformat(value[:-1] + "+00:00"))
    except (ValueError, OverflowError):
        raise MembershipError(f"{where}: received {value[:40]!r} is not a time") from None
    if not MIN_US <= us <= MAX_US:
        raise MembershipError(f"{where}: received {value[:40]!r} is out of range")
    return us


def _text(value: object, what: str, where: str) -> str:
    """A string of the log: any text, with undecodable bytes as the lone surrogates
    U+DC80..U+DCFF that ``surrogateescape`` maps back to them; any other lone surrogate
    stands for no byte at all, and is refused."""
    if not isinstance(value, str):
        raise MembershipError(f"{where}: {what} must be a string")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        bad = value[e.start]
        raise MembershipError(f"{where}: {what} holds U+{ord(bad):04X}, a lone surrogate that "
                              f"stands for no byte") from None
    return value


def parse_line(line: bytes | str, where: str) -> tuple:
    """One exported event as an append item ``(received_us, observer, source, env blob,
    stdin)`` and the names of the variables dropped from its env; a one-line
    MembershipError naming ``where`` if it is not an event.

    The env keeps exactly what the handler would have kept (SPEC "The handler", step 1):
    ``SERF_*`` variables but the serf CLI's own ``SERF_RPC_*`` on a Serf event, nothing on a
    catalog or anchor record. Anything else (an export made before ``SERF_RPC_*`` was
    dropped, a hand-edited line carrying ``AWS_SECRET_ACCESS_KEY``) is dropped here, never
    stored, never shipped."""
    try:
        return _parse_line(line, where)
    except MembershipError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the line holds: its number, one line
        raise MembershipError(f"{where}: not an exported event ({type(e).__name__}: "
                              f"{str(e)[:80]})") from None


def _parse_line(line: bytes | str, where: str) -> tuple:
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise MembershipError(f"{where}: not JSON ({str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise MembershipError(f"{where}: not a JSON object")
    missing = [k for k in ("received", "observer", "source", "env", "stdin_b64")
               if k not in doc]
    if missing:
        raise MembershipError(f"{where}: missing {', '.join(missing)}")
    source, env = doc["source"], doc["env"]
    if source not in SOURCES:
        raise MembershipError(f"{where}: source must be {', '.join(SOURCES)}, not "
                              f"{str(source)[:40]!r}")
    observer = _text(doc["observer"], "observer", where)
    if not isinstance(env, dict):
        raise MembershipError(f"{where}: env must be an object of variable names to strings")
    key = (source, tuple(env.items()))
    known = _ENVS.get(key)
    if known is None:  # most lines of a log carry one of a few environments
        for k, v in env.items():
            _text(k, "an env name", where)
            _text(v, f"env {k[:40]!r}", where)
            if not k or "=" in k or "\0" in k or "\0" in v:
                raise MembershipError(f"{where}: env must be an object of variable names to "
                                      f"strings")
        kept = serf_env(env) if source == SOURCE_SERF else {}
        known = (encode_env(kept), tuple(sorted(k for k in env if k not in kept)))
        if len(_ENVS) >= 4096:
            _ENVS.clear()
        _ENVS[key] = known
    try:
        stdin = base64.b64decode(doc["stdin_b64"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise MembershipError(f"{where}: stdin_b64 is not base64") from None
    return (_received(doc["received"], where), text_of(observer), source, known[0], stdin), \
        known[1]


_ENVS: dict[tuple, tuple] = {}


def import_(settings: Settings, lines: Iterable[bytes | str],
            progress: Progress | None = None) -> Imported:
    """Append exported events (an iterable of lines) to the node store ``settings`` names, in
    order, through the handler's append path, then bring everything derived (the live file
    included) up to date. One transaction: a bad line stops the import with its line number
    and nothing of it is kept; a store this import created is removed again, so a failed
    import into a new base dir leaves neither a store nor a live file behind. The store
    computes the chain; the input's seq and hash are not trusted."""
    path = settings.sqlite_path
    created = path is not None and (not os.path.exists(path) or os.path.getsize(path) == 0)
    if created:
        from .setup import init

        init(settings, record_catalog=False)
    store = open_node_store(settings.db_url, "import")
    try:
        first = last = None
        appended = 0
        dropped: dict[str, int] = {}
        with store.write():
            batch: list = []
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                item, gone = parse_line(line, f"line {n}")
                batch.append(item)
                for name in gone:
                    dropped[name] = dropped.get(name, 0) + 1
                if len(batch) >= IMPORT_BATCH:
                    first, last = _append_and_fold(store, batch, first)
                    appended += len(batch)
                    batch = []
                    if progress is not None:
                        progress(appended, None)
            if batch:
                first, last = _append_and_fold(store, batch, first)
                appended += len(batch)
        driver.catch_up(store, NODE, publisher(settings.live_file, settings.live_format),
                        progress=progress)
        return Imported(appended, first, last, dropped)
    except BaseException:
        if created and store.head_seq(NODE) == 0:
            store.close()
            from ..stores.setup import remove_empty_node_store

            remove_empty_node_store(path)
        raise
    finally:
        store.close()


def _append_and_fold(store: NodeStore, batch: list, first: int | None) -> tuple[int, int]:
    """Append a batch and fold it at once (same transaction): the events are in hand, so
    they are not read back."""
    raws = store.append_raws(batch)
    driver.advance(store, NODE, raws)
    return first or raws[0].seq, raws[-1].seq


def _rows_to_raws(rows: Iterable[tuple]) -> list[RawEvent]:
    return [RawEvent(r[0], r[1], r[2], r[3], decode_env(bytes(r[4])), bytes(r[5]), bytes(r[6]))
            for r in rows]


def ship(settings: Settings, to: str, progress: Progress | None = None,
         batch: int = SHIP_BATCH) -> Shipped:
    """Copy this node's new events to the central store at ``to``, batch by batch; each
    batch and the derived rows it gives are one transaction.

    Idempotent and resumable: the central store's last event of this node says where to go
    on, and a second shipper of the same node waits for the first (then finds its events
    there). The central copy must continue the local hash chain, or nothing is shipped; and
    the events must not contradict a head of this log that another node witnessed and
    shipped (:func:`membership_log.history.witness.check_shipment`)."""
    with _both_ends(settings, to) as (local, origin, central):
        # What this run copies: the log as it stands now. Handlers keep appending
        # meanwhile (and another shipper may take the copy further than this run would),
        # so every check of "does the central copy continue the local log?" reads the
        # local head afresh: a stale one made a copy that had moved past it look like a
        # different log (ship --follow then exited after an outage).
        target, _ = local.head(NODE)
        copied = 0
        total = None
        while True:
            with central.write():
                central.lock_origin(origin)
                c_head, c_hash = central.head(origin)
                _check_continues(local, origin, c_head, c_hash, local.head(NODE)[0])
                if total is None:
                    total = max(0, target - c_head)
                    if progress is not None:
                        progress(0, total)
                if c_head >= target:
                    return Shipped(origin, copied, c_head)
                rows = local.stored_rows(c_head, min(batch, target - c_head))
                if not rows:
                    return Shipped(origin, copied, c_head)
                # Heads other nodes witnessed of this log hold what it may add.
                witness.check_shipment(central, origin, c_head, rows)
                central.append_rows(origin, rows)
                driver.advance(central, origin, _rows_to_raws(rows))
            copied += len(rows)
            if progress is not None:
                progress(copied, total)


@contextmanager
def _both_ends(settings: Settings, to: str) -> Iterator[tuple[NodeStore, str, CentralStore]]:
    """This node's store, the observer name its log is shipped as, and the central store
    at ``to``; both closed afterwards."""
    from ..stores.central import CentralStore

    local = open_node_store(settings.db_url, "ship")
    try:
        origin = local.origin_name()
        if origin is None:
            raise MembershipError(f"store {settings.sqlite_path} has no event with an observer "
                                  f"yet: nothing identifies the node to ship as")
        central = CentralStore(to)
        try:
            yield local, origin, central
        finally:
            central.close()
    finally:
        local.close()


def _check_continues(local: NodeStore, origin: str, c_head: int, c_hash: bytes | None,
                     local_head: int) -> None:
    if c_head > local_head:
        raise MembershipError(f"the central store holds {c_head} events of {origin}, the local log "
                         f"only {local_head}: they are not the same log")
    anchor = local.anchor(NODE)
    if anchor is not None and c_head < anchor.seq:
        raise MembershipError(f"events {c_head + 1}..{anchor.seq} of {origin} were compacted here "
                         f"before they were shipped; the central store cannot have them (ship "
                         f"before compacting: membership compact --require-shipped URL)")
    if c_head:
        mine = anchor.hash if anchor is not None and anchor.seq == c_head else None
        if mine is None:
            rows = local.hashes(NODE, c_head, c_head)
            mine = bytes(rows[0][1]) if rows else None
        if mine != c_hash:
            raise MembershipError(f"the central copy of {origin} diverges from the local log "
                                  f"at event {c_head}; refusing to ship")


def follow(settings: Settings, to: str, interval: float, say: Callable[[str], None],
           progress_factory: Callable[[], AbstractContextManager] | None = None,
           sleep: Callable[[float], None] = time.sleep, max_backoff: float = 30.0,
           clock: Callable[[], float] = time.monotonic) -> None:
    """``ship --follow``: ship, wait ``interval``, ship again, until interrupted. An outage
    of the central store (or of this store) is reported once when it begins and once when it
    ends, with how long it lasted, and retried with backoff (doubling up to ``max_backoff``
    seconds), never fatal. A URL that can never work (malformed, an unknown kind of
    database, a driver that is not installed) is not an outage: it is refused at once, in
    one line."""
    open_node_store(settings.db_url, "ship").close()
    from ..stores.connect import engine_for

    engine_for(to).dispose()  # parses the URL and loads the driver; connects to nothing
    backoff = Backoff(interval, max(interval, max_backoff))
    outage = Outage(say, clock, began="{error}; retrying with backoff until it answers",
                    ended="{url} reachable again after {lasted} ({failures} failed "
                          "attempts); shipping resumed", url=mask_url(to))
    while True:
        try:
            if progress_factory is not None:
                with progress_factory() as progress:
                    r = ship(settings, to, progress)
            else:
                r = ship(settings, to)
        except StoreError as e:
            outage.failed(e)
            sleep(backoff.next())
            continue
        outage.succeeded()
        backoff.reset()
        if r.copied:
            say(f"shipped {r.copied} event(s) of {r.origin}: the central store holds its "
                f"events up to {r.central_head}")
        sleep(interval)


def shipped(settings: Settings, to: str) -> tuple[str, int, int]:
    """How far the central store at ``to`` holds this node's log: ``(origin, central head,
    local head)``, checked as :func:`ship` checks it before copying (a MembershipError if
    the central copy does not continue the local log)."""
    with _both_ends(settings, to) as (local, origin, central):
        with central.read():
            c_head, c_hash = central.head(origin)
        local_head = local.head(NODE)[0]
        _check_continues(local, origin, c_head, c_hash, local_head)
        return origin, c_head, local_head
