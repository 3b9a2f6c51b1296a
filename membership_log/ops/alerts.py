"""``membership alerts``: every incident of the log sent to Alertmanager, with its exact times.

Two halves. :func:`plan` is pure: incidents, what was delivered, the clock and the options
in; what to post out. :class:`Sender` and :func:`follow` do the I/O: read the store, post
with :func:`membership_log.ops.alertmanager.post_alerts`, keep the delivery progress in the
store's ``alert_delivery`` table, retry with backoff.

Each incident is alert ``MembershipNodeDown`` with labels ``node``, ``cause`` and, for one
node's view (a node store, or ``--observer`` on the central store), ``observer``.
``startsAt`` is the receive time of the event that took the node down, ``endsAt`` that of the
event that brought it back: exact to the microsecond, not "when someone noticed".

What is sent, and when (:func:`plan`):

- an open incident is sent firing once it has lasted ``--min-duration``, then re-sent every
  ``--resend`` seconds: without ``endsAt`` Alertmanager resolves an alert by itself after its
  ``resolve_timeout`` (5 min), and a restarted Alertmanager knows no alert at all;
- a closed incident that was sent firing is sent resolved once, with its exact ``endsAt``
  (a resolution is never held back by ``--min-duration``);
- a closed incident never sent before (it was over before anything could deliver it: node1
  failed and was back 2 s later, while ``alerts`` or Alertmanager was down, or between two
  one-pass runs) is sent once, if it lasted ``--min-duration``, as an alert that is *already
  over* (:data:`OVER`; see below); one that ended more than a day ago
  (:data:`OVER_MAX_AGE_US`: a first run over a long log) is history, sent resolved, which
  Alertmanager records and notifies nobody of;
- Alertmanager keys alerts by their labels, and the same node and cause go down again and
  again: the alerts of one label set are posted oldest first, ending with its current open
  incident, so that an old resolution posted late never overwrites a newer firing alert.

Incidents already over. Checked against the real Alertmanager (tests/test_ops_hardening.py):
an alert that arrives resolved (``endsAt`` in the past) is never notified: Alertmanager
sends a resolution only for an alert it notified as firing, so posting such an incident with
its true ``endsAt`` reached no receiver at all. Posted firing with ``endsAt`` in the future,
an alert is notified after the route's ``group_wait`` and resolves by itself at ``endsAt``,
notified again. So an incident already over is posted firing with ``startsAt`` exact and
``endsAt`` ``--over-hold`` seconds (300 by default: above Alertmanager's default
``group_wait`` of 30 s and most routes', which must be shorter than it for the firing
notification to go out) after delivery, and its annotations say that it was already over
and when it ended (``ended_at``, to the microsecond). It is its own alert: an ``incident``
label holding its exact start. Without it, Alertmanager would merge it with the node's next
incident (same labels, overlapping in time: the merge keeps the earlier ``startsAt``), and
the current outage would show the start of the old one. Delivered once, recorded as over
(never sent again, never left firing: Alertmanager ends it at ``endsAt`` even if ``alerts``
is never run again). An incident that was delivered firing but closed within ``group_wait``
is Alertmanager's to suppress, as it suppresses Prometheus's short alerts.

Identity (the key kept in ``alert_delivery``, with the target, the Alertmanager URL with its
password masked):

- a node store: ``("", node, down_seq)``, the event that began the incident;
- the central store with ``--observer O``: ``(O, node, down_seq)`` in O's log;
- the central store merged: ``("", node, down_at)``. A cluster-wide incident (a node is down
  while any observer sees it down) has no event number of its own, so its start, the first
  report's receive time in microseconds, stands in the ``down_seq`` column: merged incidents
  of one node never overlap, so no two share a start. ``""`` is never the name of a shipped
  log. If a log shipped late reports the same outage earlier, the merged incident gets a new,
  earlier start: it is sent as new (same labels, so Alertmanager updates the one alert) and
  the old key is simply never sent again.

Delivery is recorded after Alertmanager accepted the post: a crash between the two re-sends
that batch once (Alertmanager treats an equal alert as an update: no new notification). So a
restart neither loses an incident nor repeats one already delivered. A store that cannot
take the record (locked by a long writer, read-only for a while) does not make ``--follow``
post again: what was accepted is kept in memory (:attr:`Sender.unrecorded`) and counts as
delivered until it is recorded.

Witness conflicts (SPEC "Witnessed history"). A head a node published that contradicts an
earlier one of the same origin, as a log's fold found it (the ``witness_head`` rows with a
``conflict``), is a second kind of alert: ``MembershipWitnessConflict``, labels ``origin``
(whose head), ``observer`` (the witness) and ``conflict`` (its exact time, so that two
conflicts are two alerts). It is a moment, not a stretch: sent once (:func:`plan_conflicts`),
firing from the receive time of the head until ``--over-hold`` after delivery (so that
Alertmanager notifies it), or, older than a day, posted resolved like old incidents. Its
delivery is kept in ``alert_delivery`` under the log that recorded it, as ``(log, origin,
-seq)``: the head's origin in ``node`` and minus its event's seq as the ident, never an
incident's (a seq or a start time: positive).

Failures: Alertmanager's permanent refusals (a 4xx: wrong URL, credentials) end the command
in one line; everything else is an outage, reported once when it begins and once when it
ends (:class:`membership_log.core.outage.Outage`), and retried with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..core.clock import now_us
from ..core.errors import StoreError
from ..core.outage import Backoff, Outage
from ..core.redact import mask_url
from ..core.witness import CONFLICT as CONFLICT_PREFIX
from ..stores.protocol import Store
from . import alertmanager
from .alertmanager import AlertmanagerError

#: Alerts per POST: Alertmanager takes any number, but a first run on a long history would
#: otherwise post tens of thousands in one body.
BATCH = 500

FIRING = "firing"      # first delivery of an open incident
RESEND = "resend"      # an open incident again, so that Alertmanager keeps it firing
RESOLVED = "resolved"  # a closed incident, with its endsAt
OVER = "over"          # a closed incident never delivered: firing for --over-hold, then over
CONFLICT = "conflict"  # a witness conflict: firing for --over-hold, then over

#: ``--over-hold``: how long an incident already over is shown firing (seconds).
OVER_HOLD_S = 300.0
#: An incident never delivered that ended longer ago than this is history, not news: it is
#: posted resolved (recorded; Alertmanager notifies nobody), so that a first run over a
#: year of log does not page anyone for a year of outages.
OVER_MAX_AGE_US = 24 * 3600 * 1_000_000

#: ``(origin, node, id)``: ``id`` is the down event's seq, or the start time (µs) when merged.
Key = tuple[str, str, int]


@dataclass(frozen=True)
class Incident:
    """An incident as alerts sees it. ``observer`` is the ``observer`` label (None in the
    central store's merged view); ``seen_by`` the observers that reported it."""

    key: Key
    node: str
    cause: str
    observer: str | None
    down_at: int
    up_at: int | None
    seen_by: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, str, str | None]:
        return (self.node, self.cause, self.observer)


@dataclass(frozen=True)
class Conflict:
    """A witness conflict as alerts sees it: ``key`` ``(log, origin, -seq)``, the head's
    ``origin``, the ``observer`` that recorded it, when (``at``, µs), its event's ``seq`` in
    that log and ``why`` (the fold's warning)."""

    key: Key
    origin: str
    observer: str
    at: int
    seq: int
    why: str


@dataclass(frozen=True)
class Delivery:
    """One ``alert_delivery`` row: when the incident was first delivered, and when its
    resolution was (None while only its firing alert was)."""

    firing_at: int
    resolved_at: int | None = None


@dataclass(frozen=True)
class Send:
    incident: Incident | Conflict  # a Conflict with kind CONFLICT (or RESOLVED: history)
    kind: str  # FIRING, RESEND, RESOLVED, OVER or CONFLICT


@dataclass(frozen=True)
class Plan:
    """What to post now, in order, and when a pass is next due even if the log does not
    change (µs; None: only a change can make anything due)."""

    sends: list[Send]
    wake_at: int | None


def plan(incidents: Iterable[Incident], delivered: Mapping[Key, Delivery],
         last_sent: Mapping[Key, int], now: int, min_duration_us: int = 0,
         resend_us: int = 60_000_000, over_max_age_us: int = OVER_MAX_AGE_US) -> Plan:
    """The alerts due at ``now`` (µs). ``delivered``: the store's record; ``last_sent``: when
    this process last posted each open incident (empty after a restart, so every open
    incident is re-sent at once: Alertmanager may have restarted too)."""
    sends: dict[Key, Send] = {}
    wake: list[int] = []
    newest: dict[tuple, Incident] = {}
    for inc in incidents:
        current = newest.get(inc.labels)
        if current is None or inc.down_at >= current.down_at:
            newest[inc.labels] = inc
        d = delivered.get(inc.key)
        if inc.up_at is not None:
            if d is not None and d.resolved_at is not None:
                continue  # delivered, over: never again
            if d is None and inc.up_at - inc.down_at < min_duration_us:
                continue  # too short to alert on, and never announced
            # Never announced: Alertmanager would notify nobody of it arriving resolved, so
            # it goes out already over (unless it is old history).
            news = d is None and now - inc.up_at <= over_max_age_us
            sends[inc.key] = Send(inc, OVER if news else RESOLVED)
        elif d is None or d.resolved_at is not None:
            # Never delivered (or, after a rebuild that reopened it, delivered as over).
            due = inc.down_at + min_duration_us
            if now >= due:
                sends[inc.key] = Send(inc, FIRING if d is None else RESEND)
            else:
                wake.append(due)
        else:
            last = last_sent.get(inc.key)
            if last is None or now - last >= resend_us:
                sends[inc.key] = Send(inc, RESEND)
            else:
                wake.append(last + resend_us)
    # End each label set with its current open incident, already announced (see the module
    # docstring): Alertmanager keeps one alert per label set.
    # (An OVER alert has labels of its own: it never hides another.)
    for labels in {s.incident.labels for s in sends.values()
                   if s.kind != OVER and isinstance(s.incident, Incident)}:
        inc = newest[labels]
        d = delivered.get(inc.key)
        if (inc.up_at is None and inc.key not in sends and d is not None
                and d.resolved_at is None):
            sends[inc.key] = Send(inc, RESEND)
    ordered = sorted(sends.values(), key=_by_start)
    return Plan(ordered, min(wake) if wake else None)


def _by_start(send: Send) -> tuple:
    inc = send.incident
    assert isinstance(inc, Incident)  # plan() sends incidents (conflicts are planned apart)
    return (inc.down_at, inc.key)


def plan_conflicts(conflicts: Iterable[Conflict], delivered: Mapping[Key, Delivery], now: int,
                   over_max_age_us: int = OVER_MAX_AGE_US) -> list[Send]:
    """The witness conflicts due at ``now``: each one never delivered, once, oldest first;
    news as :data:`CONFLICT`, one older than ``over_max_age_us`` as history
    (:data:`RESOLVED`: recorded by Alertmanager, notified to nobody)."""
    return [Send(c, CONFLICT if now - c.at <= over_max_age_us else RESOLVED)
            for c in sorted(conflicts, key=lambda c: (c.at, c.key)) if c.key not in delivered]


def recorded(sends: Iterable[Send], delivered: Mapping[Key, Delivery],
             now: int) -> dict[Key, Delivery]:
    """The ``alert_delivery`` rows once ``sends`` were accepted at ``now``."""
    out = {}
    for s in sends:
        d = delivered.get(s.incident.key)
        firing_at = d.firing_at if d is not None else now
        out[s.incident.key] = Delivery(firing_at, now if s.kind in _DONE else None)
    return out


#: The ``severity`` label by cause (SPEC "Deployment"): a failure pages; a graceful leave
#: and an operator's own mark are planned, and only warn. ``--severity CAUSE=LEVEL``
#: changes one.
SEVERITY = {"failed": "critical", "left": "warning", "operator": "warning"}

#: Kinds after whose delivery nothing more is sent for that key.
_DONE = (RESOLVED, OVER, CONFLICT)


def alert(send: Send, now: int | None = None, over_hold_us: int = int(OVER_HOLD_S * 1e6),
          severity: Mapping[str, str] = SEVERITY, generator_url: str | None = None) -> dict:
    """The Alertmanager API v2 alert of one send (an open incident: no ``endsAt``; one
    already over: firing until ``now`` + ``over_hold_us``), its ``severity`` label by cause
    and, if the dashboard's address is known, its ``generatorURL``."""
    inc = send.incident
    if isinstance(inc, Conflict):
        now = now if now is not None else now_us()
        return alertmanager.conflict_alert(
            {"origin": inc.origin, "observer": inc.observer, "at_us": inc.at, "seq": inc.seq,
             "why": inc.why}, now + over_hold_us if send.kind == CONFLICT else inc.at,
            generator_url)
    up = inc.up_at if send.kind in (RESOLVED, OVER) else None
    until = None
    if send.kind == OVER:
        until = (now if now is not None else now_us()) + over_hold_us
    return alertmanager.alert_for({"node": inc.node, "cause": inc.cause,
                                   "down_at_us": inc.down_at, "up_at_us": up,
                                   "observer": ", ".join(inc.seen_by)}, inc.observer, until,
                                  severity.get(inc.cause, "warning"), generator_url)


# -- reading the store -------------------------------------------------------------------------


def read_incidents(store: Store, observer: str | None = None,
                   exclude: tuple = ()) -> tuple[str, list[Incident]]:
    """The origin under which deliveries are kept, and every incident of the view (but those
    of a cause in ``exclude``): the same incidents ``audit`` reports
    (:func:`membership_log.history.api.incidents_of`)."""
    from ..history import api as history
    from ..stores.node import NodeStore
    from ..stores.protocol import NODE

    found = [i for i in history.incidents_of(store, observer) if i.cause not in exclude]
    scope = store.scope(observer)
    if scope.origins == (NODE,):
        me = store.origin_name() if isinstance(store, NodeStore) else None  # it is one
        return NODE, [Incident((NODE, i.node, i.down_seq), i.node, i.cause,
                               i.observers[0] if i.observers else (me or None), i.down_at,
                               i.up_at, i.observers) for i in found]
    if not scope.merged:
        assert observer is not None  # a central store's one log: the observer named it
        return observer, [Incident((observer, i.node, i.down_seq), i.node, i.cause, observer,
                                   i.down_at, i.up_at, i.observers) for i in found]
    return "", [Incident(("", i.node, i.down_at), i.node, i.cause, None, i.down_at, i.up_at,
                         i.observers) for i in found]


def read_conflicts(store: Store, observer: str | None = None) -> list[Conflict]:
    """The witness conflicts of the view: those the fold found in each log the view covers
    (only those ``observer`` recorded, on a node store with ``--observer``)."""
    from ..history import api as history

    scope = history.scope_of(store, observer)
    out = []
    for log in scope.origins:
        for _, seq, at, obs, origin, _, _, why in store.witnessed_heads(log=log):
            if why is None or (scope.observer is not None and obs != scope.observer):
                continue
            out.append(Conflict((log, origin, -seq), origin, obs, at, seq,
                                why[len(CONFLICT_PREFIX):] if why.startswith(CONFLICT_PREFIX)
                                else why))
    return out


def target_of(url: str) -> str:
    """How a target is named in ``alert_delivery``: its URL, password masked (the store is
    not the place for it)."""
    return mask_url(url).rstrip("/")


# -- the I/O -----------------------------------------------------------------------------------



@dataclass
class Outcome:
    """One pass: the sends delivered (in order) and when the next is due."""

    delivered: list[Send] = field(default_factory=list)
    wake_at: int | None = None


class Sender:
    """Passes over one store for one Alertmanager. Each pass opens the store, reads, closes;
    posts; then records what was accepted (a short write transaction per batch)."""

    def __init__(self, db_url: str, to: str, observer: str | None = None,
                 min_duration_s: float = 0.0, resend_s: float = 60.0,
                 post: Callable[[str, list], None] = alertmanager.post_alerts,
                 clock: Callable[[], int] = now_us, over_hold_s: float = OVER_HOLD_S,
                 severity: Mapping[str, str] | None = None, generator_url: str | None = None,
                 exclude: tuple = ()) -> None:
        alertmanager._endpoint(to)  # a bad URL is an error before anything else
        self.severity = {**SEVERITY, **(severity or {})}
        self.generator_url = generator_url
        self.exclude = tuple(exclude)
        self.db_url, self.to, self.observer = db_url, to, observer
        self.target = target_of(to)
        self.min_duration_us = int(min_duration_s * 1e6)
        self.resend_us = int(resend_s * 1e6)
        self.over_hold_us = int(over_hold_s * 1e6)
        self.post, self.clock = post, clock
        #: When this process last posted each open incident (µs).
        self.last_sent: dict[Key, int] = {}
        #: Accepted by Alertmanager, not yet in the store (it could not be written): counted
        #: as delivered, so nothing is posted again for want of its record.
        self.unrecorded: dict[Key, Delivery] = {}

    def _open(self) -> Store:
        from ..history import api as history

        return history.open_store(self.db_url)

    def heads(self) -> dict[str, int]:
        """The store's change token (see :func:`membership_log.history.api.heads`)."""
        from ..history import api as history

        with self._open() as store:
            return history.heads(store)

    def record(self) -> None:
        """Write what was accepted and not yet recorded (a StoreError keeps it in memory)."""
        if not self.unrecorded:
            return
        rows = dict(self.unrecorded)
        by_origin: dict[str, list] = {}
        for (origin, node, ident), d in rows.items():
            by_origin.setdefault(origin, []).append((node, ident, d.firing_at, d.resolved_at))
        with self._open() as store:
            for origin, batch in by_origin.items():
                store.record_alert_deliveries(self.target, origin, batch)
        for key in rows:
            if self.unrecorded.get(key) == rows[key]:
                del self.unrecorded[key]

    def run_pass(self, on_sent: Callable[[list[Send]], None] | None = None) -> Outcome:
        """Post everything due. Raises :class:`AlertmanagerError` (what was accepted before
        the failure is recorded) or :class:`StoreError` (what was accepted is kept in
        :attr:`unrecorded` until a later pass can record it)."""
        with self._open() as store:
            origin, incs = read_incidents(store, self.observer, self.exclude)
            conflicts = read_conflicts(store, self.observer)
            delivered = {}
            for o in {origin} | {c.key[0] for c in conflicts}:
                delivered.update({(o, node, ident): Delivery(f, r) for (node, ident), (f, r)
                                  in store.alert_deliveries(self.target, o).items()})
        logs = {origin} | {c.key[0] for c in conflicts}
        delivered.update({k: d for k, d in self.unrecorded.items() if k[0] in logs})
        now = self.clock()
        p = plan(incs, delivered, self.last_sent, now, self.min_duration_us, self.resend_us)
        p = Plan(p.sends + plan_conflicts(conflicts, delivered, now), p.wake_at)
        out = Outcome(wake_at=p.wake_at)
        unwritable: StoreError | None = None
        try:
            self.record()
        except StoreError as e:
            unwritable = e
        for i in range(0, len(p.sends), BATCH):
            chunk = p.sends[i:i + BATCH]
            now = self.clock()
            self.post(self.to, [alert(s, now, self.over_hold_us, self.severity,
                                         self.generator_url) for s in chunk])
            rows = recorded(chunk, delivered, now)
            delivered.update(rows)
            self.unrecorded.update(rows)
            for s in chunk:
                if s.kind in _DONE:
                    self.last_sent.pop(s.incident.key, None)
                else:
                    self.last_sent[s.incident.key] = now
            out.delivered.extend(chunk)
            if on_sent is not None:
                on_sent(chunk)
            if unwritable is None:
                try:
                    self.record()
                except StoreError as e:
                    unwritable = e
        if unwritable is not None:
            raise unwritable
        if out.delivered:
            # An open incident posted now is next due one --resend later.
            soonest = min((self.last_sent[s.incident.key] + self.resend_us
                           for s in out.delivered if s.kind in (FIRING, RESEND)), default=None)
            if soonest is not None:
                out.wake_at = soonest if out.wake_at is None else min(out.wake_at, soonest)
        return out


def describe(send: Send) -> str:
    """One line for the operator's log about a delivered alert (resends are not logged)."""
    from ..core.timespec import duration, iso
    from ..render.tables import printable

    inc = send.incident
    if isinstance(inc, Conflict):
        return (f"{printable(inc.origin)}: witness conflict recorded by {printable(inc.observer)}"
                f" at {iso(inc.at)} (event {inc.seq}): {printable(inc.why)}"
                + ("" if send.kind == CONFLICT else " (history: sent resolved)"))
    who = printable(inc.node)
    if send.kind == OVER and inc.up_at is not None:
        return (f"{who} {inc.cause}: down {iso(inc.down_at)} to {iso(inc.up_at)} "
                f"({duration((inc.up_at - inc.down_at) / 1e6)}), already over: sent firing "
                f"for --over-hold, then resolved by Alertmanager")
    if send.kind == RESOLVED and inc.up_at is not None:
        return (f"{who} {inc.cause}: resolved (down {iso(inc.down_at)} to "
                f"{iso(inc.up_at)}, {duration((inc.up_at - inc.down_at) / 1e6)})")
    again = " (again: the log still has it open)" if send.kind == RESEND else ""
    return f"{who} {inc.cause}: firing since {iso(inc.down_at)}{again}"


def once(sender: Sender, retries: int = 4, backoff: Backoff | None = None,
         sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """One pass, retried ``retries`` times with backoff if Alertmanager fails; then the last
    error (one line, with how long it was tried and how many alerts wait)."""
    backoff = backoff or Backoff(initial=0.5, cap=8.0)
    waited = 0.0
    done: list[Send] = []
    for attempt in range(retries + 1):
        try:
            out = sender.run_pass(on_sent=done.extend)
            out.delivered = done
            return out
        except AlertmanagerError as e:
            if e.permanent:
                raise
            if attempt == retries:
                raise AlertmanagerError(
                    f"{e} ({attempt + 1} attempts over {waited:.1f} s; "
                    f"{len(done)} alert(s) delivered before it failed)") from None
            delay = backoff.next()
            waited += delay
            sleep(delay)
    raise AssertionError("unreachable")


def store_outage(write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> Outage:
    """The reporter of a store that cannot be read or written: once when it begins, once
    when it ends."""
    return Outage(write, clock, began="{error} (retrying; reported again once it works)",
                  ended="the store is readable again after {lasted} ({failures} failed "
                        "attempts)")


def follow(sender: Sender, interval: float = 1.0, say: Callable[[str], None] = print,
           warn: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
           stop: Callable[[], bool] = lambda: False,
           clock: Callable[[], float] = time.monotonic) -> None:
    """Keep sending until ``stop()`` (or an interrupt): a pass whenever the log changes (its
    heads, looked at every ``interval`` s) or something falls due (a resend, an incident
    reaching --min-duration). Alertmanager and store failures are reported once per outage
    and retried with backoff, for ever; a permanent refusal (:class:`AlertmanagerRefused
    <membership_log.ops.alertmanager.AlertmanagerRefused>`) is raised."""
    outage = alertmanager.outage_log(warn, clock)
    store = store_outage(warn, clock)
    # A store that cannot be read (not set up yet, being restored) is looked at again within
    # 10 s: that costs nothing, and a new store is then noticed soon.
    am_backoff, store_backoff = Backoff(), Backoff(1.0, 10.0)
    seen: dict | None = None
    wake_at: int | None = None
    retry = False

    def show(chunk: list[Send]) -> None:
        from ..core.timespec import iso

        for s in chunk:
            if s.kind != RESEND:  # a resend every --resend s would bury everything else
                say(f"{iso(now_us())} {describe(s)}")

    while not stop():
        try:
            heads = sender.heads()
        except StoreError as e:
            store.failed(e)
            sleep(store_backoff.next())
            continue
        if retry or heads != seen or (wake_at is not None and sender.clock() >= wake_at):
            try:
                out = sender.run_pass(on_sent=show)
            except AlertmanagerError as e:
                if e.permanent:
                    raise
                if not sender.unrecorded:  # the store was read and written: it works
                    store.succeeded()
                outage.failed(e)
                retry = True
                sleep(am_backoff.next())
                continue
            except StoreError as e:
                store.failed(e)
                retry = True
                sleep(store_backoff.next())
                continue
            outage.succeeded()
            am_backoff.reset()
            retry, seen, wake_at = False, heads, out.wake_at
        if not sender.unrecorded:  # read (and, if needed, written): the store works
            store.succeeded()
            store_backoff.reset()
        delay = interval
        if wake_at is not None:
            delay = min(delay, max(0.0, (wake_at - sender.clock()) / 1e6))
        sleep(max(delay, 0.01))
