"""The raw event: exactly what Serf handed the handler, and the hash chain over it.

A raw event is never parsed here; it is the evidence that everything else is derived from.
This module is on the handler's hot path, so it imports nothing but SHA-256 and makes its
record with :mod:`.records` (a namedtuple without the compile) instead of dataclasses, whose
import alone would cost about as much as the rest of the handler (README, "Performance").
"""

from __future__ import annotations

from .records import record

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:  # the builtin modules have no stubs; hashlib's sha256 is the same call
    from collections.abc import Mapping
    from hashlib import sha256
else:
    try:  # the builtin SHA-256: hashlib's OpenSSL binding costs the handler ~2.5 ms to load
        from _sha256 import sha256  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256

#: A raw event as stored. ``env`` is the ``SERF_*`` environment as a dict of str (decoded
#: with ``surrogateescape``, so it round-trips to the exact bytes), ``stdin`` the bytes Serf
#: wrote, byte for byte. ``source`` is ``"serf"`` for a handler run and ``"catalog"`` for a
#: recorded catalog version (its bytes in ``stdin``). ``received_us``: UTC microseconds.
RawEvent = record("RawEvent", "seq received_us observer source env stdin hash")



def raw_of_row(row: tuple) -> RawEvent:
    """A stored row ``(seq, received_us, observer, source, env blob, stdin, hash)`` as a
    :data:`RawEvent` (its environment decoded)."""
    return RawEvent(row[0], row[1], row[2], row[3], decode_env(row[4]), row[5], row[6])


SOURCE_SERF = "serf"
SOURCE_CATALOG = "catalog"
#: An event ``membership compact`` appends: the record of the retention anchor it set (see
#: :mod:`membership_log.core.anchors`), so that the hash chain covers the anchor too.
SOURCE_ANCHOR = "anchor"
SOURCES = (SOURCE_SERF, SOURCE_CATALOG, SOURCE_ANCHOR)

#: The hash the first event chains to.
GENESIS = bytes(32)

ENV_PREFIX = "SERF_"


#: The serf CLI's own settings (``SERF_RPC_ADDR``, ``SERF_RPC_AUTH``: the RPC auth key). An
#: agent started from a shell that set them passes them to its handlers, but they describe
#: the operator's CLI, not the event, and can hold a credential: never recorded (SPEC
#: handler step 1).
EXCLUDED_PREFIX = "SERF_RPC_"


def serf_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``SERF_*`` variables except ``SERF_RPC_*``: nothing else is ever stored, since the
    log is kept forever, shipped centrally, and must never hold a secret."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(ENV_PREFIX) and not k.startswith(EXCLUDED_PREFIX)
    }


def text_of(value: str) -> str:
    """A value read from the environment as storable text.

    The environment is decoded with ``surrogateescape``: bytes that are not UTF-8 become lone
    surrogates, which no database text column accepts. They are shown as ``\\xNN`` instead; the
    exact bytes are kept in the recorded environment (``env``) all the same.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def encode_env(env: dict[str, str]) -> bytes:
    """The environment as an environ block: ``NAME=value`` joined by NUL, sorted by name.

    Variables can hold neither NUL nor (in the name) ``=``, so this is lossless, and it needs
    no JSON encoder on the hot path.
    """
    return b"\0".join(
        (k + "=" + v).encode("utf-8", "surrogateescape") for k, v in sorted(env.items())
    )


_DECODED: dict[bytes, dict[str, str]] = {}
_CANONICAL: dict[bytes, bytes] = {}


def canonical_env(blob: bytes) -> bytes:
    """The environment block as :func:`encode_env` writes it (variables sorted): what the
    hash covers, whoever built the block. Cached like :func:`decode_env`."""
    canon = _CANONICAL.get(blob)
    if canon is None:
        canon = encode_env(decode_env(blob))
        if len(_CANONICAL) >= 4096:
            _CANONICAL.clear()
        _CANONICAL[blob] = canon
    return canon


def decode_env(blob: bytes) -> dict[str, str]:
    """Inverse of :func:`encode_env`. Most events of a log carry one of a few environments,
    so decoded ones are cached: callers must treat the dict as read-only."""
    env = _DECODED.get(blob)
    if env is not None:
        return env
    env = _decode_env(blob)
    if len(_DECODED) >= 4096:
        _DECODED.clear()
    _DECODED[blob] = env
    return env


def _decode_env(blob: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    if not blob:
        return env
    for item in blob.split(b"\0"):
        name, _, value = item.decode("utf-8", "surrogateescape").partition("=")
        env[name] = value
    return env


def chain_hash(
    prev: bytes, seq: int, received_us: int, observer: str, source: str, env: bytes, stdin: bytes
) -> bytes:
    """SHA-256 over the previous hash and every stored field, each length-prefixed.

    Length prefixes make the encoding unambiguous, so no two different events hash alike by
    shifting bytes from one field into the next. (One join and one hash call: verify runs
    this for every event of the log.)
    """
    o = observer.encode("utf-8", "surrogateescape")
    s = source.encode("ascii")
    return sha256(b"".join((
        prev, seq.to_bytes(8, "big"), received_us.to_bytes(8, "big", signed=True),
        len(o).to_bytes(8, "big"), o, len(s).to_bytes(8, "big"), s,
        len(env).to_bytes(8, "big"), env, len(stdin).to_bytes(8, "big"), stdin,
    ))).digest()
