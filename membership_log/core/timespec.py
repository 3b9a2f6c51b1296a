"""Points in a log's history as operators write them (SPEC "Commands").

``2026-11-25T03:12:00`` (ISO 8601; no zone means UTC), ``now``, ``15m ago`` / ``2h ago`` /
``3d ago`` (also ``s`` and ``w``), and ``@N``: right after event number N. Pure: "now" is an
argument.

Every time this module accepts or prints lies in years 0001-9999 (what ``datetime`` can hold,
well inside a signed 64-bit count of microseconds), so a point that parses can always be
printed and compared; anything outside is a ValueError, never an OverflowError.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from .errors import MembershipError, UsageError  # noqa: F401 (MembershipError)
from .records import record

#: ``seq`` is set for ``@N`` (and ``us`` is None); otherwise ``us`` is UTC microseconds.
Point = record("Point", "text us seq")

ACCEPTED = "ISO 8601 (e.g. 2026-11-25T03:12:00, no zone = UTC), 'now', '15m ago', '2h ago', " \
           "'3d ago' or '@N' (right after event N)"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: 0001-01-01T00:00:00.000000Z and 9999-12-31T23:59:59.999999Z in UTC microseconds.
MIN_US = -62_135_596_800 * 1_000_000
MAX_US = 253_402_300_800 * 1_000_000 - 1
#: Event numbers are signed 64-bit in the store.
MAX_SEQ = 2**63 - 1

_RANGE = "years 0001-9999 UTC"
_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()


def to_us(dt: datetime) -> int:
    """A datetime (naive = UTC) -> UTC microseconds since 1970, exact (no float)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


# iso() runs once per event in a replay or audit of a whole log (a million calls), and
# datetime.fromtimestamp + strftime cost ~2 us each, which dominated those commands. So the
# date part is cached per day and the time of day comes from small precomputed tables; the
# result is the same string (with the year always four digits, which %Y does not give for
# years before 1000 on glibc).
_DAYS: dict[int, str] = {}
_HM = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SS = tuple(f"{s:02d}." for s in range(60))


def _day(days: int) -> str:
    """``YYYY-MM-DDT`` of a day number since 1970-01-01, cached (the cache stays small)."""
    if not MIN_US // 86_400_000_000 <= days <= MAX_US // 86_400_000_000:
        raise ValueError(f"a time {days} days from 1970-01-01 is outside {_RANGE}")
    d = date.fromordinal(days + _EPOCH_ORDINAL)
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"
    if len(_DAYS) >= 4096:
        _DAYS.clear()
    _DAYS[days] = text
    return text


def iso(us: int) -> str:
    """UTC microseconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (before 1970 too).

    ValueError outside years 0001-9999, which no ISO 8601 basic year can show.
    """
    secs = us // 1_000_000
    # (%-formatting: the fastest way to write a million of these)
    return "%s%06dZ" % (_SECONDS.get(secs) or second_head(secs), us - secs * 1_000_000)  # noqa: UP031


def second_head(secs: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a second since 1970, cached: :func:`iso` before the
    fraction (for writers that format many times themselves: events come in bursts, and most
    times share their second with another)."""
    head = _SECONDS.get(secs)
    if head is None:
        days, sod = divmod(secs, 86400)
        minute, sec = divmod(sod, 60)
        head = f"{_DAYS.get(days) or _day(days)}{_HM[minute]}{_SS[sec]}"
        if len(_SECONDS) >= 65_536:
            _SECONDS.clear()
        _SECONDS[secs] = head
    return head


_SECONDS: dict[int, str] = {}


def duration(seconds: float | None) -> str:
    """``1.1s``, ``4.5m``, ``3.2h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _q(text: str) -> str:
    """``text`` quoted for an error message, cut so a 5000-digit typo stays one short line."""
    return repr(text) if len(text) <= 60 else repr(text[:60]) + "..."


def _in_range(text: str, us: int) -> Point:
    if not MIN_US <= us <= MAX_US:
        raise ValueError(f"{_q(text)} is out of range ({_RANGE}); accepted: {ACCEPTED}")
    return Point(text, us, None)


def parse(text: str, now_us: int) -> Point:
    """Parse a time argument; ValueError naming the accepted forms if it is none of them.

    Only ValueError, for any text: the CLI turns it into a usage error (exit 2), and a huge
    number or a date beyond year 9999 is an operator's typo, not a crash.
    """
    try:
        return _parse(text, now_us)
    except ValueError:
        raise
    except ArithmeticError:  # OverflowError; belt and braces, the checks below prevent it
        raise ValueError(f"{_q(text)} is not a time; accepted: {ACCEPTED}") from None


def _parse(text: str, now_us: int) -> Point:
    t = text.strip()
    low = t.lower()
    if low == "now":
        return _in_range(text, now_us)
    if t.startswith("@"):
        digits = t[1:]
        if digits.isdigit() and digits.isascii():
            # Compare lengths first: int() of 5000 digits raises its own ValueError.
            if len(digits.lstrip("0")) > 19 or int(digits) > MAX_SEQ:
                raise ValueError(f"{_q(text)}: the event number must be at most {MAX_SEQ} "
                                 f"(2**63-1)")
            return Point(text, None, int(digits))
        raise ValueError(f"{_q(text)}: @N needs an event number; accepted: {ACCEPTED}")
    if low.endswith(" ago"):
        amount = low[:-4].strip()
        number, unit = amount[:-1].strip(), amount[-1:]
        if unit in _UNITS and number.isdigit() and number.isascii():
            # More than 19 digits of seconds is past any representable time anyway.
            if len(number.lstrip("0")) > 19:
                raise ValueError(f"{_q(text)} is out of range ({_RANGE}); accepted: {ACCEPTED}")
            return _in_range(text, now_us - int(number) * _UNITS[unit] * 1_000_000)
        raise ValueError(f"{_q(text)} is not a relative time; accepted: {ACCEPTED}")
    try:
        # Python 3.10's fromisoformat does not take a trailing Z.
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "zZ" and t else t)
    except ValueError:
        raise ValueError(f"{_q(text)} is not a time; accepted: {ACCEPTED}") from None
    # An offset can carry 0001-01-01 or 9999-12-31 outside the range in UTC.
    return _in_range(text, to_us(dt))


class WindowError(UsageError, ValueError):
    """``--since`` after ``--until``. A :class:`MembershipError`, so that wherever it is
    raised (the window is checked by the library, after option parsing) the CLI prints one
    line instead of a traceback; a ValueError, as the pure functions here raise."""


def check_window(since: Point | None, until: Point | None) -> None:
    """:class:`WindowError` (a ValueError) if ``--since`` is after ``--until``: such a window
    is always empty, which is far more likely a swapped pair of options than a question
    worth an empty answer.

    Only like is compared with like (two times, or two ``@N``): a time and an event number
    cannot be ordered without the log.
    """
    if since is None or until is None:
        return
    if since.us is not None and until.us is not None and since.us > until.us:
        raise WindowError(f"--since {_q(since.text)} ({iso(since.us)}) is after --until "
                          f"{_q(until.text)} ({iso(until.us)})")
    if since.seq is not None and until.seq is not None and since.seq > until.seq:
        raise WindowError(f"--since {_q(since.text)} is after --until {_q(until.text)}")


def reached(point: Point | None, seq: int, received_us: int) -> bool:
    """Whether an event (``seq``, ``received_us``) is at or before ``point``."""
    if point is None:
        return True
    if point.seq is not None:
        return seq <= point.seq
    return received_us <= point.us


def parse_duration(text: str, zero: bool = False) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d``, ``1w`` -> seconds (a plain number is
    seconds; ``zero``: 0 is allowed); ValueError naming the accepted forms otherwise. The one
    parser of every duration option (SPEC "Safety")."""
    t = str(text).strip().lower()
    unit = t[-1:] if t[-1:] in _UNITS else ""
    number = t[: len(t) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; accepted: a number of seconds, or "
                         f"with s, m, h, d or w (e.g. 90, 90s, 5m, 2h, 1d)") from None
    if value != value or not (0 <= value < 1e9 if zero else 0 < value < 1e9):
        raise ValueError(f"{text!r}: a duration must be {'0 or more' if zero else 'positive'} "
                         f"and below 1e9 seconds")
    return value * _UNITS.get(unit, 1)
