"""``membership doctor``: the set-up checked in one pass, one record per point.

Each check returns :data:`Check` records (``name``, ``status``: ``ok``, ``warning`` or
``failed``, ``detail``: one line); the CLI prints them (``ok: ...``, ``warning: ...``,
``FAILED: ...``) or their JSON, and exits 1 if any failed. Nothing here writes: the store is
opened for reading, Serf is asked through its CLI (:mod:`.serfagent`), the central store is
only read. The comparisons are the product's own: the live file is held to the fold by
:func:`membership_log.history.integrity.check_live_file`, the central copy to the local log
by :func:`membership_log.history.transfer.shipped`.

The points (SPEC "Deployment"): the store (role, schema revision, mode, owner, who may read
it), the catalog, the live file (its format, whether it matches the log), the spool, the
local Serf agent (and its handler line, in its config file if one is given), the central
store if one is named.
"""

from __future__ import annotations

import os
import shlex
import stat

from ..core.catalog import CATALOG_LIMIT
from ..core.catalog import parse as parse_catalog
from ..core.errors import MembershipError
from ..core.records import record
from ..core.redact import mask_url
from ..settings import LIVE_FORMATS, STORE_GROUP, Settings, parse_handler_args
from ..stores import access, files
from ..stores.node import NodeStore, catalog_item
from ..stores.protocol import NODE
from . import serfagent

OK, WARNING, FAILED = "ok", "warning", "failed"

#: One point of the check-up.
Check = record("Check", "name status detail")

#: Serf's event filters (``cmd/serf/command/agent/event_handler.go``): the text before the
#: first ``=`` of a handler line must be a comma-separated list of these (``user:NAME`` and
#: ``query:NAME`` too), or the agent refuses to start.
SERF_EVENTS = ("*", "member-join", "member-leave", "member-failed", "member-update",
               "member-reap", "user", "query")


def run(settings: Settings, rpc_addr: str | None = None, serf_config: str | None = None,
        central: str | None = None) -> list[Check]:
    """Every point, in order. ``serf_config``: the agent's JSON config file, whose
    ``event_handlers`` are checked; ``central``: the central store's URL."""
    from ..history.api import open_store

    checks = store_checks(settings)
    store = None
    if not any(c.status == FAILED for c in checks):
        try:
            store = open_store(settings.db_url)
        except MembershipError:
            store = None  # said above
    # A node's set-up (a SQLite store, even one that cannot be opened) has a catalog, a live
    # file, a spool and an agent; a central store's host need not run Serf at all.
    node = store.role == "node" if store is not None else settings.sqlite_path is not None
    try:
        if node:
            checks.append(catalog_check(settings,
                                        store if isinstance(store, NodeStore) else None))
        if isinstance(store, NodeStore):  # store is not None and node
            checks.append(live_file_check(settings, store))
            checks.append(spool_check(settings, store))
    finally:
        if store is not None:
            store.close()
    if node or rpc_addr is not None or serf_config is not None:
        checks.extend(serf_checks(settings, rpc_addr))
    if serf_config is not None:
        checks.extend(serf_config_checks(settings, serf_config))
    if central is not None:
        checks.append(central_check(settings, central))
    return checks


# -- the store ---------------------------------------------------------------------------------


def _readers(st: os.stat_result) -> str:
    """Who may read a file, by its mode bits: its owner, its group's members, everyone."""
    import grp
    import pwd

    owner, group = access.owner_of(st)
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IROTH:
        return "everyone (mode allows others to read it)"
    if not mode & stat.S_IRGRP:
        return f"its owner {owner} only"
    members = set()
    try:
        members.update(grp.getgrgid(st.st_gid).gr_mem)
    except KeyError:
        pass
    members.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == st.st_gid)
    members.discard(owner)
    shown = ", ".join(sorted(members)[:8]) + (" ..." if len(members) > 8 else "")
    return f"{owner} and group {group} ({shown or 'no members'})"


def store_checks(settings: Settings) -> list[Check]:
    """The store: opens for this user, role, schema revision, events; for a SQLite store its
    mode, owner and who may read it, and whether a group reader can open it."""
    from ..history.api import open_store

    path = settings.sqlite_path
    label = path or mask_url(settings.db_url)
    try:
        store = open_store(settings.db_url)
    except MembershipError as e:
        return [Check("store", FAILED, str(e))]
    try:
        from ..version import SCHEMA_REVISION

        logs = store.origins()
        events = sum(store.head_seq(o) for o in logs)
        what = (f"{label}: {store.role} store at schema {SCHEMA_REVISION}, {events} event(s)"
                + ("" if store.role == "node" else f" in {len(logs)} node log(s)"))
    finally:
        store.close()
    if path is None:
        return [Check("store", OK, what)]
    st = os.stat(path)
    owner, group = access.owner_of(st)
    detail = (f"{what}; mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}, group {group}; "
              f"readable by {_readers(st)}")
    if st.st_mode & stat.S_IROTH:
        return [Check("store", WARNING, detail + ": the log may name hosts and payloads "
                      "(chmod o-r it, or init --store-group GROUP)")]
    checks = [Check("store", OK, detail)]
    if files.is_shared(st):
        checks.extend(_group_readers(path, st, group))
    return checks


def _group_readers(path: str, st: os.stat_result, group: str) -> list[Check]:
    """What a member of the store's group needs besides the database: -wal and -shm of the
    same group and mode, and a way through every directory above."""
    problems = []
    for suffix in access.WAL_SUFFIXES:
        try:
            side = os.stat(path + suffix)
        except FileNotFoundError:
            problems.append(f"{path + suffix} is missing (group readers cannot open the store "
                            f"until a writer closes it: membership init --store-group {group})")
            continue
        if side.st_gid != st.st_gid or not side.st_mode & stat.S_IRGRP:
            problems.append(f"{path + suffix} is not readable by group {group} "
                            f"({access.describe(side)}; membership init --store-group "
                            f"{group} fixes it)")
    d = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            ds = os.stat(d)
        except OSError:
            break
        if not (ds.st_mode & stat.S_IXOTH or (ds.st_mode & stat.S_IXGRP
                                              and ds.st_gid == st.st_gid)):
            problems.append(f"group {group} cannot reach it: {d} is {access.describe(ds)} "
                            f"(chmod o+x {d})")
            break
        if d == os.sep:
            break
        d = os.path.dirname(d)
    if problems:
        return [Check("store readers", WARNING, "; ".join(problems))]
    return [Check("store readers", OK, f"members of group {group} can open it: {path}-wal "
                  f"and -shm are there, readable by the group, every directory above "
                  f"passable")]


# -- the catalog, the live file, the spool -----------------------------------------------------


def catalog_check(settings: Settings, store: NodeStore | None) -> Check:
    """The catalog file: usable, its nodes and cluster id, and whether the log has it in
    force (a changed file is recorded by the next event)."""
    from ..core import droonga

    data, problem = files.read_regular(settings.catalog, CATALOG_LIMIT)
    if data is None:
        if problem is not None:
            return Check("catalog", FAILED, problem)
        return Check("catalog", WARNING, f"no catalog at {settings.catalog}: every Serf member "
                     f"seen is a node, and no Droonga catalog decides which are")
    catalog, warnings = parse_catalog(data)
    if catalog is None:
        return Check("catalog", FAILED, f"{settings.catalog} is not usable: "
                     f"{'; '.join(warnings)} (the log keeps the last good one in force)")
    doc, _ = _json(data)
    cid = droonga.cluster_id(doc)
    detail = (f"{settings.catalog}: version {catalog.version}, {len(catalog.nodes)} node(s)"
              + (f", cluster id {cid}" if cid else ""))
    if store is not None and catalog_item(store, data, 0, "") is not None:
        return Check("catalog", WARNING, f"{detail}; not the catalog the log has in force: "
                     f"the next handler run (or membership init) records it")
    return Check("catalog", OK, detail + ("; in force in the log" if store is not None else ""))


def _json(data: bytes) -> tuple[object, str | None]:
    import json

    try:
        return json.loads(data), None
    except (ValueError, RecursionError) as e:
        return None, str(e)


def live_file_check(settings: Settings, store: NodeStore) -> Check:
    """The live file in its configured format, held to the fold at the head by verify's own
    comparison; a file that is the fold in another format says which."""
    from ..history import driver
    from ..history.integrity import check_live_file
    from ..render import livefile

    head = store.head_seq(NODE)
    state = driver.start(store, NODE, head)
    r = check_live_file(store, NODE, state.copy(), head, settings.live_file,
                        settings.live_format)
    fmt = f"format {settings.live_format}"
    if r.problems:
        data = files.read_bytes(settings.live_file)
        for other in LIVE_FORMATS:
            if other != settings.live_format and data == livefile.render_view(state.nodes,
                                                                             other):
                return Check("live file", FAILED, f"{settings.live_file} is the log's live "
                             f"file in format {other}, but --live-format says "
                             f"{settings.live_format}")
        return Check("live file", FAILED, f"{fmt}: {r.problems[0].what}")
    live = sum(1 for v in state.nodes.values() if v.live and v.in_catalog)
    known = sum(1 for v in state.nodes.values() if v.in_catalog)
    line = r.ok[0] if r.ok else (r.notes[0] if r.notes else settings.live_file)
    return Check("live file", OK, f"{fmt}, {live} of {known} node(s) live: {line}")


def spool_check(settings: Settings, store: NodeStore) -> Check:
    """Events waiting in the spool (a warning: the next handler run takes them in) and files
    nobody can take in (a failure: an operator must look)."""
    from ..history.integrity import spool_state

    d = settings.spool_dir
    try:
        waiting, taken, unusable = spool_state(d, store)
    except OSError as e:
        return Check("spool", WARNING, f"cannot read the spool {d} as this user: "
                     f"{e.strerror or e} (membership init --store-group GROUP, as the store's "
                     f"owner, makes it readable by GROUP)")
    if unusable:
        names = ", ".join(os.path.relpath(p, d) for p in unusable[:3])
        return Check("spool", FAILED, f"{len(unusable)} file(s) in {d} cannot be read "
                     f"({names}{' ...' if len(unusable) > 3 else ''}): inspect them, then "
                     f"remove them; {len(waiting)} event(s) waiting")
    if waiting:
        return Check("spool", WARNING, f"{len(waiting)} event(s) wait in {d}: the store could "
                     f"not take them; the next handler run that can write it takes them in")
    if not os.path.isdir(d):
        return Check("spool", OK, f"no spool at {d}: nothing was ever spooled")
    mode = stat.S_IMODE(os.stat(d).st_mode)
    return Check("spool", OK, f"{d}: empty (mode {mode:04o})"
                 + (f"; {len(taken)} file(s) taken in already" if taken else ""))


# -- Serf ----------------------------------------------------------------------------------


def _handler_of(script: str) -> list[str] | None:
    """The options of a ``membership handle`` in a handler script, or None if the script
    runs no ``membership handle``."""
    try:
        words = shlex.split(script)
    except ValueError:
        return None
    for i, w in enumerate(words[:-1]):
        if words[i + 1] != "handle":
            continue
        if os.path.basename(w) == "membership" or (w == "membership_log" and i > 0
                                                   and words[i - 1] == "-m"):
            return words[i + 2:]
    return None


def _same_store(settings: Settings, options: list[str]) -> tuple[bool, str]:
    """Whether a handler line with ``options`` records into this store, and where it does."""
    theirs = parse_handler_args(options)
    return theirs.db_url == settings.db_url, theirs.sqlite_path or mask_url(theirs.db_url)


def serf_checks(settings: Settings, rpc_addr: str | None) -> list[Check]:
    """The local agent answers (its members), and runs ``membership handle`` for this
    store."""
    where = serfagent.rpc_address(rpc_addr)
    try:
        members = serfagent.members(rpc_addr)
        info = serfagent.info(rpc_addr)
    except serfagent.NotInstalled as e:
        return [Check("serf", WARNING, f"{e}: cannot check the agent at {where}")]
    except serfagent.SerfError as e:
        return [Check("serf", FAILED, f"{e} (is the agent running? --rpc-addr or "
                      f"SERF_RPC_ADDR names another address)")]
    by_status: dict[str, int] = {}
    for m in members:
        by_status[str(m.get("status"))] = by_status.get(str(m.get("status")), 0) + 1
    name = (info.get("agent") or {}).get("name") or "?"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
    checks = [Check("serf", OK, f"agent {name} at {where} answers: {len(members)} member(s)"
                    + (f" ({counts})" if counts else ""))]
    handlers = info.get("event_handlers") or {}
    ours = [(f, script, _handler_of(script)) for f, script in handlers.items()
            if isinstance(script, str)]
    found = [(f, script, opts) for f, script, opts in ours if opts is not None]
    if not found:
        checks.append(Check("serf handler", FAILED, f"agent {name} runs no membership handle "
                            f"(its event handlers: {', '.join(s for _, s, _ in ours) or 'none'})"
                            f": nothing is recorded"))
        return checks
    for _, script, opts in found:
        try:
            same, theirs = _same_store(settings, opts)
        except MembershipError as e:
            checks.append(Check("serf handler", FAILED, f"{script!r}: {e}"))
            continue
        if same:
            checks.append(Check("serf handler", OK, f"agent {name} runs {script!r}, which "
                                f"records into this store"))
            return checks
    checks.append(Check("serf handler", FAILED, f"agent {name} runs "
                        f"{', '.join(repr(s) for _, s, _ in found)}, which records into "
                        f"{theirs}, not {settings.sqlite_path or mask_url(settings.db_url)}"))
    return checks


def _filter_problem(text: str) -> str | None:
    """Why Serf refuses the event filter ``text`` (before a handler line's first ``=``)."""
    for item in text.split(","):
        kind, _, name = item.partition(":")
        if kind not in SERF_EVENTS or (name and kind not in ("user", "query")):
            return f"{item!r} is not a Serf event"
    return None


def serf_config_checks(settings: Settings, path: str) -> list[Check]:
    """The agent's config file: an ``event_handlers`` line that runs ``membership handle``
    for this store, with no ``=`` trap (Serf reads the text before the first ``=`` as an
    event filter: ``VAR=x membership handle`` or ``--base-dir=DIR`` break the line)."""
    data, problem = files.read_regular(path, CATALOG_LIMIT)
    if data is None:
        return [Check("serf config", FAILED, problem or f"no Serf config at {path}")]
    doc, why = _json(data)
    if not isinstance(doc, dict):
        return [Check("serf config", FAILED, f"{path} is not a JSON object"
                      + (f": {why}" if why else ""))]
    lines = doc.get("event_handlers") or []
    if isinstance(lines, str):
        lines = [lines]
    if not lines:
        return [Check("serf config", FAILED, f"{path} has no event_handlers: Serf runs no "
                      f"handler, so nothing is recorded")]
    checks = []
    handled = False
    for line in lines:
        if not isinstance(line, str):
            continue
        filt, eq, script = line.partition("=")
        if not eq:
            filt, script = "*", line
        if _handler_of(script) is None and _handler_of(line) is None:
            continue
        if _handler_of(script) is None:  # "membership handle --base-dir=/x": split at "="
            checks.append(Check("serf config", FAILED, f"{path}: {line!r}: Serf reads "
                                f"{filt!r} as an event filter (the text before the first "
                                f"'=') and runs {script!r}: write options as '--opt value', "
                                f"and no VAR=x before the command"))
            continue
        bad = _filter_problem(filt)
        if bad is not None:
            checks.append(Check("serf config", FAILED, f"{path}: {line!r}: Serf reads "
                                f"{filt!r} as an event filter ({bad}) and refuses to start"))
            continue
        handled = True
        opts = _handler_of(script) or []
        try:
            same, theirs = _same_store(settings, opts)
        except MembershipError as e:
            checks.append(Check("serf config", FAILED, f"{path}: {line!r}: {e}"))
            continue
        if not same:
            checks.append(Check("serf config", FAILED, f"{path}: {line!r} records into "
                                f"{theirs}, not this store"))
            continue
        notes = []
        if filt != "*":
            notes.append(f"only {filt} events reach it (the log needs them all)")
        if settings.sqlite_path and os.path.exists(settings.sqlite_path) and \
                files.is_shared(os.stat(settings.sqlite_path)) and STORE_GROUP[0] not in opts:
            notes.append(f"no {STORE_GROUP[0]}: the store is group-readable, but spool files "
                         f"the handler writes will not be")
        checks.append(Check("serf config", WARNING if notes else OK,
                            f"{path}: {line!r} records into this store"
                            + (f"; {'; '.join(notes)}" if notes else "")))
    if not handled and not checks:
        checks.append(Check("serf config", FAILED, f"{path}: no event handler runs "
                            f"membership handle (event_handlers: {lines!r})"))
    return checks


# -- the central store ---------------------------------------------------------------------


def central_check(settings: Settings, url: str) -> Check:
    """The central store answers, is at this release's schema, and holds this node's log:
    how far, checked as ship checks it."""
    from ..history import transfer
    from ..version import SCHEMA_REVISION

    shown = mask_url(url)
    try:
        origin, central_head, local_head = transfer.shipped(settings, url)
    except MembershipError as e:
        return Check("central", FAILED, f"{shown}: {e}")
    where = f"{shown}: central store at schema {SCHEMA_REVISION}, holds {origin}'s log"
    if central_head >= local_head:
        return Check("central", OK, f"{where} up to event {central_head}, all of it")
    return Check("central", WARNING, f"{where} up to event {central_head} of {local_head} "
                 f"({local_head - central_head} to ship: membership ship --to URL)")
