"""Is the log what was recorded, and does everything derived from it agree with it?

:func:`check_chain` is pure: raw events in, the first problem out. An edit, deletion,
insertion or reordering of raw events breaks the sequence or the hash chain at the first
event it touches. :func:`check_derived` compares a snapshot and a live file with a fresh
fold of the raw log (:func:`membership_log.project.fold`, the one fold).
"""

from __future__ import annotations

from collections import namedtuple

from . import audit, events, livefile, project
from .raw import GENESIS, hash_of

#: ``seq``: the first bad event (or the seq the problem concerns); ``what``: one line.
Problem = namedtuple("Problem", "seq what")


def check_chain(raws) -> tuple[int, bytes, Problem | None]:
    """Walk the raw log in seq order. Returns ``(events checked, last hash, problem)``."""
    prev = GENESIS
    expected = 1
    count = 0
    for raw in raws:
        if raw.seq != expected:
            what = (f"event {expected} is missing (the log jumps to {raw.seq})"
                    if raw.seq > expected else f"event {raw.seq} appears out of order")
            return count, prev, Problem(expected, what)
        if raw.hash != hash_of(raw, prev):
            return count, prev, Problem(
                raw.seq, f"event {raw.seq} does not match its hash: edited, inserted or "
                f"reordered")
        prev = raw.hash
        expected += 1
        count += 1
    return count, prev, None


def check_derived(raws, snapshot: tuple | None, live_bytes: bytes | None,
                  live_path: str | None, fmt: str = "droonga",
                  checkpoints: dict | None = None) -> tuple[list[Problem], list[str]]:
    """Compare the stored snapshot ``(seq, state, live)`` and the live file's bytes with a
    fresh fold. ``raws`` must be the whole log in order. Returns ``(problems, notes)``:
    derived state that merely lags the log (a handler killed between recording an event and
    folding it; the next run catches up) is a note, a disagreement is a problem."""
    problems: list[Problem] = []
    notes: list[str] = []
    state = project.EMPTY
    at_snapshot = project.EMPTY if snapshot is not None and snapshot[0] == 0 else None
    snap_seq = snapshot[0] if snapshot else None
    checkpoints = checkpoints or {}
    # Live files a handler may legitimately have left while the fold lags: the render after
    # the snapshot and after every later event (a handler killed after writing the file,
    # before committing its fold, then another killed after recording, before folding).
    lag_renders = set()
    if snapshot is not None and snap_seq == 0 and live_path is not None:
        lag_renders.add(livefile.render_state(state, fmt))
    for raw in raws:
        state = project.step(state, events.parse(raw))
        if raw.seq == snap_seq:
            at_snapshot = state
        if snap_seq is not None and raw.seq >= snap_seq and live_path is not None:
            lag_renders.add(livefile.render_state(state, fmt))
        if raw.seq in checkpoints and checkpoints[raw.seq] != state:
            problems.append(Problem(raw.seq, f"the checkpoint at event {raw.seq} differs from "
                                    f"a fresh fold (run: membership rebuild)"))
    beyond = [seq for seq in checkpoints if seq > state.seq]
    if beyond:
        problems.append(Problem(state.seq + 1, f"a checkpoint exists for event {min(beyond)}, "
                                f"but the log ends at {state.seq}: events are missing"))
    snap_live_ok = False
    if snapshot is not None:
        seq, snap_state, snap_live = snapshot
        if seq > state.seq:
            problems.append(Problem(state.seq + 1, f"the snapshot has folded up to event "
                                    f"{seq}, but the log ends at {state.seq}: events "
                                    f"{state.seq + 1}..{seq} are missing"))
        elif at_snapshot is None or snap_state != at_snapshot:
            problems.append(Problem(seq, f"the snapshot at event {seq} differs from a fresh "
                                    f"fold (run: membership rebuild)"))
        elif snap_live != livefile.render_state(at_snapshot):
            problems.append(Problem(seq, f"the snapshot's live-file bytes at event {seq} "
                                    f"differ from a fresh fold (run: membership rebuild)"))
        else:
            snap_live_ok = True
            if seq < state.seq:
                notes.append(f"events {seq + 1}..{state.seq} are recorded but not folded yet "
                             f"(the next handler run or membership rebuild folds them)")
    if live_path is not None:
        expected = livefile.render_state(state, fmt)
        lagging = snap_live_ok and snapshot[0] < state.seq and live_bytes in lag_renders
        if live_bytes is None:
            problems.append(Problem(state.seq, f"the live file {live_path} is missing "
                                    f"(run: membership rebuild)"))
        elif live_bytes != expected and not lagging:
            problems.append(Problem(state.seq, f"the live file {live_path} differs from a "
                                    f"fresh fold of the log up to event {state.seq} "
                                    f"(run: membership rebuild)"))
    return problems, notes


def check_incidents(raws, stored: list) -> list[Problem]:
    """Compare the derived incidents with those a fresh fold finds (audit.collect over the
    one fold's changes)."""
    fresh, _, _, _ = audit.collect(project.steps(events.parse(r) for r in raws))

    def key(i):
        return (i.node, i.down_seq, i.up_seq, i.cause)

    want = sorted(map(key, fresh))
    have = sorted(map(key, stored))
    if want == have:
        return []
    diff = sorted(set(want) ^ set(have), key=lambda k: k[1])
    return [Problem(diff[0][1], f"the derived incidents differ from a fresh fold from event "
                                f"{diff[0][1]} on (run: membership rebuild)")]
