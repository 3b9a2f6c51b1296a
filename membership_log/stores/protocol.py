"""What every store answers: the roles, the retention anchor, and the :class:`Store` protocol.

A store has a role, recorded in it when it is made: a **node** store holds one node's own log
(written by its handler), a **central** store every node's shipped logs, each under its
origin (the node's name). The derived tables are the same in both, keyed by origin; a node
store keeps its own under :data:`NODE`.

This module is on the handler's hot path: the protocol is an abstract base class (``abc`` is
loaded at interpreter start-up; ``typing`` is not, and costs the handler a millisecond).
"""

from __future__ import annotations

#: The origin under which a node store keeps the derived rows of its own log (a central
#: store uses each node's name; no node is named '').
NODE = ""
ROLE_NODE = "node"
ROLE_CENTRAL = "central"


class Anchor(tuple):
    """The retention anchor of one log: the last dropped event's ``seq``, ``hash`` and
    ``received_us``, the running maximum receive time ``max_at``, and the fold's state
    after it (``format``, ``state`` blob)."""

    __slots__ = ()

    def __new__(cls, seq, hash_, received_us, max_at, fmt, state):
        return tuple.__new__(cls, (seq, bytes(hash_), received_us, max_at, fmt, bytes(state)))

    seq = property(lambda self: self[0])
    hash = property(lambda self: self[1])
    received_us = property(lambda self: self[2])
    max_at = property(lambda self: self[3])
    format = property(lambda self: self[4])
    state = property(lambda self: self[5])
