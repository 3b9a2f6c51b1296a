"""The one clock: every command that needs "now" reads it here (the pure core takes "now"
as an argument instead). Imports only ``time``: the handler reads it on its hot path."""

from __future__ import annotations

import time


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000
