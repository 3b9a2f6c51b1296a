"""The live file's one writer: what the shells (the handler, ``init``, ``rebuild``,
``import``, ``compact``) hand the fold driver to call inside its last write transaction.

Small and stdlib-only on purpose: the handler imports it on its hot path.
"""

from __future__ import annotations

from ..render import livefile
from ..stores import files

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.fold import State

    Publish = Callable[[State], None]


def publisher(live_file: str, fmt: str = "droonga") -> Publish:
    """A ``publish(state)`` that writes the live file of ``state`` in format ``fmt``,
    atomically, only if its bytes change (every rewrite makes every engine reload), and
    never while the log knows no node (Droonga reads a live file with no live node as an
    outage: see :func:`membership_log.render.livefile.outage_reason`). Called
    while the store's write lock is held, so the file never moves backwards, and any
    temporary file of a writer killed mid-way can be swept."""

    if fmt == livefile.DROONGA_11:
        return _droonga11(live_file)

    def publish(state: State) -> None:
        if livefile.outage_reason(state.nodes) is not None:
            return  # no node known yet: no file, rather than one that says "none is live"
        files.write_atomic(live_file, livefile.render_view(state.nodes, fmt), sweep=True)

    return publish


def _droonga11(live_file: str) -> Publish:
    """Droonga 1.1's ``state/cluster-state.json``: left as it is while there is none to
    write (:func:`membership_log.render.livefile.droonga11_file` says when); its directory
    (``<base-dir>/state``) made 0755 if missing, and never followed if it is someone
    else's symbolic link (:func:`membership_log.stores.files.ensure_dir`)."""
    import os

    directory = os.path.dirname(os.path.abspath(live_file))

    def publish(state: State) -> None:
        data, _ = livefile.droonga11_file(state)
        if data is None:
            return
        files.ensure_dir(directory)
        files.write_atomic(live_file, data, sweep=True)

    return publish
