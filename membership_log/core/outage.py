"""Riding out an outage: the delays between attempts, and one line when an outage begins and
one when it ends (with how long it lasted), however many attempts fail in between.

A long-running command (``alerts --follow``, ``serve``, ``ship --follow``) may retry for
hours; a line per attempt would bury everything else in its log, and no line at all would
hide the outage. Every one of them reports through :class:`Outage` and waits with
:class:`Backoff`.

Pure: the clock (seconds, monotonic) and the writer of whole lines are passed in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Backoff:
    """Retry delays: ``initial``, multiplied by ``factor`` after each failure, at most ``cap``
    seconds.

    No jitter, so tests can pin the sequence (1, 2, 4, ... 60). Each user has one client per
    server with at most one attempt in flight: there is no herd for jitter to spread.
    """

    def __init__(self, initial: float = 1.0, cap: float = 60.0, factor: float = 2.0) -> None:
        self.initial, self.cap, self.factor = initial, cap, factor
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt (and multiply the one after it)."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        return min(delay, self.cap)

    def reset(self) -> None:
        """After a success: the next failure waits ``initial`` again."""
        self._next = self.initial


class Outage:
    """Says once that something stopped working, and once that it works again.

    ``began`` is the first line's template, with ``{error}`` for the failure that began the
    outage; ``ended`` the last line's, with ``{lasted}`` (``"72 s"``) and ``{failures}`` (the
    failed attempts, the first included); ``fields`` fill any other names in either (a value
    is never read as a template). Thread-safe: ``serve`` reports from every request.
    """

    def __init__(self, write: Callable[[str], None], clock: Callable[[], float],
                 began: str = "{error} (retrying with backoff; reported again once it works)",
                 ended: str = "working again after {lasted} ({failures} failed attempts)",
                 **fields: object) -> None:
        self.write, self.clock = write, clock
        self.began, self.ended, self.fields = began, ended, fields
        self.since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: object) -> bool:
        """One failed attempt; reported (and True) only if it begins an outage."""
        with self._lock:
            self.failures += 1
            if self.since is not None:
                return False
            self.since = self.clock()
            line = self.began.format(error=error, **self.fields)
        self.write(line)
        return True

    def succeeded(self) -> bool:
        """One attempt that worked; reported (and True) only if it ends an outage."""
        with self._lock:
            if self.since is None:
                return False
            lasted = max(0.0, self.clock() - self.since)
            line = self.ended.format(lasted=f"{lasted:.0f} s", failures=self.failures,
                                     **self.fields)
            self.since, self.failures = None, 0
        self.write(line)
        return True
