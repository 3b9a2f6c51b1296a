"""Where things live: the base dir, the store, the catalog and the live file (SPEC).

Shared by the Typer CLI and the handler's fast path, which parses its few options itself
(:func:`parse_handler_args`) so that ``membership handle`` never imports Typer.
"""

from __future__ import annotations

import os
from collections import namedtuple

from .core.errors import MembershipError

#: ``db_url`` is a SQLAlchemy URL; ``sqlite_path`` the file behind it if it is SQLite;
#: ``store_group`` the group that may read the store and spool (None: the owner alone).
Settings = namedtuple(
    "Settings", "base_dir db_url sqlite_path catalog live_file spool_dir live_format "
    "store_group"
)

#: Live-file formats: Droonga 1.0.x ``live-nodes.json`` (live nodes only, the default) or
#: later releases' ``cluster-state.json`` (every catalog node with ``{"live": bool}``).
LIVE_FORMATS = ("droonga", "cluster-state")

#: option -> (environment variable, help text)
OPTIONS = {
    "--base-dir": ("MEMBERSHIP_BASE_DIR", "Directory holding the store, catalog and live file."),
    "--db": ("MEMBERSHIP_DB", "Store URL (sqlite:///..., postgresql://...) or a SQLite path."),
    "--catalog": ("MEMBERSHIP_CATALOG", "Droonga catalog.json (all its nodes start live)."),
    "--live-file": ("MEMBERSHIP_LIVE_FILE", "The live-node file to keep up to date."),
    "--live-format": ("MEMBERSHIP_LIVE_FORMAT", "Live-file format: droonga (live-nodes.json, "
                      "the default) or cluster-state (every node with {\"live\": bool})."),
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
    db = db or env.get("MEMBERSHIP_DB") or os.path.join(base, "membership.db")
    if "://" not in db:  # a plain path means SQLite
        db = "sqlite:///" + os.path.abspath(db)
    catalog = catalog or env.get("MEMBERSHIP_CATALOG") or os.path.join(base, "catalog.json")
    live_file = live_file or env.get("MEMBERSHIP_LIVE_FILE") or os.path.join(
        base, "live-nodes.json"
    )
    live_format = live_format or env.get("MEMBERSHIP_LIVE_FORMAT") or LIVE_FORMATS[0]
    if live_format not in LIVE_FORMATS:
        raise MembershipError(f"live-file format must be {' or '.join(LIVE_FORMATS)}, "
                              f"not {live_format!r}")
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
