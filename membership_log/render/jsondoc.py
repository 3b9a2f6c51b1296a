"""The one JSON convention every command writes, and the documents it writes.

Compact (no spaces), keys in the order the record defines them, ASCII only (every non-ASCII
and control character escaped, so JSON output is as safe on a terminal as the tables). One
object per line for streams (replay, export), one document otherwise. The history API
returns records with integer times; this module alone turns them into documents (ISO times,
seconds as numbers) and text (:func:`encode`). Pure.

The live file and the handler's query answer are JSON too, but written by
:mod:`membership_log.render.livefile` by hand: importing ``json`` costs the handler about a
sixth of its whole budget (README, "Performance").
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.timespec import _SECONDS, iso, second_head

if TYPE_CHECKING:
    from ..core.droonga import Command
    from ..core.figures import Audit, NodeFigures, Reported
    from ..core.raw import RawEvent


def _make_encoder() -> Callable[[object], str]:
    """The stdlib's C encoder, set up once for the convention (``json.dumps`` sets it up
    again on every call: a tenth of a replay's time)."""
    # c_make_encoder: the C accelerator json itself uses, which typeshed does not declare.
    from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

    if c_make_encoder is None:  # another Python: the plain way
        import json

        return json.JSONEncoder(separators=(",", ":")).encode

    def default(o: object) -> Any:
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    make = c_make_encoder(None, default, encode_basestring_ascii, None, ":", ",", False,
                          False, True)
    return lambda obj: "".join(make(obj, 0))


#: ``encode(value) -> str``: one JSON document or line.
encode = _make_encoder()


class Lines(Protocol):
    """Where :func:`write_lines` writes: a text stream, or anything that takes text."""

    def write(self, text: str, /) -> object: ...
    def flush(self) -> object: ...


def write_lines(out: Lines, documents: Iterable[object]) -> None:
    """Documents as JSON lines on ``out`` (streamed; written and flushed in blocks)."""
    buf: list[str] = []
    for doc in documents:
        buf.append(encode(doc))
        if len(buf) >= 512:
            buf.append("")
            out.write("\n".join(buf))
            buf = []
    if buf:
        buf.append("")
        out.write("\n".join(buf))
    out.flush()


def _iso(us: int | None) -> str | None:
    return iso(us) if us is not None else None


# -- the documents -----------------------------------------------------------------------------


def state_doc(now: Any) -> dict:  # a history.api.StateAt (render may not import history)
    """``state --json``: a :data:`~membership_log.history.api.StateAt`. Per node, besides
    its liveness: ``role`` (its member's ``role`` tag, null without one) and ``tags`` (the
    member's tags that matter to Droonga 1.1: type, role, cluster_id, internal-name,
    accept-newer-than, buffered-for-*)."""
    from ..core.droonga import droonga_tags, role_tag

    members = now.members or {}
    nodes = {}
    for n in sorted(now.nodes.values(), key=lambda v: v.name):
        m = members.get(n.member) if n.member is not None else None
        tags = m.tags if m is not None else None
        nodes[n.name] = {"live": n.live, "serf": n.serf, "marked": n.marked,
                         "address": n.address, "member": n.member, "in_catalog": n.in_catalog,
                         "role": role_tag(tags), "tags": droonga_tags(tags)}
    return {"seq": now.seq, "at": _iso(now.at), "nodes": nodes}


def replay_doc(r: Any) -> dict:  # a history.api.Replayed
    """One ``replay --json`` line (SPEC "Replay and audit JSON")."""
    e = r.event
    out = {
        "seq": e.seq,
        "at": _iso(e.at),
        "observer": e.observer,
        "event": e.kind,
        "name": e.name,
        "ltime": e.ltime,
        "members": [{"name": m.name, "address": m.address, "role": m.role, "tags": m.tags}
                    for m in e.members],
        "payload": e.payload,
        "changes": [{"node": c.node, "from": c.before, "to": c.after} for c in r.changes],
        "duplicate": r.redelivery,
        "warnings": list(e.warnings),
        "roles": [{"member": c.member, "from": c.before, "to": c.after} for c in r.roles],
        "droonga": command_doc(r.command),
    }
    if r.origin is not None:
        out["origin"] = r.origin
    return out


def command_doc(c: Command | None) -> dict | None:
    """A Droonga 1.1 user event or query in ``replay --json`` (None for any other event):
    what droonga-engine-serf-event-handler on the observer reads in it."""
    if c is None:
        return None
    return {"command": c.name, "node": c.node, "target": c.target, "payload": c.payload,
            "cluster_id": c.cluster_id, "for_cluster": c.for_cluster, "for_node": c.for_node,
            "acted_on": c.process, "fields": c.fields}


def export_doc(raw: RawEvent) -> dict:
    """One ``export`` line (SPEC "Export and import") of a raw event."""
    return {"seq": raw.seq, "received": iso(raw.received_us), "observer": raw.observer,
            "source": raw.source, "env": raw.env,
            "stdin_b64": base64.b64encode(raw.stdin).decode("ascii"), "hash": raw.hash.hex()}


def incident_doc(reported: Reported, delay_us: int | None) -> dict:
    """One incident of ``audit --json``."""
    inc = reported.incident
    observers = inc[4]
    item = {
        "down_at": iso(inc[1]),
        "up_at": _iso(inc[2]),
        "duration_s": reported.duration_us / 1e6,
        "cause": inc[3],
        "observers": [observers] if observers.__class__ is str and observers
        else [] if observers.__class__ is str else list(observers),
        "down_seq": inc[5],
        "up_seq": inc[6],
    }
    if reported.unobserved_us:
        item["unobserved_s"] = reported.unobserved_us / 1e6
    if delay_us is not None and inc[3] == "failed":
        item["est_down_at"] = iso(inc[1] - delay_us)
        item["est_duration_s"] = (reported.duration_us + delay_us) / 1e6
    return item


def node_doc(figures: NodeFigures, delay_us: int | None) -> dict:
    """One node of ``audit --json``."""
    return {
        "incidents": [incident_doc(r, delay_us) for r in figures.incidents],
        "downtime_s": figures.downtime_us / 1e6,
        "availability": figures.availability,
        "mttr_s": None if figures.mttr_us is None else figures.mttr_us / 1e6,
        "flaps": figures.flaps,
        "flapping": [{"from": iso(a), "to": iso(b), "incidents": k}
                     for a, b, k in figures.flapping],
        "roles": [{"role": role, "from": iso(a), "to": iso(b)} for a, b, role in figures.roles],
    }


def _incidents_text(items: Iterable[Reported], delay_us: int | None) -> str:
    """``encode([incident_doc(r, delay_us) for r in items])``, byte for byte, written
    directly: a busy year's audit holds 300,000 incidents, and building a dict for each to
    encode it costs twice what the whole rest of the audit does. A property test holds the
    two equal; anything unusual (an estimate, an unobserved stretch) takes the plain way."""
    if delay_us is not None:
        return encode([incident_doc(r, delay_us) for r in items])
    seen, causes = _OBSERVERS, _CAUSES
    if len(seen) > 4096:  # hostile names: a bound, not a leak
        seen.clear()
    heads, head_of = _SECONDS, second_head
    out: list[str] = []
    add = out.append
    for r in items:
        if r[2]:
            add(encode(incident_doc(r, None)))
            continue
        node, down_at, up_at, cause, observers, down_seq, up_seq = r[0]
        obs = seen.get(observers)
        if obs is None:
            names = [observers] if observers.__class__ is str and observers else \
                [] if observers.__class__ is str else list(observers)
            obs = seen[observers] = encode(names)
        c = causes.get(cause)
        if c is None:
            c = causes[cause] = encode(cause)
        ds = down_at // 1_000_000
        if up_at is not None and down_seq is not None and up_seq is not None:
            us = up_at // 1_000_000  # the usual incident, over: one format, no call
            add(_OVER % (heads.get(ds) or head_of(ds), down_at - ds * 1_000_000,
                         heads.get(us) or head_of(us), up_at - us * 1_000_000, r[1] / 1e6, c,
                         obs, down_seq, up_seq))
            continue
        up = "null" if up_at is None else '"' + iso(up_at) + '"'
        add(f'{{"down_at":"{iso(down_at)}","up_at":{up},'
            f'"duration_s":{r[1] / 1e6!r},"cause":{c},"observers":{obs},'
            f'"down_seq":{"null" if down_seq is None else down_seq},'
            f'"up_seq":{"null" if up_seq is None else up_seq}}}')
    return "[" + ",".join(out) + "]"


#: One incident that is over, as ``encode(incident_doc(...))`` writes it (``%r`` of a float
#: is its ``repr``, as json's).
_OVER = ('{"down_at":"%s%06dZ","up_at":"%s%06dZ","duration_s":%r,"cause":%s,"observers":%s,'
         '"down_seq":%d,"up_seq":%d}')

#: JSON text of the observer lists and the causes an audit repeats (a few values each),
#: made once.
_OBSERVERS: dict = {}
_CAUSES: dict = {}


def node_fragment(name: str, figures: NodeFigures, delay_us: int | None) -> str:
    """One node's ``"name":{...}`` of ``audit --json``, exactly as ``encode`` writes it
    within :func:`audit_doc`: the unit a share of a long audit encodes in a worker of its
    own (:mod:`membership_log.history.bulk`)."""
    head = encode(node_doc(figures._replace(incidents=()), delay_us))  # the rest, as is
    return (encode(name) + ':{"incidents":' + _incidents_text(figures.incidents, delay_us)
            + head[len('{"incidents":[]'):])


def audit_doc(audit: Audit) -> dict:
    """``audit --json`` (SPEC "Replay and audit JSON") of an
    :data:`~membership_log.core.figures.Audit`."""
    from ..core.figures import LOWER_BOUND_NOTE

    delay = audit.detection_delay_us
    return {
        "since": iso(audit.since),
        "until": iso(audit.until),
        "observed_s": audit.observed_us / 1e6,
        "note": LOWER_BOUND_NOTE,
        "nodes": {name: node_doc(n, delay) for name, n in audit.nodes.items()},
        "observers": {name: {"sessions": [iso(t) for t in s.starts],
                             "unobserved": [{"from": iso(a), "to": iso(b)}
                                            for a, b in s.unobserved]}
                      for name, s in audit.observers.items()},
    }


def audit_text(audit: Audit, fragments: list[str] | None = None) -> str:
    """``audit --json`` as text: exactly ``encode(audit_doc(audit))`` (written node by node,
    :func:`node_fragment`), or, with ``fragments`` (those of every node, in the report's
    order, made in workers), the same document with them in place of ``audit.nodes``."""
    delay = audit.detection_delay_us
    if fragments is None:
        fragments = [node_fragment(name, n, delay) for name, n in audit.nodes.items()]
    doc = audit_doc(audit._replace(nodes={}))
    head = encode({k: v for k, v in doc.items() if k not in ("nodes", "observers")})
    return (f'{head[:-1]},"nodes":{{{",".join(fragments)}}},'
            f'"observers":{encode(doc["observers"])}}}')
