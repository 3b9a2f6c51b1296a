"""Prometheus text exposition (format 0.0.4) of one membership snapshot.

:func:`render` is pure: it turns plain data (computed by the history engine from the log) into
bytes, so ``membership metrics`` and ``membership serve`` print the same thing and tests need
no store. Counters are derived from the log, not counted in memory, so they never reset when
the process restarts and ``increase()`` / ``rate()`` stay meaningful.

It goes through ``prometheus_client`` (a collector on a private registry) rather than
string formatting: the library owns label escaping and number formatting, and a private
registry keeps its default process/platform metrics out (they would describe the scraper's
process, not the cluster).

The snapshot::

    {"nodes": {NODE: {"up": bool, "marked": bool, "down_cause": str | None,
                      "incidents": {"failed": int, "left": int, "operator": int},
                      "downtime_s": float, "last_change_s": float | None,
                      "flapping": bool | None,
                      "role": str | None}},
     "live_nodes": int, "catalog_nodes": int,
     "events": [{"observer": str, "event": str, "count": int}],
     "last_event_s": {OBSERVER: float},
     "witness_conflicts": {ORIGIN: int},
     "observer": str | None,
     "last_heartbeat_s": {SENDER: float},
     "spool_files": int | None,      # a node store's spool; None: not exposed
     "version": str | None}

Times are Unix seconds. Names are hostile input: see :mod:`membership_log.core.labels`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ..core import labels
from ..core.droonga import ROLES

#: The HTTP Content-Type of :func:`render`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every node gets a series for each of these causes from its first scrape (zeros included): a
#: series that appears only with its first incident makes ``increase()`` miss that incident.
CAUSES = ("failed", "left", "operator")

_LOWER_BOUND = ("Serf reports a failure only after its suspicion timeout, so this is a lower "
                "bound.")

Snapshot = Mapping[str, Any]


class _SnapshotCollector(Collector):
    """Yields the metric families of one snapshot (a collector is how prometheus_client
    exposes values that already exist elsewhere, instead of instrumenting code)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.snapshot
        nodes: Mapping[str, Mapping[str, Any]] = s.get("nodes") or {}
        names = labels.unique(nodes)
        order = sorted(nodes, key=names.__getitem__)

        up = GaugeMetricFamily(
            "membership_node_up",
            "1 if the node is live (Serf says alive and no operator mark), 0 if dead.",
            labels=["node"])
        marked = GaugeMetricFamily(
            "membership_node_marked_down",
            "1 while an operator mark (membership-down) holds the node down, else 0.",
            labels=["node"])
        incidents = CounterMetricFamily(
            "membership_node_incidents_total",
            "Incidents (the node going from live to dead) by cause: failed (Serf "
            "member-failed), left (member-leave), operator (membership-down mark).",
            labels=["node", "cause"])
        downtime = CounterMetricFamily(
            "membership_node_downtime_seconds_total",
            "Seconds the node has been dead, open incidents counted up to now. "
            + _LOWER_BOUND, labels=["node"])
        changed = GaugeMetricFamily(
            "membership_node_last_change_timestamp_seconds",
            "Unix time of the node's last liveness change (absent if it never changed). "
            "A failure is recorded when Serf reports it, after its suspicion timeout.",
            labels=["node"])
        down_cause = GaugeMetricFamily(
            "membership_node_down_cause",
            "1 for the cause of a dead node's current incident (failed, left, operator); no "
            "series while the node is live. Rules alert on it per node and cause, across "
            "observers (one alert per node, its severity by cause).",
            labels=["node", "cause"])
        flapping = GaugeMetricFamily(
            "membership_node_flapping",
            "1 if the node is flapping (too many incidents began within the flap window), "
            "else 0.", labels=["node"])
        role = GaugeMetricFamily(
            "membership_node_role",
            "1 for the node's current Droonga 1.1 role (its member's role tag as Droonga "
            "reads it: service-provider, absorb-source, absorb-destination), 0 for the "
            "others; no series for a node whose member has no role tag.",
            labels=["node", "role"])

        for name in order:
            n, label = nodes[name], names[name]
            up.add_metric([label], 1.0 if n.get("up") else 0.0)
            marked.add_metric([label], 1.0 if n.get("marked") else 0.0)
            counts = n.get("incidents") or {}
            for cause in sorted(set(CAUSES).union(counts)):
                incidents.add_metric([label, labels.clean(cause)], float(counts.get(cause, 0)))
            downtime.add_metric([label], float(n.get("downtime_s") or 0.0))
            if n.get("last_change_s") is not None:
                changed.add_metric([label], float(n["last_change_s"]))
            if n.get("flapping") is not None:
                flapping.add_metric([label], 1.0 if n["flapping"] else 0.0)
            if n.get("down_cause") is not None:
                down_cause.add_metric([label, labels.clean(n["down_cause"])], 1.0)
            if n.get("role") is not None:
                for r in ROLES:
                    role.add_metric([label, r], 1.0 if n["role"] == r else 0.0)
        yield from (up, marked, incidents, downtime, changed, down_cause)
        if flapping.samples:
            yield flapping
        if role.samples:
            yield role

        yield GaugeMetricFamily(
            "membership_live_nodes", "Catalog nodes live now (the live file's entries).",
            value=float(s.get("live_nodes") or 0))
        yield GaugeMetricFamily(
            "membership_catalog_nodes", "Nodes in the catalog in force now.",
            value=float(s.get("catalog_nodes") or 0))
        yield from self._observers(s)
        yield from self._witness(s)

    def _witness(self, s: Snapshot) -> Iterator[CounterMetricFamily]:
        conflicts: Mapping[str, int] = s.get("witness_conflicts") or {}
        names = labels.unique(conflicts)
        counter = CounterMetricFamily(
            "membership_witness_conflicts_total",
            "Published heads (membership-head) of this origin's log that contradicted an "
            "earlier one as this view witnessed them: another root at a size already seen "
            "(a fork), or a smaller tree than the latest (a log truncated or re-created).",
            labels=["origin"])
        for name in sorted(conflicts, key=names.__getitem__):
            counter.add_metric([names[name]], float(conflicts[name]))
        yield counter

    def _observers(self, s: Snapshot) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        events: list[Mapping[str, Any]] = list(s.get("events") or [])
        last: Mapping[str, float] = s.get("last_event_s") or {}
        observer = s.get("observer")
        names = labels.unique([e["observer"] for e in events] + list(last)
                              + ([observer] if observer is not None else []))

        # Counts are summed per label pair: a duplicate row (or two event names that clean
        # to the same text) must not become two samples with the same labels.
        totals: dict[tuple[str, str], float] = {}
        for e in events:
            key = (names[e["observer"]], labels.clean(e["event"]))
            totals[key] = totals.get(key, 0.0) + float(e["count"])
        counter = CounterMetricFamily(
            "membership_events_total",
            "Events recorded in the log, by observer (SERF_SELF_NAME) and event "
            "(member-join ... user, query, catalog).", labels=["observer", "event"])
        for key in sorted(totals):
            counter.add_metric(list(key), totals[key])
        yield counter

        gauge = GaugeMetricFamily(
            "membership_last_event_timestamp_seconds",
            "Unix time the last event from this observer was received. An observer that "
            "stops reporting (agent or handler down) stands still here.",
            labels=["observer"])
        for name in sorted(last, key=names.__getitem__):
            gauge.add_metric([names[name]], float(last[name]))
        yield gauge

        if observer is not None:
            # Which view these figures are: one observer's (a node store, or --observer on
            # the central store). Absent: the central store's merged view.
            yield _info(names[observer])
        yield from _deployment(s)


def _deployment(s: Snapshot) -> Iterator[GaugeMetricFamily]:
    """What an operator alerts on besides the cluster: heartbeats, the spool, the build."""
    beats: Mapping[str, float] = s.get("last_heartbeat_s") or {}
    names = labels.unique(list(beats))
    heartbeat = GaugeMetricFamily(
        "membership_observer_last_heartbeat_timestamp_seconds",
        "Unix time the last membership-heartbeat user event from this node (its payload) "
        "was recorded. Every node's timer sends one every few minutes through its agent, "
        "so an observer that records none is not listening.", labels=["observer"])
    for name in sorted(beats, key=names.__getitem__):
        heartbeat.add_metric([names[name]], float(beats[name]))
    yield heartbeat
    if s.get("spool_files") is not None:
        yield GaugeMetricFamily(
            "membership_spool_files",
            "Events waiting in the spool: recorded while the store could not take them; the "
            "next handler run that can write the store takes them in.",
            value=float(s["spool_files"]))
    if s.get("version") is not None:
        info = GaugeMetricFamily("membership_build_info",
                                 "Always 1; its version label is membership-log's release.",
                                 labels=["version"])
        info.add_metric([labels.clean(str(s["version"]))], 1.0)
        yield info


def _info(observer: str) -> GaugeMetricFamily:
    """Which view these figures are: one observer's (a node store, or ``--observer`` on the
    central store). Absent, they are the central store's merged view."""
    info = GaugeMetricFamily(
        "membership_observer_info",
        "Always 1; its observer label names the node whose view this is.",
        labels=["observer"])
    info.add_metric([observer], 1.0)
    return info


def render(snapshot: Snapshot) -> bytes:
    """The snapshot as Prometheus text exposition 0.0.4 (valid UTF-8, served as
    :data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
