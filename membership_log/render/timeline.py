"""The timeline picture: one row per node, live and dead bands on a real time axis.

Pure: incidents and a window in, a self-contained SVG (or an HTML page around it) out; no
fonts, scripts or images are fetched. Each incident band carries a ``<title>`` (the hover
text) with its cause, times and duration.

Node names and causes come from the log (anyone who can join the cluster picks a member
name), so every piece of text goes through :func:`_x`: the result is always well-formed XML
1.0 and valid UTF-8, whatever the names hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import TYPE_CHECKING

from ..core.incidents import Incident
from ..core.timespec import duration
from .tables import printable

if TYPE_CHECKING:
    from ..core.figures import Audit

COLORS = {"live": "#3c9d5d", "failed": "#d64541", "left": "#8c8c8c", "operator": "#e8a33d"}
LABEL_W = 250
PLOT_W = 820
ROW_H = 30
TOP = 64
#: The colour of a band whose cause is none of the above (a newer release's cause).
OTHER = "#6c5b7b"
#: Flapping stretches: a bar under the row.
FLAPPING = "#ff7f0e"
#: Droonga 1.1's roles other than a service provider's: the stretch of the row is shaded
#: (a node being filled, or filling another, takes no service provider's reads).
ROLE_SHADES = {"absorb-source": "#2f6fd0", "absorb-destination": "#8e44ad"}
_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
            43200, 86400, 172800, 604800, 2592000]


def _x(text: object) -> str:
    """Text for SVG content or a quoted attribute.

    XML 1.0 cannot carry most C0 controls (not even as ``&#27;``), U+FFFE/U+FFFF or lone
    surrogates (a byte that was not UTF-8, which cannot even be encoded to write the file),
    so :func:`render.printable` first shows those as visible escapes (``\\x1b``, ``\\xff``),
    then ``html.escape`` handles ``<``, ``&`` and quotes. Ordinary names are unchanged.
    """
    return escape(printable(str(text)), quote=True)


def _ticks(since_us: int, until_us: int, iso: Callable[[int], str]) -> list[tuple[int, str]]:
    """Round-valued ticks, about eight across the window."""
    span_s = max((until_us - since_us) / 1e6, 1e-6)
    step = next((s for s in _STEPS_S if span_s / s <= 8), _STEPS_S[-1])
    first = -(-since_us // (step * 1_000_000)) * step * 1_000_000
    ticks = []
    t = first
    while t <= until_us:
        text = iso(t)  # 2026-11-25T03:12:00.000000Z
        if span_s > 86400:
            label = text[5:16].replace("T", " ")
        elif step < 60:
            label = text[11:19]
        else:
            label = text[11:16]
        ticks.append((t, label))
        t += step * 1_000_000
    return ticks


def render_svg(nodes: list[str], incidents: list[Incident], since_us: int, until_us: int,
               iso: Callable[[int], str], unobserved: Iterable[tuple[int, int]] = (),
               flapping: dict[str, list[tuple[int, int]]] | None = None,
               roles: dict[str, list[tuple]] | None = None) -> str:
    """The picture as SVG. ``nodes`` in row order; ``iso`` formats microseconds;
    ``unobserved``: ``(from, to)`` spans when an observer could see nothing (hatched across
    every row); ``flapping``: node -> ``[(from, to)]`` stretches (underlined in orange);
    ``roles``: node -> ``[(from, to, role)]`` stretches (those in an absorb-* role are
    shaded under the incidents)."""
    flapping = flapping or {}
    roles = roles or {}
    span = max(until_us - since_us, 1)

    def x(us: int) -> float:
        return LABEL_W + (min(max(us, since_us), until_us) - since_us) * PLOT_W / span

    height = TOP + ROW_H * max(len(nodes), 1) + 56
    width = LABEL_W + PLOT_W + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" '
        f'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">membership timeline</text>',
        f'<text x="10" y="40" fill="#555">{_x(iso(since_us))} to {_x(iso(until_us))} '
        f'(UTC)</text>',
    ]
    plot_bottom = TOP + ROW_H * len(nodes)
    out.append('<defs><pattern id="unobserved" width="6" height="6" '
               'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
               '<rect width="6" height="6" fill="#ffffff" fill-opacity="0.55"/>'
               '<line x1="0" y1="0" x2="0" y2="6" stroke="#555" stroke-width="2"/>'
               '</pattern></defs>')
    for t, label in _ticks(since_us, until_us, iso):
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP - 6}" x2="{x(t):.1f}" y2="{plot_bottom}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{TOP - 10}" text-anchor="middle" '
                   f'fill="#444">{_x(label)}</text>')
    by_node: dict[str, list[Incident]] = {}
    for inc in incidents:
        by_node.setdefault(inc.node, []).append(inc)
    for row, node in enumerate(nodes):
        y = TOP + row * ROW_H
        out.append(f'<g class="node-row" data-node="{_x(node)}">')
        out.append(f'<text x="{LABEL_W - 8}" y="{y + ROW_H / 2 + 4:.1f}" text-anchor="end">'
                   f'{_x(node)}</text>')
        out.append(f'<rect x="{LABEL_W}" y="{y + 6}" width="{PLOT_W}" height="{ROW_H - 12}" '
                   f'fill="{COLORS["live"]}"><title>{_x(node)}: live</title></rect>')
        for r0, r1, role in roles.get(node, ()):
            shade = ROLE_SHADES.get(role)
            if shade is None or r1 < since_us or r0 > until_us:
                continue
            x0, x1 = x(r0), x(r1)
            title = f"{node}: {role} from {iso(r0)} to {iso(r1)}, {duration((r1 - r0) / 1e6)}"
            out.append(f'<rect class="role" data-role="{_x(role)}" x="{x0:.1f}" y="{y + 6}" '
                       f'width="{max(x1 - x0, 2.0):.1f}" height="{ROW_H - 12}" fill="{shade}" '
                       f'fill-opacity="0.75"><title>{_x(title)}</title></rect>')
        for inc in by_node.get(node, []):
            end = inc.up_at if inc.up_at is not None else until_us
            if end < since_us or inc.down_at > until_us:
                continue
            x0, x1 = x(inc.down_at), x(end)
            color = COLORS.get(inc.cause, OTHER)
            w = max(x1 - x0, 2.0)
            up = iso(inc.up_at) if inc.up_at is not None else "still down"
            title = (f"{node}: {inc.cause}, down {iso(inc.down_at)}, up {up}, "
                     f"{duration((end - inc.down_at) / 1e6)}")
            out.append(f'<rect class="incident" x="{x0:.1f}" y="{y + 6}" width="{w:.1f}" '
                       f'height="{ROW_H - 12}" fill="{color}">'
                       f'<title>{_x(title)}</title></rect>')
            # A marker at the start keeps a short incident visible at any scale.
            out.append(f'<path class="marker" d="M{x0 - 5:.1f},{y + 1} L{x0 + 5:.1f},{y + 1} '
                       f'L{x0:.1f},{y + 7} Z" fill="{color}" stroke="#333" '
                       f'stroke-width="0.5"><title>{_x(title)}</title></path>')
            if w > 46:
                out.append(f'<text x="{x0 + w / 2:.1f}" y="{y + ROW_H / 2 + 4:.1f}" '
                           f'text-anchor="middle" fill="#fff" font-size="11">'
                           f'{_x(inc.cause)}</text>')
        for f0, f1 in flapping.get(node, ()):
            x0, x1 = x(f0), x(f1)
            title = f"{node}: flapping from {iso(f0)} to {iso(f1)}"
            out.append(f'<rect class="flapping" x="{x0:.1f}" y="{y + ROW_H - 6}" '
                       f'width="{max(x1 - x0, 3.0):.1f}" height="3" fill="{FLAPPING}">'
                       f'<title>{_x(title)}</title></rect>')
        out.append("</g>")
    for g0, g1 in unobserved:
        if g1 < since_us or g0 > until_us or not nodes:
            continue
        x0, x1 = x(g0), x(g1)
        title = f"unobserved: no observer could see from {iso(g0)} to {iso(g1)}"
        out.append(f'<rect class="unobserved" x="{x0:.1f}" y="{TOP}" '
                   f'width="{max(x1 - x0, 2.0):.1f}" height="{plot_bottom - TOP}" '
                   f'fill="url(#unobserved)"><title>{_x(title)}</title></rect>')
    ly = plot_bottom + 30
    lx = LABEL_W
    for name in ("live", "failed", "left", "operator"):
        label = {"live": "live", "failed": "down: failed", "left": "down: left",
                 "operator": "down: operator mark"}[name]
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="12" '
                   f'fill="{COLORS[name]}"/><text x="{lx + 20}" y="{ly}">{label}</text>')
        lx += 40 + 8 * len(label)
    if unobserved:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="12" '
                   f'fill="url(#unobserved)" stroke="#555" stroke-width="0.5"/>'
                   f'<text x="{lx + 20}" y="{ly}">unobserved</text>')
        lx += 40 + 8 * len("unobserved")
    if any(flapping.values()):
        out.append(f'<rect x="{lx}" y="{ly - 4}" width="14" height="3" fill="{FLAPPING}"/>'
                   f'<text x="{lx + 20}" y="{ly}">flapping</text>')
        lx += 40 + 8 * len("flapping")
    shown = {role for stretches in roles.values() for _, _, role in stretches}
    for role, shade in ROLE_SHADES.items():
        if role in shown:
            out.append(f'<rect x="{lx}" y="{ly - 10}" width="14" height="12" fill="{shade}" '
                       f'fill-opacity="0.75"/><text x="{lx + 20}" y="{ly}">{role}</text>')
            lx += 40 + 8 * len(role)
    if not nodes:
        out.append(f'<text x="{LABEL_W}" y="{TOP + 18}" fill="#555">no nodes in this '
                   f'window</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(svg: str, title: str = "membership timeline") -> str:
    """A self-contained page around the SVG."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_x(title)}</title>"
        "<style>body{margin:16px;background:#fff}</style></head>\n<body>\n"
        f"{svg}</body></html>\n"
    )


def picture(audit: Audit) -> str:
    """The picture of an :data:`~membership_log.core.figures.Audit`'s window: one row per
    node in the audit's order, its incidents, its observers' unobserved stretches and its
    flapping stretches."""
    from ..core.incidents import as_incident
    from ..core.timespec import iso

    rows = [as_incident(r.incident) for n in audit.nodes.values() for r in n.incidents]
    gaps = [g for s in audit.observers.values() for g in s.unobserved]
    flaps = {name: [(a, b) for a, b, _ in n.flapping] for name, n in audit.nodes.items()}
    roles = {name: list(n.roles) for name, n in audit.nodes.items()}
    return render_svg(list(audit.nodes), rows, audit.since, audit.until, iso,
                      unobserved=gaps, flapping=flaps, roles=roles)
