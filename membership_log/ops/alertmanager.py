"""A small client for Alertmanager's API v2, and the pieces ``membership alerts`` retries with.

Stdlib only (``urllib``): one POST of a JSON list is all the API needs, and the alert sender
runs for weeks under ``--follow``, where fewer dependencies mean fewer surprises.

Alertmanager semantics this relies on (checked against the real server in
tests/test_ops_alertmanager.py):

- An alert is identified by its label set; posting the same labels again updates it.
- Without ``endsAt`` an alert is firing and Alertmanager sets its own ``endsAt`` to now +
  ``resolve_timeout`` (5 min by default): a sender must re-post open alerts well within
  that time (``--resend``), or they resolve by themselves.
- With ``endsAt`` in the past the alert is resolved; ``GET /api/v2/alerts`` stops listing it
  at once, while Alertmanager still sends the resolution to receivers.
- The API prints times with milliseconds (``2026-11-25T03:12:00.123Z``): an alert read back
  has lost the microseconds it was sent with.
- Alerts live in memory only: a restarted Alertmanager knows none of them until the
  sender re-posts.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..core import labels
from ..core.errors import MembershipError
from ..core.redact import mask_url

ALERTNAME = "MembershipNodeDown"

_CAUSES = {"failed": "Serf reported it failed", "left": "it left the cluster (Serf leave)",
           "operator": "an operator marked it down (membership-down)"}


class AlertmanagerError(MembershipError):
    """Alertmanager could not be reached or refused the alerts (one line, no password)."""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _endpoint(url: str) -> tuple[str, dict[str, str]]:
    """The alerts endpoint under the base ``url``, and the headers (Basic auth from the URL's
    user info, which urllib does not apply by itself)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as e:
        raise AlertmanagerError(f"bad Alertmanager URL {mask_url(url)!r}: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertmanagerError(
            f"bad Alertmanager URL {mask_url(url)!r}: expected http(s)://HOST[:PORT][/PATH]")
    headers = {"Content-Type": "application/json"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path.rstrip("/") + "/api/v2/alerts"
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")), headers


def post_alerts(url: str, alerts: list[dict[str, Any]], timeout: float = 5.0) -> None:
    """POST ``alerts`` to ``url``/api/v2/alerts (``url`` is Alertmanager's base URL).

    Raises :class:`AlertmanagerError` with one line naming the (masked) URL on an HTTP error,
    a refused connection, a timeout or a bad URL, so the caller can log it and retry.
    """
    endpoint, headers = _endpoint(url)
    where = mask_url(url)
    body = json.dumps(alerts).encode("utf-8")
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as e:
        detail = _one_line(e.read().decode("utf-8", "replace")) if e.fp else ""
        raise AlertmanagerError(
            f"Alertmanager at {where} answered HTTP {e.code}"
            + (f": {detail}" if detail else "")) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise AlertmanagerError(
                f"Alertmanager at {where} did not answer within {timeout:g} s") from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise AlertmanagerError(
            f"cannot reach Alertmanager at {where}: {_one_line(str(text))}") from None
    except TimeoutError:
        raise AlertmanagerError(
            f"Alertmanager at {where} did not answer within {timeout:g} s") from None
    except (OSError, ValueError) as e:  # a reset connection, a malformed answer
        raise AlertmanagerError(
            f"cannot talk to Alertmanager at {where}: {_one_line(str(e))}") from None


def rfc3339(us: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC with microseconds and ``Z``
    (``2026-11-25T03:12:00.123456Z``), the log's own precision."""
    seconds, micro = divmod(us, 1_000_000)
    when = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{micro:06d}Z"


def alert_for(incident: Mapping[str, Any], observer: str | None) -> dict[str, Any]:
    """The ``MembershipNodeDown`` alert for one incident record
    ``{"node", "cause", "down_at_us", "up_at_us" (None while open), "observer"}``.

    ``startsAt`` is the exact down time from the log, not the time of sending, so a late or
    re-sent alert still says when the node went down; ``endsAt`` (the up time) is set only
    once the incident is closed. ``observer`` adds an ``observer`` label (a node store: each
    node's view is its own alert); ``None`` leaves it out (the central store's merged view).
    """
    node, cause = str(incident["node"]), str(incident["cause"])
    down, up = int(incident["down_at_us"]), incident.get("up_at_us")
    alert_labels = {"alertname": ALERTNAME, "node": labels.clean(node),
                    "cause": labels.clean(cause)}
    if observer:
        alert_labels["observer"] = labels.clean(observer)
    why = _CAUSES.get(cause, f"cause {cause}")
    description = f"Node {node} is down since {rfc3339(down)}: {why}."
    if up is not None:
        description = (f"Node {node} was down from {rfc3339(down)} to {rfc3339(int(up))} "
                       f"({(int(up) - down) / 1e6:g} s): {why}.")
    if cause == "failed":
        description += (" Serf reports a failure only after its suspicion timeout, so the "
                        "node went down somewhat earlier.")
    seen_by = incident.get("observer")
    if seen_by:
        description += f" Seen by {seen_by}."
    alert: dict[str, Any] = {
        "labels": alert_labels,
        "annotations": {"summary": labels.clean(f"{node} is down ({cause})"),
                        "description": labels.clean(description)},
        "startsAt": rfc3339(down),
    }
    if up is not None:
        alert["endsAt"] = rfc3339(int(up))
    return alert


class Backoff:
    """Retry delays: ``initial``, doubled after each failure, at most ``cap`` seconds.

    No jitter, so tests can pin the sequence (1, 2, 4, ... 60). One sender per store, at most
    one post in flight: there is no herd for jitter to spread.
    """

    def __init__(self, initial: float = 1.0, cap: float = 60.0, factor: float = 2.0) -> None:
        self.initial, self.cap, self.factor = initial, cap, factor
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt (and double the one after it)."""
        delay = self._next
        self._next = min(self._next * self.factor, self.cap)
        return min(delay, self.cap)

    def reset(self) -> None:
        """After a success: the next failure waits ``initial`` again."""
        self._next = self.initial


class OutageLog:
    """Says once that Alertmanager became unreachable and once that it is back.

    With ``--follow`` a sender may retry for hours; one line per retry would bury everything
    else in the log. ``write`` receives whole lines (without newline); ``clock`` is injectable
    for tests.
    """

    def __init__(self, write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.clock = write, clock
        self.since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: Exception | str) -> None:
        """One failed attempt; reported only if it starts an outage."""
        self.failures += 1
        if self.since is None:
            self.since = self.clock()
            self.write(f"{error} (retrying with backoff; reported again once it works)")

    def succeeded(self) -> None:
        """One successful attempt; reported only if it ends an outage."""
        if self.since is not None:
            lasted = self.clock() - self.since
            self.write(f"Alertmanager reachable again after {lasted:.0f} s "
                       f"({self.failures} failed attempts)")
        self.since, self.failures = None, 0
