"""The live file's one writer: what the shells (the handler, ``init``, ``rebuild``,
``import``, ``compact``) hand the fold driver to call inside its last write transaction.

Small and stdlib-only on purpose: the handler imports it on its hot path.
"""

from __future__ import annotations

from ..render import livefile
from ..stores import files


def publisher(live_file: str, fmt: str = "droonga"):
    """A ``publish(state)`` that writes the live file of ``state`` in format ``fmt``,
    atomically, only if its bytes change (every rewrite makes every engine reload). Called
    while the store's write lock is held, so the file never moves backwards, and any
    temporary file of a writer killed mid-way can be swept."""

    def publish(state) -> None:
        files.write_atomic(live_file, livefile.render_view(state.nodes, fmt), sweep=True)

    return publish
