"""Where things live: the base dir, the store, the catalog and the live file (SPEC).

Shared by the Typer CLI and the handler's fast path, which parses its few options itself
(:func:`parse_handler_args`) so that ``membership handle`` never imports Typer.
"""

from __future__ import annotations

import os

from .core.errors import MembershipError
from .core.records import record

#: ``db_url`` is a SQLAlchemy URL; ``sqlite_path`` the file behind it if it is SQLite;
#: ``store_group`` the group that may read the store and spool (None: the owner alone).
Settings = record(
    "Settings", "base_dir db_url sqlite_path catalog live_file spool_dir live_format "
    "store_group"
)

#: Live-file formats: Droonga 1.0.x ``live-nodes.json`` (live nodes only, the default),
#: ``cluster-state`` (every catalog node with ``{"live": bool}``), or ``droonga-1.1``: the
#: ``state/cluster-state.json`` droonga-engine 1.1.x reads (every member of the catalog's
#: cluster with its tags, roles included; :mod:`membership_log.core.droonga`).
LIVE_FORMATS = ("droonga", "cluster-state", "droonga-1.1")
DROONGA_11 = LIVE_FORMATS[2]

#: option -> (environment variable, help text)
OPTIONS = {
    "--base-dir": ("MEMBERSHIP_BASE_DIR", "Directory holding the store, catalog and live file."),
    "--db": ("MEMBERSHIP_DB", "Store URL (sqlite:///..., postgresql://...) or a SQLite path."),
    "--catalog": ("MEMBERSHIP_CATALOG", "Droonga catalog.json (all its nodes start live)."),
    "--live-file": ("MEMBERSHIP_LIVE_FILE", "The live-node file to keep up to date (default: "
                    "<base-dir>/live-nodes.json; <base-dir>/state/cluster-state.json with "
                    "--live-format droonga-1.1)."),
    "--live-format": ("MEMBERSHIP_LIVE_FORMAT", "Live-file format: droonga (live-nodes.json, "
                      "the default), cluster-state (every node with {\"live\": bool}) or "
                      "droonga-1.1 (droonga-engine 1.1's state/cluster-state.json: members, "
                      "roles, tags)."),
}

#: Not a location: who may read what the handler, init and db upgrade make (SPEC
#: "Deployment"). The handler takes it like the options above.
STORE_GROUP = ("--store-group", "MEMBERSHIP_STORE_GROUP",
               "Make the store, its -wal/-shm files and the spool readable by this group "
               "(files 0640, directories 0750); without it they are the owner's alone.")


def sqlite_path_of(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL, or None for any other database."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):].split("?", 1)[0]
        return path or None
    return None


def store_url(text: str) -> str:
    """A store as ``--db`` (and ``ship --to``, ``compact --require-shipped``) takes it: a URL,
    or a plain path, which means SQLite."""
    return text if "://" in text else "sqlite:///" + os.path.abspath(text)


def resolve(
    base_dir: str | None = None,
    db: str | None = None,
    catalog: str | None = None,
    live_file: str | None = None,
    live_format: str | None = None,
    store_group: str | None = None,
) -> Settings:
    """Fill in defaults (SPEC "Where things live"). Options win over the environment."""
    env = os.environ
    base = base_dir or env.get("MEMBERSHIP_BASE_DIR") or "."
    base = os.path.abspath(base)
    db = store_url(db or env.get("MEMBERSHIP_DB") or os.path.join(base, "membership.db"))
    catalog = catalog or env.get("MEMBERSHIP_CATALOG") or os.path.join(base, "catalog.json")
    live_format = live_format or env.get("MEMBERSHIP_LIVE_FORMAT") or LIVE_FORMATS[0]
    if live_format not in LIVE_FORMATS:
        raise MembershipError(f"live-file format must be {', '.join(LIVE_FORMATS[:-1])} or "
                              f"{LIVE_FORMATS[-1]}, not {live_format!r}")
    live_file = live_file or env.get("MEMBERSHIP_LIVE_FILE")
    if not live_file:
        if live_format == DROONGA_11:  # where a 1.1 engine reads it, under its base dir
            from .core.droonga import STATE_FILE

            live_file = os.path.join(base, *STATE_FILE.split("/"))
        else:
            live_file = os.path.join(base, "live-nodes.json")
    return Settings(
        base,
        db,
        sqlite_path_of(db),
        os.path.abspath(catalog),
        os.path.abspath(live_file),
        os.path.join(base, "spool"),
        live_format,
        store_group or env.get(STORE_GROUP[1]) or None,
    )


def parse_handler_args(argv: list[str]) -> Settings:
    """``--base-dir DIR`` / ``--base-dir=DIR`` and the other options, nothing else."""
    given: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name not in OPTIONS and name != STORE_GROUP[0]:
            raise MembershipError(
                f"handle: unknown option {arg!r} (accepted: {', '.join(OPTIONS)}, "
                f"{STORE_GROUP[0]})"
            )
        if not eq:
            i += 1
            if i >= len(argv):
                raise MembershipError(f"handle: option {name} needs a value")
            value = argv[i]
        given[name[2:].replace("-", "_")] = value
        i += 1
    return resolve(**given)
