"""The audit: figures over a window from incidents and observer sessions. Pure.

- An incident is reported if it overlaps the window; one still down at ``until`` is reported
  open (``up_at`` null), with its duration so far.
- Unobserved time: between an observer's last event before its agent restarted and the
  restart, it could see nothing. Incidents overlapping such a gap carry ``unobserved_s``;
  downtime and availability count observed time only.
- ``downtime_s``: observed time down within the window; ``availability``: 1 minus downtime
  over the observed part of the window; ``mttr_s``: the mean duration of the incidents that
  closed within the window (null if none); ``flaps``: how many times the node went down
  within the window; ``flapping``: the stretches in which at least ``threshold`` incidents
  began within ``window`` of each other.
- Serf reports a failure only after its suspicion timeout, so every recorded duration is a
  lower bound; with ``detection_delay_us``, failed incidents also carry an estimated start.
- Receive times can step back with the clock: no figure goes negative (an incident "ending"
  before it began lasted 0 s).
- ``roles``: the stretches the node spent in each role (its member's ``role`` tag, Droonga
  1.1's: ``service-provider``, ``absorb-source``, ``absorb-destination``; None without one),
  covering the window end to end (:func:`role_stretches`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from .records import record

LOWER_BOUND_NOTE = ("durations are lower bounds: Serf reports a failure only after its "
                    "suspicion timeout (see --detection-delay)")


def _overlap(a0: int, a1: int, gaps: list[tuple[int, int]]) -> int:
    """Microseconds of [a0, a1] inside the (sorted, disjoint) gaps."""
    total = 0
    for g0, g1 in gaps:
        if g1 <= a0:
            continue
        if g0 >= a1:
            break
        total += min(a1, g1) - max(a0, g0)
    return total


def unobserved(sessions: list[tuple], since_us: int, until_us: int) -> list[tuple[int, int]]:
    """The gaps ``(from, to)`` of observer sessions ``(observer, started_at, gap_from)`` that
    touch the window, clipped to it, merged, sorted."""
    gaps = sorted((max(g, since_us), min(s, until_us)) for _, s, g in sessions
                  if g is not None and s > g and s > since_us and g < until_us)
    merged: list[list[int]] = []
    for g0, g1 in gaps:
        if merged and g0 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], g1)
        else:
            merged.append([g0, g1])
    return [(a, b) for a, b in merged if b > a]


def intersect(gap_lists: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Times inside a gap of every list: when no observer at all could see."""
    if not gap_lists:
        return []
    out = gap_lists[0]
    for gaps in gap_lists[1:]:
        both = []
        for a0, a1 in out:
            for b0, b1 in gaps:
                lo, hi = max(a0, b0), min(a1, b1)
                if hi > lo:
                    both.append((lo, hi))
        out = sorted(both)
    return out


def flapping(down_ats: list[int], window_us: int, threshold: int) -> list[tuple[int, int, int]]:
    """Stretches ``(from, to, incidents)`` in which at least ``threshold`` incidents began
    within ``window_us`` of each other; overlapping stretches are merged."""
    times = sorted(down_ats)
    stretches: list[list[int]] = []
    lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] > window_us:
            lo += 1
        if hi - lo + 1 >= threshold:
            start = times[lo]
            if stretches and start <= stretches[-1][1]:
                stretches[-1][1] = t
            else:
                stretches.append([start, t])
    return [(a, b, bisect_right(times, b) - bisect_left(times, a)) for a, b in stretches]


#: One incident as the audit reports it: ``incident``, a tuple in
#: :data:`~membership_log.core.incidents.Incident` order (its ``observers`` a tuple of names,
#: or one name; ``up_at`` None when it is still open at the window's end), how long it
#: lasted within its own bounds (``duration_us``, up to the window's end while open) and how
#: much of the window it spent unobserved (0 if none).
Reported = record("Reported", "incident duration_us unobserved_us")

#: One node's figures over the window: ``incidents`` (:data:`Reported`, in the order they
#: began), ``downtime_us`` (observed time down), ``availability`` (None if nothing was
#: observed), ``mttr_us`` (None if no incident closed), ``flaps`` (times it went down),
#: ``flapping`` stretches ``(from, to, incidents)``, and ``roles``: stretches ``(from, to,
#: role)`` in time order, covering the window (empty when no role was asked about).
NodeFigures = record("NodeFigures", "incidents downtime_us availability mttr_us flaps "
                         "flapping roles", defaults=((),))

#: An observer's sessions (start times) and the unobserved stretches ``(from, to)`` before
#: them.
Sessions = record("Sessions", "starts unobserved")

#: The audit of a window, all times in UTC microseconds: ``nodes`` worst first (most
#: downtime, then most flaps, then name); ``observers`` by name; ``detection_delay_us``: the
#: estimate of Serf's detection delay asked for (None: none).
Audit = record("Audit", "since until observed_us nodes observers detection_delay_us")


def role_stretches(start: dict, changes: Iterable[tuple], since_us: int, until_us: int) -> dict:
    """Node -> its role stretches ``(from, to, role)`` over [since_us, until_us]: ``start``
    is each node's role at ``since_us`` (None: no role tag, or no member), ``changes`` the
    ``(at, node, role)`` after it, in log order. Stretches touch end to end; a change to the
    role already held is none, and a role held for no time leaves no stretch; receive times
    that step back are taken as "no later than the change before" (no stretch is negative);
    a node first met in ``changes`` had no role before it."""
    current = dict(start)
    began = {n: since_us for n in start}
    out: dict[str, list] = {n: [] for n in start}
    last = since_us
    for at, node, role in changes:
        at = min(max(at, last, since_us), until_us)
        last = at
        if node not in current:
            current[node], began[node], out[node] = None, since_us, []
        if role == current[node]:
            continue
        if at > began[node]:
            out[node].append((began[node], at, current[node]))
        elif out[node] and out[node][-1][2] == role:  # the role between lasted no time
            current[node], began[node] = role, out[node].pop()[0]
            continue
        current[node], began[node] = role, at
    for node, role in current.items():
        if until_us > began[node] or not out[node]:
            out[node].append((began[node], until_us, role))
    return out


def report(incidents: Iterable[tuple], nodes: Iterable[str], since_us: int, until_us: int,
           gaps: Iterable[tuple[int, int]] = (), sessions: dict | None = None,
           flap_window_us: int = 600_000_000, flap_threshold: int = 3,
           detection_delay_us: int | None = None, roles: dict | None = None) -> Audit:
    """The audit (SPEC "Replay and audit JSON") over [since_us, until_us], as an
    :data:`Audit` record. ``incidents``: tuples in
    :data:`~membership_log.core.incidents.Incident` order (``observers`` a tuple of names,
    or one name as a stored row has it), each node's in the order they began; ``gaps``:
    unobserved ``(from, to)`` within the window; ``sessions``: observer -> :data:`Sessions`,
    reported as is; ``roles``: node -> role stretches (:func:`role_stretches`), reported as
    is (a node without: none)."""
    gaps = list(gaps)
    window = max(until_us - since_us, 0)
    observed = window - _overlap(since_us, until_us, gaps)
    # Per node: [reported, downtime_us, repairs, starts]. The loop runs once per incident of
    # the whole window (300,000 of them in a busy year), so it stays lean: the incident
    # tuple is kept as given (a new one only for one that ends after the window), and
    # records are made by tuple.__new__ (a namedtuple's own __new__ is a Python call).
    per: dict[str, list] = {n: [[], 0, [], []] for n in nodes}
    new = tuple.__new__
    for inc in incidents:
        node, down_at, up_at, cause, observers, down_seq, up_seq = inc
        up = up_at if up_at is not None and up_at <= until_us else None
        if down_at > until_us or (up is not None and up < since_us):
            continue
        n = per.get(node)
        if n is None:
            n = per[node] = [[], 0, [], []]
        end = up if up is not None else until_us
        if end < down_at:  # the clock stepped back: it lasted no time
            end = down_at
        duration = end - down_at
        lo = down_at if down_at > since_us else since_us
        hi = end if end < until_us else until_us
        blind = _overlap(lo, hi, gaps) if gaps and hi > lo else 0
        if hi - lo - blind > 0:
            n[1] += hi - lo - blind
        if down_at >= since_us:
            n[3].append(down_at)
        if up is not None:
            n[2].append(duration)
        elif up_at is not None:  # ended after the window: open within it
            inc = (node, down_at, None, cause, observers, down_seq, None)
        n[0].append(new(Reported, (inc, duration, blind)))
    out = {}
    for name, (items, downtime, repairs, starts) in per.items():
        out[name] = NodeFigures(
            items, downtime,
            round(max(0.0, 1 - downtime / observed), 6) if observed > 0 else None,
            round(sum(repairs) / len(repairs)) if repairs else None,
            len(starts), flapping(starts, flap_window_us, flap_threshold),
            tuple((roles or {}).get(name, ())))
    order = sorted(out, key=lambda k: (-out[k].downtime_us, -out[k].flaps, k))
    return Audit(since_us, until_us, observed, {k: out[k] for k in order}, sessions or {},
                 detection_delay_us)


def totals(incidents: Iterable[tuple], now_us: int) -> dict:
    """Per node: ``{cause: [count, downtime_us, last change]}`` of every incident, open ones
    counted up to ``now_us`` (what the metrics' counters expose). The one place incident
    totals are computed, for one log or merged."""
    out: dict[str, dict] = {}
    for node, down_at, up_at, cause, *_ in incidents:
        t = out.setdefault(node, {}).setdefault(cause, [0, 0, None])
        end = up_at if up_at is not None else now_us
        t[0] += 1
        if end > down_at:
            t[1] += end - down_at
        last = up_at if up_at is not None and up_at > down_at else down_at
        t[2] = last if t[2] is None or last > t[2] else t[2]
    return out
