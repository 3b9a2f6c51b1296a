"""The live-node file Droonga's engine reads, rendered and written.

Three formats (``settings.LIVE_FORMATS``): ``droonga`` (1.0.x ``live-nodes.json``) and
``cluster-state`` are rendered here from the fold's node view (:func:`render_view`);
``droonga-1.1`` (droonga-engine 1.1's ``state/cluster-state.json``) from its member view and
catalog, by :mod:`membership_log.core.droonga` and :mod:`membership_log.render.droonga11`
(:func:`droonga11_file`). :func:`file_of` answers for any of them.

:func:`render` is pure and deterministic: equal live sets give equal bytes, identical to
``json.dumps(obj, indent=2, sort_keys=True) + "\\n"`` (a test holds it to that). It is written
by hand because importing ``json`` costs the handler about 9 ms (README, "Performance").

Writing it is the shell's: :func:`membership_log.stores.files.write_atomic` never leaves a
moment without a complete file (Droonga's loader reads a missing or half file as "no node is
live", i.e. a cluster outage).
"""

from __future__ import annotations

from ..core import fold as project

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}


def json_string(s: str) -> str:
    """A JSON string literal, ASCII-only, escaped exactly as ``json.dumps`` does."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(f"\\u{0xD800 | (o >> 10):04x}\\u{0xDC00 | (o & 0x3FF):04x}")
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def _nested(key: str, values: dict[str, str]) -> bytes:
    """``{node: {key: value}}`` laid out as ``json.dumps(indent=2, sort_keys=True)`` does;
    ``values`` holds each node's value already as JSON text."""
    if not values:
        return b"{}\n"
    items = [f'  {json_string(node)}: {{\n    "{key}": {values[node]}\n  }}'
             for node in sorted(values)]
    return ("{\n" + ",\n".join(items) + "\n}\n").encode("ascii")


def render(live: dict[str, str]) -> bytes:
    """The live file (SPEC "The live file"): live node -> ``{"serfAddress": address}``."""
    return _nested("serfAddress", {node: json_string(a) for node, a in live.items()})


def render_cluster_state(nodes: dict[str, bool]) -> bytes:
    """Later Droonga releases' ``cluster-state.json``: every node, ``{"live": bool}``."""
    return _nested("live", {node: "true" if live else "false" for node, live in nodes.items()})


def render_view(nodes: dict, fmt: str = "droonga") -> bytes:
    """The live file for a view (node -> NodeView), in ``fmt`` (``droonga`` or
    ``cluster-state``)."""
    if fmt == "cluster-state":
        return render_cluster_state({n.name: n.live for n in nodes.values() if n.in_catalog})
    return render(project.live_of(nodes))


def render_compact(value: object) -> str:
    """Compact JSON (``separators=(",", ":")``) for str, int, bool, None, list and dict."""
    if isinstance(value, str):
        return json_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(
            json_string(k) + ":" + render_compact(v) for k, v in value.items()
        ) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


#: The format droonga-engine 1.1 reads (``settings.DROONGA_11``).
DROONGA_11 = "droonga-1.1"


def droonga11_file(state: Any) -> tuple[bytes | None, str | None]:
    """Droonga 1.1's ``cluster-state.json`` for a fold state (anything with ``members``,
    name -> MemberState, and ``catalog``): ``(bytes, None)``, or ``(None, why)`` when there
    is no file to write, and the one on disk is left as it is:

    - no catalog recorded, or one whose Droonga cluster id is unknown (Droonga 1.1 cannot
      load it: its own handler raises and writes nothing); the last good catalog stays in
      force as for every format, so this is a catalog with nodes that Droonga refuses;
    - no Serf member heard of yet (only ``init``'s catalog): Droonga's own handler always
      lists at least its own agent, and a 1.1 engine reads ``{}`` (or no file) as "no node
      is live", an outage no event caused.

    Otherwise exactly ``JSON.pretty_generate(Serf#current_cluster_state) + "\\n"`` over the
    fold's members (:func:`membership_log.core.droonga.cluster_state`), except that a
    failed member is ``"live": false`` as soon as Serf reports it."""
    catalog = state.catalog
    if catalog is None:
        return None, "no catalog recorded: Droonga 1.1 lists the members of its catalog's " \
                     "cluster, and cannot run without one"
    if catalog.cluster_id is None:
        return None, ("the catalog in force has no Droonga cluster id (Droonga 1.1 cannot load "
                      "it, or it was recorded before a retention anchor of an older release)")
    members = state.members
    if not members:
        return None, "no Serf member heard of yet"
    from ..core.droonga import cluster_state
    from .droonga11 import render_cluster_state

    view = {name: (m.status, m.tags) for name, m in members.items()}
    return render_cluster_state(cluster_state(view, catalog.cluster_id)), None


def file_of(state: Any, fmt: str = "droonga") -> tuple[bytes | None, str | None]:
    """The live file of a fold state (``nodes``, ``members``, ``catalog``) in ``fmt``:
    ``(bytes, None)``, or ``(None, why)`` when no file is to be written (see
    :func:`outage_reason` and :func:`droonga11_file`)."""
    if fmt == DROONGA_11:
        return droonga11_file(state)
    reason = outage_reason(state.nodes)
    if reason is not None:
        return None, reason
    return render_view(state.nodes, fmt), None


def outage_reason(nodes: dict) -> str | None:
    """Why writing the live file of ``nodes`` would be an outage no event caused, or None.

    Droonga's engine reads a live file with no live node as "route nowhere". That is right
    when the log says every node is dead, and wrong when the state simply knows no node
    (no catalog yet, no member seen): no command writes or prints such a file."""
    if any(n.in_catalog for n in nodes.values()):
        return None
    return "the log knows no node yet (no catalog recorded, no Serf member seen)"
