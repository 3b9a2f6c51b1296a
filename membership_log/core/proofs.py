"""The proof documents of SPEC "Witnessed history", and checking them without a store.

An inclusion proof ``{"origin", "seq", "size", "root", "event", "prev", "path"}`` carries the
event as ``membership export`` writes it and the hash of the event before it, so that an
auditor recomputes the event's chain hash from its content (core/raw.chain_hash), its leaf,
and the path up to the root: nothing of the store is trusted. A consistency proof
``{"origin", "from", "to", "root_from", "root_to", "path"}`` shows the log at size ``from``
is a prefix of the log at size ``to``. Hashes are lower-case hex.

:func:`check` never raises: a malformed document is ``(False, reason)`` in one line.
"""

from __future__ import annotations

import base64
import binascii
import json

from . import merkle, timespec
from .raw import GENESIS, chain_hash, encode_env

#: Longer paths than these cannot belong to a tree of at most 2**63-1 leaves.
_MAX_INCLUSION_PATH = 63
_MAX_CONSISTENCY_PATH = 2 * 63
_HEX = frozenset("0123456789abcdefABCDEF")
_EVENT_KEYS = ("seq", "received", "observer", "source", "env", "stdin_b64", "hash")


def inclusion(origin: str, event: dict, prev: bytes, size: int, leaves: merkle.Leaves,
              known: merkle.Known | None = None, floor: int = 0) -> dict:
    """The inclusion proof of ``event`` (an export line's object) in the log of size
    ``size``; ``prev`` is the hash of the event before it (the anchor's hash for the first
    event kept after a compaction, :data:`core.raw.GENESIS` for event 1).

    ``root`` is the root the path implies from the event's stored hash; when ``size`` is the
    head, the caller should find it equal to its stored frontier's root.
    """
    seq = event["seq"]
    path = merkle.inclusion_proof(seq - 1, size, leaves, known, floor)
    root = merkle.root_from_inclusion(merkle.leaf_hash(bytes.fromhex(event["hash"])), seq - 1,
                                      size, path)
    assert root is not None  # a path just computed for this position has its length
    return {"origin": origin, "seq": seq, "size": size, "root": root.hex(), "event": event,
            "prev": prev.hex(), "path": [p.hex() for p in path]}


def consistency(origin: str, m: int, n: int, leaves: merkle.Leaves,
                known: merkle.Known | None = None, floor: int = 0) -> dict:
    """The consistency proof of the log from size ``m`` to size ``n``.

    The roots come from the path itself where it determines them, so the leaves are read
    once: only when ``m`` is a power of two (the path leaves the old tree out) or 0 or ``n``
    is an old root computed on its own, over leaves the path does not cover.
    """
    path = merkle.consistency_proof(m, n, leaves, known, floor)
    if m == 0 or m == n:
        root_n = merkle.subtree_root(0, n, leaves, known, floor)
        root_m = merkle.EMPTY_ROOT if m == 0 else root_n
    else:
        # Only a power-of-two old size needs its root apart; otherwise the walk ignores it.
        first = (merkle.subtree_root(0, m, leaves, known, floor) if m & (m - 1) == 0
                 else bytes(merkle.HASH_SIZE))
        roots = merkle.consistency_roots(m, n, path, first)
        assert roots is not None  # a path just computed for these sizes has their shape
        root_m, root_n = roots
    return {"origin": origin, "from": m, "to": n, "root_from": root_m.hex(),
            "root_to": root_n.hex(), "path": [p.hex() for p in path]}


# -- checking ----------------------------------------------------------------------------------


class _Bad(Exception):
    """Why a document is refused (its one-line message)."""


def check_bytes(data: bytes, root_hex: str | None = None) -> tuple[bool, str]:
    """:func:`check` of a proof file's bytes: UTF-8 JSON, else ``(False, why)``."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        return False, f"the proof is not UTF-8 (byte {e.start})"
    except (ValueError, RecursionError) as e:
        return False, f"the proof is not JSON: {str(e).splitlines()[0][:120]}"
    return check(doc, root_hex)


def check(doc: object, root_hex: str | None = None) -> tuple[bool, str]:
    """Verify an inclusion or a consistency proof with nothing but the document.

    ``root_hex`` is the root to hold it to (a witnessed head's; ``root_to`` for a consistency
    proof); without it the document's own root is used, and the message says so. Returns
    ``(True, "ok: ...")`` or ``(False, reason)``, one line either way, for any input.
    """
    try:
        given = None if root_hex is None else _hash(root_hex, "the given root")
        if not isinstance(doc, dict):
            raise _Bad("not a proof: a JSON object is expected")
        if "event" in doc:
            return True, _check_inclusion(doc, given)
        if "from" in doc or "to" in doc:
            return True, _check_consistency(doc, given)
        raise _Bad("not a proof: neither an inclusion proof (event, path) nor a consistency "
                   "proof (from, to)")
    except _Bad as e:
        return False, str(e)
    except (ValueError, TypeError, OverflowError, UnicodeError, RecursionError) as e:
        # Belt and braces: every field is checked above, but a proof is hostile input.
        return False, f"malformed proof ({type(e).__name__})"


def _field(doc: dict, key: str, where: str = "the proof") -> object:
    if key not in doc:
        raise _Bad(f"{where} has no {key!r}")
    return doc[key]


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:  # not bool, not float
        raise _Bad(f"{what} is not an integer")
    if not lo <= value <= hi:
        raise _Bad(f"{what} is out of range ({lo}..{hi})")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is not a string")
    return value


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * merkle.HASH_SIZE or not _HEX.issuperset(
            value):
        raise _Bad(f"{what} is not a hash (64 hex digits)")
    return bytes.fromhex(value)


def _path(value: object, most: int) -> list[bytes]:
    if not isinstance(value, list):
        raise _Bad("the path is not a list")
    if len(value) > most:
        raise _Bad(f"the path has {len(value)} hashes; no tree of at most 2**63-1 leaves "
                   f"needs more than {most}")
    return [_hash(h, f"path[{i}]") for i, h in enumerate(value)]


def _event_hash(event: object, seq: int, prev: bytes) -> bytes:
    """The event's chain hash, recomputed from its content exactly as the store did."""
    if not isinstance(event, dict):
        raise _Bad("the event is not a JSON object")
    for key in _EVENT_KEYS:
        _field(event, key, "the event")
    if event["seq"] != seq or type(event["seq"]) is not int:
        raise _Bad(f"the event's seq is not the proof's seq {seq}")
    received = _text(event["received"], "the event's received time")
    try:
        point = timespec.parse(received, 0)
    except ValueError:
        point = None
    # Only the form export writes: an equal time written another way is not what was proved.
    if point is None or point.us is None or timespec.iso(point.us) != received:
        raise _Bad("the event's received time is not an export time (YYYY-MM-DDTHH:MM:SS."
                   "ffffffZ)")
    observer = _text(event["observer"], "the event's observer")
    source = _text(event["source"], "the event's source")
    env = event["env"]
    if not isinstance(env, dict):
        raise _Bad("the event's env is not a JSON object")
    for name, value in env.items():
        # The stored block joins NAME=value by NUL: nothing else can have been recorded.
        if not isinstance(value, str) or "\0" in name or "=" in name or "\0" in value:
            raise _Bad("the event's env holds a variable no environment can hold")
    try:
        stdin = base64.b64decode(_text(event["stdin_b64"], "the event's stdin_b64"),
                                 validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("the event's stdin_b64 is not base64") from None
    try:
        return chain_hash(prev, seq, point.us, observer, source, encode_env(env), stdin)
    except UnicodeEncodeError:
        raise _Bad("the event's observer, source or env holds characters no log records "
                   "(not UTF-8, or a source that is not ASCII)") from None


def _check_inclusion(doc: dict, given: bytes | None) -> str:
    origin = _text(_field(doc, "origin"), "origin")
    seq = _int(_field(doc, "seq"), "seq", 1, merkle.MAX_SIZE)
    size = _int(_field(doc, "size"), "size", seq, merkle.MAX_SIZE)
    root = _hash(_field(doc, "root"), "root")
    prev = _hash(_field(doc, "prev"), "prev")
    path = _path(_field(doc, "path"), _MAX_INCLUSION_PATH)
    if seq == 1 and prev != GENESIS:
        raise _Bad("event 1 chains to the genesis hash (64 zeros), not to prev")
    computed = _event_hash(_field(doc, "event"), seq, prev)
    if computed != _hash(doc["event"]["hash"], "the event's hash"):
        raise _Bad(f"event {seq}'s content and prev do not hash to its recorded hash (the "
                   f"event or prev was altered)")
    got = merkle.root_from_inclusion(merkle.leaf_hash(computed), seq - 1, size, path)
    if got is None:
        raise _Bad(f"the path ({len(path)} hashes) cannot be the one of event {seq} in a tree "
                   f"of size {size}")
    if got != root:
        raise _Bad(f"the path from event {seq} does not lead to the proof's root (the path, "
                   f"seq, size or root was altered)")
    return f"ok: event {seq} is in the log of {origin[:60]!r} at size {size}, " + _held(
        root, given)


def _check_consistency(doc: dict, given: bytes | None) -> str:
    origin = _text(_field(doc, "origin"), "origin")
    m = _int(_field(doc, "from"), "from", 0, merkle.MAX_SIZE)
    n = _int(_field(doc, "to"), "to", m, merkle.MAX_SIZE)
    root_m = _hash(_field(doc, "root_from"), "root_from")
    root_n = _hash(_field(doc, "root_to"), "root_to")
    path = _path(_field(doc, "path"), _MAX_CONSISTENCY_PATH)
    if not merkle.verify_consistency(m, n, root_m, root_n, path):
        raise _Bad(f"the path does not show the log at size {m} (root_from) is a prefix of "
                   f"the log at size {n} (root_to)")
    return f"ok: the log of {origin[:60]!r} at size {m} is a prefix of it at size {n}, " + \
        _held(root_n, given)


def _held(root: bytes, given: bytes | None) -> str:
    if given is None:
        return f"under the document's own root {root.hex()} (give a witnessed root to hold " \
               f"it to)"
    if given != root:
        raise _Bad(f"the proof is for root {root.hex()}, not the given root {given.hex()}")
    return f"under the given root {root.hex()}"
