"""The retention anchor's record in the raw log. Pure.

``compact`` drops a log's events up to an anchor and keeps the fold's state after them. That
state replaces the events it summarises, so it must be as hard to forge as they were: the
same transaction that moves the anchor appends an event of source ``anchor`` whose bytes
(:func:`encode`) name the anchor's seq, hash, receive times and the SHA-256 of its state, of
the catalog in force and of the log's Merkle frontier at the anchor. The hash chain covers
that event like any other; ``verify`` and ``rebuild`` hold the anchor to it (:func:`check`),
so copying another store's anchor state in by hand, or editing it, no longer verifies.
"""

from __future__ import annotations

from .raw import sha256

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` at run time)
if TYPE_CHECKING:
    from typing import Protocol

    class AnchorFields(Protocol):
        """What this module reads of a :class:`~membership_log.stores.protocol.Anchor`
        (the core may not import the stores)."""

        @property
        def seq(self) -> int: ...
        @property
        def hash(self) -> bytes: ...
        @property
        def received_us(self) -> int: ...
        @property
        def max_at(self) -> int | None: ...
        @property
        def format(self) -> str: ...
        @property
        def state(self) -> bytes: ...
        @property
        def catalog_sha256(self) -> bytes | None: ...
        @property
        def frontier(self) -> bytes | None: ...

MAGIC = b"membership-anchor 1\n"
_FIELDS = ("seq", "hash", "received_us", "max_at", "format", "state_sha256", "catalog_sha256")
#: Since the logs keep a Merkle tree (0006): the SHA-256 of the anchor's frontier. Only an
#: anchor with a frontier has the line, so every record written before reads as it did.
_FRONTIER = "frontier_sha256"


def encode(anchor: AnchorFields) -> bytes:
    """The record of an :class:`~membership_log.stores.protocol.Anchor`, as the stdin bytes
    of its ``anchor`` event."""
    values = (str(anchor.seq), anchor.hash.hex(), str(anchor.received_us), str(anchor.max_at),
              anchor.format, sha256(anchor.state).hexdigest(),
              anchor.catalog_sha256.hex() if anchor.catalog_sha256 is not None else "-")
    pairs = list(zip(_FIELDS, values, strict=True))
    if anchor.frontier is not None:
        pairs.append((_FRONTIER, sha256(anchor.frontier).hexdigest()))
    return MAGIC + "".join(f"{k} {v}\n" for k, v in pairs).encode("ascii")


def decode(data: bytes) -> dict | None:
    """The fields of a record (all text), or None if ``data`` is not one."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(MAGIC):
        return None
    try:
        lines = bytes(data[len(MAGIC):]).decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    fields = {}
    for line in lines:
        if line:
            key, _, value = line.partition(" ")
            fields[key] = value
    return fields if set(fields) - {_FRONTIER} == set(_FIELDS) else None


def seq_of(data: bytes) -> int | None:
    """The anchor seq a record names (None if it is not a record)."""
    fields = decode(data)
    if fields is None or not fields["seq"].isdigit():
        return None
    return int(fields["seq"])


def check(anchor: AnchorFields, records: list) -> str | None:
    """Why ``anchor`` is not the one the log records, or None if it is. ``records``: the
    log's ``anchor`` events ``(seq, stdin)``, newest first; the newest that names the
    anchor's seq must match it in every field, its state included."""
    for event_seq, data in records:
        fields = decode(bytes(data))
        if fields is None or seq_of(bytes(data)) != anchor.seq:
            continue
        if encode(anchor) != bytes(data):
            mine = decode(encode(anchor))
            assert mine is not None  # encode() writes a record
            which = [k for k in (*_FIELDS, _FRONTIER) if fields.get(k) != mine.get(k)]
            return (f"the retention anchor at event {anchor.seq} differs from its record in "
                    f"the log (event {event_seq}: {', '.join(which)})")
        return None
    return (f"the retention anchor at event {anchor.seq} is not recorded in the log: it was "
            f"not made by membership compact")
