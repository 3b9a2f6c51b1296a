"""Points in a log's history as operators write them (SPEC "Commands").

``2026-11-25T03:12:00`` (ISO 8601; no zone means UTC), ``now``, ``15m ago`` / ``2h ago`` /
``3d ago`` (also ``s`` and ``w``), and ``@N``: right after event number N. Pure: "now" is an
argument.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime, timezone

#: ``seq`` is set for ``@N`` (and ``us`` is None); otherwise ``us`` is UTC microseconds.
Point = namedtuple("Point", "text us seq")

ACCEPTED = "ISO 8601 (e.g. 2026-11-25T03:12:00, no zone = UTC), 'now', '15m ago', '2h ago', " \
           "'3d ago' or '@N' (right after event N)"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(us: int) -> str:
    """UTC microseconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def duration(seconds: float | None) -> str:
    """``1.1s``, ``4.5m``, ``3.2h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def parse(text: str, now_us: int) -> Point:
    """Parse a time argument; ValueError naming the accepted forms if it is none of them."""
    t = text.strip()
    low = t.lower()
    if low == "now":
        return Point(text, now_us, None)
    if t.startswith("@"):
        if t[1:].isdigit() and t[1:].isascii():
            return Point(text, None, int(t[1:]))
        raise ValueError(f"{text!r}: @N needs an event number; accepted: {ACCEPTED}")
    if low.endswith(" ago"):
        amount = low[:-4].strip()
        number, unit = amount[:-1].strip(), amount[-1:]
        if unit in _UNITS and number.isdigit() and number.isascii():
            return Point(text, now_us - int(number) * _UNITS[unit] * 1_000_000, None)
        raise ValueError(f"{text!r} is not a relative time; accepted: {ACCEPTED}")
    try:
        # Python 3.10's fromisoformat does not take a trailing Z.
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "zZ" and t else t)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; accepted: {ACCEPTED}") from None
    return Point(text, to_us(dt), None)


def reached(point: Point | None, seq: int, received_us: int) -> bool:
    """Whether an event (``seq``, ``received_us``) is at or before ``point``."""
    if point is None:
        return True
    if point.seq is not None:
        return seq <= point.seq
    return received_us <= point.us


def since_ok(point: Point | None, seq: int, received_us: int) -> bool:
    """Whether an event is at or after ``point`` (``@N``: event N itself and later)."""
    if point is None:
        return True
    if point.seq is not None:
        return seq >= point.seq
    return received_us >= point.us
