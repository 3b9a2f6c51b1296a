"""Making a store right: set-up (``init``, the handler's first run), ``db upgrade`` and
``rebuild``, each of which ends with the derived tables (and a node's live file) brought up
to date by the one fold driver.

The stores create and upgrade schemas (:mod:`membership_log.stores.setup`) and never fold;
the driver folds and writes no file; this module joins the two, and it alone hands the
driver the function that writes the live file (:func:`publisher`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core import fold
from ..core.catalog import CATALOG_LIMIT
from ..core.clock import now_us
from ..core.errors import MembershipError, StoreError
from ..core.records import record
from ..core.redact import mask_url
from ..settings import Settings
from ..stores import files
from ..stores import node as nodestore
from ..stores import setup as store_setup
from ..stores.protocol import NODE, ROLE_CENTRAL, ROLE_NODE, Store
from . import driver, publish

#: A progress callback: ``progress(done, total)``.
Progress = Callable[[int, int], None]

#: What ``rebuild`` did: ``logs`` rebuilt, and for a node store the head ``seq`` and the live
#: nodes written (None on a central store).
Rebuilt = record("Rebuilt", "logs seq live")


def publisher(settings: Settings) -> Callable[[fold.State], None]:
    """The live-file writer for ``settings`` (see :mod:`membership_log.history.publish`)."""
    return publish.publisher(settings.live_file, settings.live_format)


def store_gid(settings: Settings) -> int | None:
    """The gid of ``--store-group`` (None without one); one line if there is no such group."""
    from ..stores import access

    return access.group_id(settings.store_group) if settings.store_group else None


def share_spool(settings: Settings, gid: int | None) -> None:
    """Give an existing spool (and what it holds) the store group's access."""
    if gid is None:
        return
    from ..stores import access

    try:
        access.share_spool(settings.spool_dir, gid)
    except OSError as e:
        raise StoreError(f"cannot set the mode or group of the spool {settings.spool_dir}: "
                         f"{e.strerror or e}") from None


def refold(store: Store, settings: Settings | None = None,
           progress: Progress | None = None) -> list[str]:
    """Bring the derived tables of every log the store holds up to date; on a node store
    with ``settings``, write its live file too. Returns the logs folded."""
    origins = store.origins()
    for origin in origins:
        publish = publisher(settings) if settings is not None and origin == NODE else None
        driver.catch_up(store, origin, publish, progress=progress)
    return origins


def init(settings: Settings, observer: str = "", received_us: int | None = None,
         record_catalog: bool = True, progress: Progress | None = None) -> dict:
    """Create or upgrade the store, record the catalog if it changed, bring everything
    derived (the live file included) up to date. Idempotent.

    Concurrent callers (handlers set up on the spot) are serialised by the store's set-up
    lock."""
    path = settings.sqlite_path
    store_setup.make_dirs(settings.base_dir)
    gid = store_gid(settings)
    if path is None:
        before, after = store_setup.prepare(settings.db_url, gid=gid)
        with store_setup.open_store(settings.db_url) as store:
            if before is not None and before != after:
                _after_upgrade(store)
            refold(store, progress=progress)
        return {"store": mask_url(settings.db_url), "from": before, "to": after}
    before, after = store_setup.prepare(settings.db_url, ROLE_NODE, gid)
    share_spool(settings, gid)
    upgraded = before is not None and before != after
    if received_us is None:
        received_us = now_us()
    store = nodestore.NodeStore(path)
    try:
        if store.role_of() != ROLE_NODE:
            raise StoreError(f"{path} is a central store; init makes node stores")
        if upgraded:
            _after_upgrade(store)
        warnings: list[str] = []
        catalog = None
        if record_catalog:
            data, problem = files.read_regular(settings.catalog, CATALOG_LIMIT)
            catalog = _catalog_status(settings.catalog, data, problem)
            with store.write():
                item = nodestore.catalog_item(store, data, received_us, observer, problem)
                if item is not None:
                    store.append([item])
                    if problem:
                        warnings.append(problem)
        state, _, notes = driver.catch_up(store, NODE, publisher(settings), progress=progress)
    finally:
        store.close()
    from ..render.livefile import file_of

    return {"store": path, "from": before, "to": after, "seq": state.seq,
            "live": sorted(fold.live_nodes(state)), "catalog": catalog,
            "live_file": files.read_bytes(settings.live_file) is not None,
            "not_written": file_of(state, settings.live_format)[1],
            "warnings": warnings + [w for seq in sorted(notes) for w in notes[seq]]}


def _catalog_status(path: str, data: bytes | None, problem: str | None) -> tuple[str, str]:
    """``("ok", nodes)``, ``("missing", why it is allowed)`` or ``("unusable", why)``."""
    from ..core import catalog as _catalog

    if data is None:
        if problem is None:
            return "missing", (f"no catalog at {path}: every Serf member seen is a node, and "
                               f"no live file is written until one is seen")
        return "unusable", problem
    parsed, reasons = _catalog.parse(data)
    if parsed is None:
        return "unusable", "; ".join(reasons[:2]) or "no node in it"
    return "ok", f"{len(parsed.nodes)} node(s)"


def upgrade_store(settings: Settings, role: str | None = None,
                  progress: Progress | None = None) -> tuple:
    """``membership db upgrade``: the migrations, then everything derived brought up to date
    (an upgrade that adds or reshapes a derived table leaves it to be refolded: without this,
    an upgraded store would report an audit without its history). Returns (from, to)."""
    gid = store_gid(settings)
    before, after = store_setup.prepare(settings.db_url, role, gid)
    if settings.sqlite_path is not None:
        share_spool(settings, gid)
    if before is None or before == after:
        return before, after
    with store_setup.open_store(settings.db_url) as store:
        _after_upgrade(store)
        refold(store, settings if store.role == ROLE_NODE else None, progress)
    return before, after


def _after_upgrade(store: Store) -> None:
    """What an upgrade from an older release adds beyond the schema: a retention anchor made
    before 0005 gets its record in the log (trusted as it stands now: from here on the chain
    covers it); every log a store made before 0006 holds gets its Merkle frontier, computed
    from the log itself (here rather than in the migration: with the one function the
    append paths and ``rebuild`` use, over the kept events a block at a time, after the
    schema change has committed)."""
    if isinstance(store, nodestore.NodeStore):  # its role is node
        from .retention import cover

        cover(store)
    from .witness import keep_trees

    keep_trees(store)


def rebuild(settings: Settings, progress: Progress | None = None) -> Rebuilt:
    """Drop everything derived (snapshot, checkpoints, incidents, sessions, witnessed heads)
    and fold the raw log again, from the retention anchor if there is one, and compute each
    log's Merkle frontier from it; on a node store, rewrite the live
    file if its bytes differ. The raw log is never changed. Chunk by chunk (the driver's):
    handlers wait for one chunk at most, and a rebuild killed midway leaves derived state
    that merely lags."""
    from .integrity import check_anchor

    with store_setup.open_store(settings.db_url) as store:
        origins = store.origins()
        for origin in origins:
            bad = check_anchor(store, origin)
            if bad is not None:
                raise MembershipError(f"rebuild refuses to fold from this anchor: {bad.what}; "
                                      f"restore the store from a backup or the central store "
                                      f"(membership export --observer NODE, then import)")
        for origin in origins:
            with store.write():
                store.truncate_derived(origin, store.first_seq(origin) - 1)
        from .witness import keep_trees

        keep_trees(store, recompute=True)  # the Merkle frontiers are the log's too
        if store.role == ROLE_CENTRAL:
            refold(store, progress=progress)
            return Rebuilt(len(origins), None, None)
        state, _, _ = driver.catch_up(store, NODE, publisher(settings), progress=progress)
        return Rebuilt(1, state.seq, sorted(fold.live_nodes(state)))
