"""A small client for Alertmanager's API v2, and the pieces ``membership alerts`` retries with.

Stdlib only (``http.client``): one POST of a JSON list is all the API needs, and the alert
sender runs for weeks under ``--follow``, where fewer dependencies mean fewer surprises.

Alertmanager semantics this relies on (checked against the real server in
tests/test_ops_alertmanager.py, tests/test_ops_live.py and tests/test_ops_hardening.py):

- An alert is identified by its label set; posting the same labels again updates it, and
  when the two overlap in time Alertmanager merges them, keeping the *earlier* startsAt.
- Without ``endsAt`` an alert is firing and Alertmanager sets its own ``endsAt`` to now +
  ``resolve_timeout`` (5 min by default): a sender must re-post open alerts well within
  that time (``--resend``), or they resolve by themselves.
- With ``endsAt`` in the past the alert is resolved; ``GET /api/v2/alerts`` stops listing it
  at once. Alertmanager sends the resolution on to receivers only for an alert it notified
  as firing: an alert that is resolved when it first arrives reaches no receiver at all.
- With ``endsAt`` in the future the alert fires (notified after the route's
  ``group_wait``) and resolves by itself at ``endsAt`` (that resolution is notified too).
- The API prints times with milliseconds (``2026-11-25T03:12:00.123Z``): an alert read back
  has lost the microseconds it was sent with (the notifications keep them).
- Alerts live in memory only: a restarted Alertmanager knows none of them until the
  sender re-posts.

Each POST has a total deadline (:data:`TIMEOUT_S`, connect to the last byte read, however
slowly an answer trickles in) and reads at most :data:`MAX_ANSWER` bytes of the answer.
A 4xx answer (but 408 and 429) is permanent: :class:`AlertmanagerRefused`, which the
sender does not retry; anything else that fails (5xx, refused or reset connections,
answers that are not HTTP or are cut short, the deadline) is :class:`AlertmanagerError`,
retried with backoff.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from ..core import labels
from ..core.errors import BadURL, MembershipError
from ..core.outage import Outage
from ..core.redact import mask_url
from ..core.timespec import iso  # RFC 3339 UTC with microseconds and Z, the log's own

ALERTNAME = "MembershipNodeDown"
#: A published head that contradicted an earlier one of its origin (see ops/alerts.py).
WITNESS_ALERTNAME = "MembershipWitnessConflict"

#: The whole exchange of one POST, in seconds: a batch is at most a few hundred KB, which a
#: healthy Alertmanager takes and answers in milliseconds.
TIMEOUT_S = 5.0

#: Alertmanager answers a POST with a few bytes of JSON (or a one-line error); nothing more
#: than this is read, whatever the other end sends.
MAX_ANSWER = 64 * 1024

#: 4xx answers that may succeed later (request timeout, too many requests): retried.
TRANSIENT_4XX = frozenset({408, 425, 429})

_CAUSES = {"failed": "Serf reported it failed", "left": "it left the cluster (Serf leave)",
           "operator": "an operator marked it down (membership-down)"}


class AlertmanagerError(MembershipError):
    """Alertmanager could not be reached or failed the post (one line, no password); worth
    retrying."""

    permanent = False


class AlertmanagerRefused(AlertmanagerError):
    """Alertmanager refused the post for good (a 4xx: wrong URL, credentials, bad alerts):
    posting the same again cannot help."""

    permanent = True


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _endpoint(url: str) -> tuple[str, dict[str, str]]:
    """The alerts endpoint under the base ``url``, and the headers (Basic auth from the URL's
    user info)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as e:
        raise BadURL(f"bad Alertmanager URL {mask_url(url)!r}: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadURL(
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


class _Deadline:
    """Cuts a connection ``seconds`` after it was made: a socket timeout bounds each read,
    not an answer that trickles in a byte at a time. ``shutdown`` wakes a blocked read."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn, self.expired = conn, False
        self.timer = threading.Timer(seconds, self._cut)
        self.timer.daemon = True
        self.timer.start()

    def _cut(self) -> None:
        self.expired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self.timer.cancel()


def _read_answer(response: http.client.HTTPResponse) -> tuple[bytes, bool]:
    """At most MAX_ANSWER bytes of the body, and whether the body was cut short (the
    connection closed before its Content-Length)."""
    chunks: list[bytes] = []
    got = 0
    while got < MAX_ANSWER:
        chunk = response.read(min(16384, MAX_ANSWER - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    cut = got < MAX_ANSWER and bool(response.length)  # closed with bytes still owed
    return b"".join(chunks), cut


def _refused(status: int, where: str, endpoint: str, detail: str) -> AlertmanagerRefused:
    hint = "--to takes Alertmanager's base URL (e.g. http://HOST:9093, not .../api/v2/alerts)"
    if status in (401, 403):
        hint = ("check the user and password (--to http://USER:PASSWORD@HOST:9093); " + hint)
    return AlertmanagerRefused(
        f"Alertmanager at {where} answered HTTP {status}" + (f": {detail}" if detail else "")
        + f" to POST {mask_url(endpoint)}; not retried: {hint}")


def post_alerts(url: str, alerts: list[dict[str, Any]], timeout: float = TIMEOUT_S) -> None:
    """POST ``alerts`` to ``url``/api/v2/alerts (``url`` is Alertmanager's base URL), all of
    it within ``timeout`` seconds.

    Raises :class:`AlertmanagerRefused` on a permanent 4xx, :class:`AlertmanagerError` on
    anything else that failed (a 5xx, a refused connection, the deadline, an answer that is
    not HTTP or is cut short, a bad URL), each one line naming the (masked) URL.
    """
    endpoint, headers = _endpoint(url)
    where = mask_url(url)
    body = json.dumps(alerts).encode("utf-8")
    parts = urllib.parse.urlsplit(endpoint)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    late = f"Alertmanager at {where} did not answer within {timeout:g} s"
    assert parts.hostname  # _endpoint refuses a URL without one
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    deadline = _Deadline(conn, timeout)
    try:
        conn.request("POST", parts.path, body, headers)
        response = conn.getresponse()
        answer, cut = _read_answer(response)
        if deadline.expired:
            raise AlertmanagerError(late)
        status = response.status
    except http.client.HTTPException as e:  # BadStatusLine, IncompleteRead, LineTooLong...
        if deadline.expired:
            raise AlertmanagerError(late) from None
        raise AlertmanagerError(
            f"Alertmanager at {where} gave an answer that is not HTTP or was cut short "
            f"({type(e).__name__}: {_one_line(str(e), 80)})") from None
    except TimeoutError:
        raise AlertmanagerError(late) from None
    except OSError as e:
        if deadline.expired:
            raise AlertmanagerError(late) from None
        raise AlertmanagerError(
            f"cannot reach Alertmanager at {where}: {_one_line(e.strerror or str(e))}") from None
    finally:
        deadline.cancel()
        conn.close()
    detail = _one_line(answer.decode("utf-8", "replace"))
    if 200 <= status < 300:
        if cut:  # accepted, but the answer did not arrive whole: post again to be sure
            raise AlertmanagerError(f"Alertmanager at {where} answered HTTP {status}, cut "
                                    f"short")
        return
    if 300 <= status < 500 and status not in TRANSIENT_4XX:
        raise _refused(status, where, endpoint, detail)
    raise AlertmanagerError(f"Alertmanager at {where} answered HTTP {status}"
                            + (f": {detail}" if detail else ""))


def outage_log(write: Callable[[str], None],
               clock: Callable[[], float] = time.monotonic) -> Outage:
    """The reporter of an Alertmanager outage: once when it begins, once when it ends."""
    return Outage(write, clock,
                  began="{error} (retrying with backoff; reported again once it works)",
                  ended="Alertmanager reachable again after {lasted} ({failures} failed "
                        "attempts)")


def alert_for(incident: Mapping[str, Any], observer: str | None,
              over_until_us: int | None = None, severity: str | None = None,
              generator_url: str | None = None) -> dict[str, Any]:
    """The ``MembershipNodeDown`` alert for one incident record
    ``{"node", "cause", "down_at_us", "up_at_us" (None while open), "observer"}``.

    ``startsAt`` is the exact down time from the log, not the time of sending, so a late or
    re-sent alert still says when the node went down; ``endsAt`` (the up time) is set only
    once the incident is closed. ``observer`` adds an ``observer`` label (a node store: each
    node's view is its own alert); ``None`` leaves it out (the central store's merged view).

    ``over_until_us`` (a closed incident never delivered before): Alertmanager would notify
    no receiver of an alert that arrives resolved, so it is sent firing until then (its
    ``endsAt``), as its own alert (an ``incident`` label, its exact start: it must not merge
    with the node's next incident, which Alertmanager would give this one's earlier start),
    the end it really had in the ``ended_at`` annotation and the text.

    ``severity`` is the ``severity`` label (by cause: see ``membership alerts``);
    ``generator_url`` the alert's ``generatorURL`` (where the dashboard is).
    """
    node, cause = str(incident["node"]), str(incident["cause"])
    down, up = int(incident["down_at_us"]), incident.get("up_at_us")
    alert_labels = {"alertname": ALERTNAME, "node": labels.clean(node),
                    "cause": labels.clean(cause)}
    if observer:
        alert_labels["observer"] = labels.clean(observer)
    if severity:
        alert_labels["severity"] = labels.clean(severity)
    why = _CAUSES.get(cause, f"cause {cause}")
    summary = f"{node} is down ({cause})"
    description = f"Node {node} is down since {iso(down)}: {why}."
    if up is not None:
        description = (f"Node {node} was down from {iso(down)} to {iso(int(up))} "
                       f"({(int(up) - down) / 1e6:g} s): {why}.")
    if up is not None and over_until_us is not None:  # already over
        alert_labels["incident"] = iso(down)
        summary = f"{node} was down ({cause}): already over, back at {iso(int(up))}"
        description += (f" It was already over when it could first be delivered, so it is "
                        f"sent firing until {iso(int(over_until_us))} and then resolves "
                        f"by itself (Alertmanager notifies no alert it never saw firing).")
    if cause == "failed":
        description += (" Serf reports a failure only after its suspicion timeout, so the "
                        "node went down somewhat earlier.")
    seen_by = incident.get("observer")
    if seen_by:
        description += f" Seen by {seen_by}."
    annotations = {"summary": labels.clean(summary), "description": labels.clean(description)}
    if up is not None and over_until_us is not None:
        annotations["ended_at"] = iso(int(up))
    alert: dict[str, Any] = {"labels": alert_labels, "annotations": annotations,
                             "startsAt": iso(down)}
    if generator_url:
        alert["generatorURL"] = generator_url
    if up is not None and over_until_us is not None:
        alert["endsAt"] = iso(int(over_until_us))
    elif up is not None:
        alert["endsAt"] = iso(int(up))
    return alert


def conflict_alert(conflict: Mapping[str, Any], ends_at_us: int,
                   generator_url: str | None = None) -> dict[str, Any]:
    """The ``MembershipWitnessConflict`` alert for one witness conflict record ``{"origin"
    (whose head), "observer" (the witness), "at_us" (when it recorded the head), "seq" (the
    head's event in the witness's log), "why" (the fold's warning)}``.

    A conflict is a moment, not a stretch: the alert starts at the exact receive time and
    ends at ``ends_at_us`` (for news, a while after delivery, so that Alertmanager, which
    notifies no alert it never saw firing, notifies it; for history, at once). Its own
    ``conflict`` label (the exact time) keeps two conflicts of one origin two alerts. A
    rewritten history is evidence against a node, never planned: its severity is
    ``critical``."""
    origin, observer = str(conflict["origin"]), str(conflict["observer"])
    at = int(conflict["at_us"])
    alert_labels = {"alertname": WITNESS_ALERTNAME, "origin": labels.clean(origin),
                    "observer": labels.clean(observer), "conflict": iso(at),
                    "severity": "critical"}
    summary = f"{origin} published a head that contradicts one {observer} saw before"
    description = (f"{observer} recorded, at {iso(at)} (event {conflict['seq']} of its "
                   f"log): {conflict['why']}. {origin}'s log was rewritten, truncated or "
                   f"re-created (or someone sent a false head); membership verify on the "
                   f"central store holds its shipped log to every head witnessed for it.")
    alert = {"labels": alert_labels,
             "annotations": {"summary": labels.clean(summary),
                             "description": labels.clean(description)},
             "startsAt": iso(at), "endsAt": iso(max(ends_at_us, at))}
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert
