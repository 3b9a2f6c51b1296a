"""The raw event: exactly what Serf handed the handler, and the hash chain over it.

A raw event is never parsed here; it is the evidence that everything else is derived from.
This module is on the handler's hot path, so it imports nothing but SHA-256 and uses
`collections.namedtuple` (already loaded by `sqlite3`) instead of dataclasses, whose import
alone would cost about as much as the rest of the handler (README, "Performance").
"""

from __future__ import annotations

from collections import namedtuple

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
RawEvent = namedtuple("RawEvent", "seq received_us observer source env stdin hash")

SOURCE_SERF = "serf"
SOURCE_CATALOG = "catalog"

#: The hash the first event chains to.
GENESIS = bytes(32)

ENV_PREFIX = "SERF_"


def serf_env(environ: dict[str, str]) -> dict[str, str]:
    """Only the ``SERF_*`` variables: nothing else from the environment is ever stored."""
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}


def encode_env(env: dict[str, str]) -> bytes:
    """The environment as an environ block: ``NAME=value`` joined by NUL, sorted by name.

    Variables can hold neither NUL nor (in the name) ``=``, so this is lossless, and it needs
    no JSON encoder on the hot path.
    """
    return b"\0".join(
        (k + "=" + v).encode("utf-8", "surrogateescape") for k, v in sorted(env.items())
    )


def decode_env(blob: bytes) -> dict[str, str]:
    """Inverse of :func:`encode_env`."""
    env: dict[str, str] = {}
    if not blob:
        return env
    for item in blob.split(b"\0"):
        name, _, value = item.decode("utf-8", "surrogateescape").partition("=")
        env[name] = value
    return env


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def chain_hash(
    prev: bytes, seq: int, received_us: int, observer: str, source: str, env: bytes, stdin: bytes
) -> bytes:
    """SHA-256 over the previous hash and every stored field, each length-prefixed.

    Length prefixes make the encoding unambiguous, so no two different events hash alike by
    shifting bytes from one field into the next.
    """
    h = sha256(prev)
    h.update(seq.to_bytes(8, "big"))
    h.update(received_us.to_bytes(8, "big", signed=True))
    for part in (
        observer.encode("utf-8", "surrogateescape"),
        source.encode("ascii"),
        env,
        stdin,
    ):
        h.update(_field(part))
    return h.digest()


def hash_of(raw: RawEvent, prev: bytes) -> bytes:
    """The hash ``raw`` must carry when it follows an event whose hash is ``prev``."""
    return chain_hash(
        prev, raw.seq, raw.received_us, raw.observer, raw.source, encode_env(raw.env), raw.stdin
    )
