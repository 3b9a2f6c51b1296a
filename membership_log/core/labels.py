"""Node and observer names made safe as label values (Prometheus, Alertmanager).

Names come from Serf and are hostile input: the handler records any bytes, and invalid UTF-8
reaches Python as lone surrogates (``surrogateescape``). Both Prometheus's text format and
Alertmanager's JSON API need valid UTF-8, and ``str.encode("utf-8")`` raises on a surrogate.
Control characters (ESC, newline) are valid UTF-8: the exposition format escapes what it
must, so they are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace(m: re.Match[str]) -> str:
    o = ord(m.group())
    # U+DC80..U+DCFF is one undecodable byte under surrogateescape: show which byte it was,
    # so that two names differing only in a bad byte stay two label values.
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\x{o - 0xDC00:02x}"
    return "\ufffd"


def clean(value: str) -> str:
    """``value`` as valid UTF-8 text: each undecodable byte becomes ``\\xNN``, any other
    lone surrogate U+FFFD; everything else is kept."""
    if value.isascii():
        return value
    return _SURROGATE.sub(_replace, value)


def unique(values: Iterable[str]) -> dict[str, str]:
    """Map each distinct value to a clean label value, no two the same.

    Two series with equal labels make a scrape invalid, so a clean value that collides with
    another (a name literally spelled ``a\\xff`` next to one holding the byte 0xFF) gets a
    ``#2``, ``#3`` ... suffix, in sorted order so the mapping is stable across scrapes.
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for value in sorted(set(values)):
        label = base = clean(value)
        n = 1
        while label in taken:
            n += 1
            label = f"{base}#{n}"
        taken.add(label)
        out[value] = label
    return out
