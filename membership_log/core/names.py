"""Names an operator types (``--node``, ``--observer``) checked against the names that exist.
A typo must be an error that says what exists, never an empty answer. Pure."""

from __future__ import annotations

from collections.abc import Iterable

#: How many known names an error lists when none is close.
SHOWN = 8


def unknown(kind: str, name: str, known: Iterable[str], lead: str | None = None) -> str:
    """One line: ``name`` is not a known ``kind``; the closest known names (or some of them),
    or that there are none."""
    import difflib

    from .labels import clean

    names = sorted(set(known))
    head = f"{lead} {name!r}" if lead else f"no {kind} {name!r}"
    if not names:
        return f"{head}: there is no {kind} yet"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"{head}; did you mean {', '.join(repr(clean(c)) for c in close)}?"
    shown = ", ".join(repr(clean(n)) for n in names[:SHOWN])
    more = f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return f"{head}; known {kind}s: {shown}{more}"
