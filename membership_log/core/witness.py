"""Witnessed history's published heads: the ``membership-head`` user event. Pure, stdlib only.

A node publishes its log's tree head (SPEC "Witnessed history") as the Serf user event
``membership-head`` with the payload ``<observer> <size> <root hex>``: the node whose log it
is (its ``SERF_SELF_NAME``), the tree size (its head seq) and the RFC 6962 root
(:mod:`membership_log.core.merkle`) in lower-case hex. Every observer's handler records it
like any event; the fold (:mod:`membership_log.core.fold`) keeps the heads it has seen per
origin and flags a head that contradicts an earlier one; the stores keep every head in the
derived table ``witness_head``, which ``verify`` and ``ship`` on the central store hold the
shipped logs to.

The fold and the driver import this module only when a head event comes by: most events
are not one, and the handler's hot path stays as it was.
"""

from __future__ import annotations

from .events import HEAD_EVENT  # (also this module's name: the event a head travels as)

#: Serf's default limit on a user event's name and payload together (bytes).
USER_EVENT_LIMIT = 512
#: The longest origin name a head may carry: the payload, with its size (up to 19 digits),
#: root (64) and the spaces, stays well under Serf's limit.
MAX_ORIGIN = USER_EVENT_LIMIT - len(HEAD_EVENT) - 19 - 64 - 2 - 16
#: Tree sizes are seqs: signed 64-bit in the stores.
MAX_SIZE = 2**63 - 1
#: How every warning about a contradicting head begins (the fold writes them; the stores'
#: ``witness_head.conflict`` keeps them; alerts and verify find them by it).
CONFLICT = "witness conflict: "

_HEX = frozenset("0123456789abcdef")


def head_payload(origin: str, size: int, root: bytes) -> str:
    """The payload of a ``membership-head`` event: ``<observer> <size> <root hex>``."""
    return f"{origin} {size} {root.hex()}"


def parse_head(payload: str | None) -> tuple[str, int, str] | None:
    """``(origin, size, root hex)`` of a head's payload, or None if it is not one.

    The origin is everything before the last two fields (a Serf node name may hold a space);
    the size is decimal digits, at most 2**63-1; the root 64 lower-case hex digits, exactly
    as :func:`head_payload` writes them (an equal root written another way is not what was
    published, and is refused rather than compared)."""
    if not payload or len(payload) > USER_EVENT_LIMIT:
        return None
    origin, _, rest = payload.rpartition(" ")
    root = rest
    origin, _, size_text = origin.rpartition(" ")
    if (not origin or len(origin) > MAX_ORIGIN or origin != origin.strip() or "\n" in origin
            or "\0" in origin or not size_text.isascii() or not size_text.isdigit()
            or len(size_text) > 19 or (len(size_text) > 1 and size_text[0] == "0")
            or len(root) != 64 or not _HEX.issuperset(root)):
        return None
    size = int(size_text)
    if size > MAX_SIZE:
        return None
    return origin, size, root
