"""The fold's state as bytes: how snapshots, checkpoints and the retention anchor store it.

Below both the stores (which keep the bytes) and the driver (which folds): derived state is
a cache, so a blob in another format, or damaged, decodes to None and is refolded, never
trusted. ``marshal`` rather than JSON or pickle: it is the fastest stdlib codec for plain
tuples and dicts, and loads nothing on the handler's hot path.
"""

from __future__ import annotations

import marshal

from . import fold

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from .anchors import AnchorFields

#: Derived state is a cache: a row in another format is ignored and the log refolded.
STATE_FORMAT = f"marshal{marshal.version}/state{fold.PLAIN_VERSION}"


def encode_state(state: fold.State) -> bytes:
    return marshal.dumps(fold.to_plain(state))


def decode_state(fmt: str, blob: bytes) -> fold.State | None:
    """A stored state, or None if it is in another format or damaged: a cache is refolded,
    never trusted."""
    if fmt != STATE_FORMAT:
        return None
    try:
        return fold.from_plain(marshal.loads(blob))
    except Exception:  # noqa: BLE001 - any damage means: refold
        return None


def plain_of(blob: bytes) -> object:
    """The plain form inside a stored state blob, or None if it is not one (verify compares
    plain forms, so that two encodings of one state compare equal)."""
    try:
        return marshal.loads(blob)
    except Exception:  # noqa: BLE001
        return None


def decode_anchor_state(anchor: AnchorFields, where: str) -> fold.State:
    """The state of a retention anchor. Unlike a cache, it cannot be refolded (its events
    are gone), so a state in an older release's form is read through
    :func:`~membership_log.core.fold.from_plain`'s upgrades; one this release cannot read at
    all is a one-line :class:`StoreError`."""
    from .errors import StoreError

    state = None
    if anchor.format.startswith(f"marshal{marshal.version}/state"):
        try:
            state = fold.from_plain(marshal.loads(anchor.state))
        except Exception:  # noqa: BLE001 - damaged or unknown: said below
            state = None
    if state is None or state.seq != anchor.seq:
        raise StoreError(f"store {where}: the retention anchor's state (format "
                         f"{anchor.format}) cannot be read by this release; it cannot read "
                         f"before event {anchor.seq + 1}")
    return state
