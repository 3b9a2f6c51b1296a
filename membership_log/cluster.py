"""Several observers' logs as one cluster-wide view (the central store).

Each observer's events are folded, in that observer's order, by the one fold
(:func:`membership_log.project.step`) into a state of its own; no rule is restated here.
The views are then combined: a node is live cluster-wide only while every observer that
knows it sees it live. So a cluster-wide incident runs from the first observer's report of
the node down to the last observer's report of its recovery, and its ``observers`` are
those that saw it down. Pure.
"""

from __future__ import annotations

from . import project


def combine(views: dict) -> dict[str, project.NodeView]:
    """Node -> the view of it to show: a dead one if any observer sees it dead."""
    out: dict[str, project.NodeView] = {}
    for view in views.values():
        for name, node in view.items():
            current = out.get(name)
            if current is None or (current.live and not node.live):
                out[name] = node
    return out


def merged_steps(tagged):
    """``tagged``: ``(origin, event)`` pairs in the order to fold them (receive time; each
    origin's events in its own order). Yields ``(origin, Step)``, the Step's view and changes
    being the combined, cluster-wide ones."""
    states: dict[str, project.State] = {}
    views: dict[str, dict] = {}
    before: dict[str, project.NodeView] = {}
    for origin, event in tagged:
        state = states.get(origin, project.EMPTY)
        redelivery = project.is_redelivery(state, event)
        states[origin] = state = project.step(state, event)
        views[origin] = project.view(state)
        after = combine(views)
        yield origin, project.Step(event, state, after, project.changes(before, after),
                                   redelivery)
        before = after
