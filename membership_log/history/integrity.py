"""``verify``: is the log what was recorded, and does everything derived agree with it?

One pass over each log, inside one read transaction (a consistent snapshot, however many
handlers run meanwhile): every event's place in the hash chain is checked (from the
retention anchor if the log was compacted), and the same events go through the one fold
driver and its :class:`~membership_log.history.driver.Keeper`, in memory. What the store keeps
(checkpoints, incidents, observer sessions, the head snapshot) must equal what that fresh
fold keeps up to the point the store had folded; the live file must equal the fold at the
head. Derived state that only lags the log (a handler killed after recording, before
folding; a rebuild killed midway) is a note, not a failure: the next run catches up.
There is one fold and one keeper: verify compares the store with them, never with a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..core import anchors, frontier
from ..core import fold as project
from ..core.codec import STATE_FORMAT, decode_anchor_state, decode_state, encode_state, plain_of
from ..core.errors import MembershipError
from ..core.frontier import Stretch
from ..core.incidents import close
from ..core.raw import GENESIS, chain_hash, raw_of_row
from ..core.records import record
from ..render import livefile
from ..settings import Settings
from ..stores import files
from ..stores.node import NodeStore
from ..stores.protocol import NODE, ROLE_CENTRAL, Store
from . import driver as derive
from . import witness

#: A progress callback: ``progress(done, total)``.
Progress = Callable[[int, int], None]

#: ``seq``: the first bad event (None for a problem that names no event); ``what``: one line.
Problem = record("Problem", "seq what")

#: ``ok``: lines of what was found sound; ``notes``: lag and other things that are not
#: failures; ``problems``: :data:`Problem` list, empty when all is well.
Report = record("Report", "ok notes problems")


class Chain:
    """Checks a stretch of a log's stored rows ``(seq, received_us, observer, source, env
    blob, stdin, hash)`` from event ``first`` (whose predecessor's hash is ``prev``) through
    ``last``, as :meth:`walk` hands them on: an edit, deletion, insertion or reordering
    breaks the sequence or the chain (computed over the bytes as stored) at the first event
    it touches. Each event checked goes into ``tree`` too, so one read of the rows checks
    the chain, hashes the Merkle tree and feeds the fold. ``count``: events checked;
    ``problem``: the first :data:`Problem`, or None once the walk is through."""

    def __init__(self, first: int, prev: bytes, last: int,
                 tree: Stretch | None = None) -> None:
        self.first, self.prev, self.last, self.tree = first, prev, last, tree
        self.count = 0
        self.problem: Problem | None = None

    def walk(self, rows: Iterable[tuple]) -> Iterator[tuple]:
        """The rows through ``last``, each once its place in the chain is checked; it stops
        before the first that breaks it."""
        add = self.tree.add if self.tree is not None else None
        first, prev, last = self.first, self.prev, self.last
        expected = first
        try:
            for row in rows:
                seq, received_us, observer, source, env, stdin, hash_ = row
                if seq > last:
                    break
                if seq != expected:
                    self.problem = Problem(expected, (
                        f"event {expected} is missing (the log jumps to {seq})"
                        if seq > expected else f"event {seq} appears out of order"))
                    return
                if hash_ != chain_hash(prev, seq, received_us, observer, source, env, stdin):
                    self.problem = Problem(seq, f"event {seq} does not match its hash: "
                                                f"edited, inserted or reordered")
                    return
                prev = hash_
                if add is not None:
                    add(seq, hash_)
                expected += 1
                yield row
            if self.tree is not None:
                self.tree.flush()
            if expected <= last:
                self.problem = Problem(expected, f"event {expected} is missing (the log "
                                                 f"ends at {expected - 1})")
        finally:
            self.count = expected - first


def _segment(job: tuple) -> dict:
    """Check and fold one stretch of a log: events ``start+1..end``, from the state right
    after ``start`` (a checkpoint's, the anchor's or the empty state). In a worker process
    the store is opened anew (``job[0]`` is its URL); in this one it is passed in. Keeps the
    fresh state at every seq the store holds a checkpoint for (``cps``), with the earliest
    receive time since the previous one, and hashes the stretch's Merkle tree, cut at the
    witnessed sizes ``stops`` (None: the log has no tree to check)."""
    (store, origin, start, end, state_blob, prev, derived_seq, live_fmt, cps, stops) = job
    own = isinstance(store, str)
    if own:
        from ..stores.setup import open_store

        store = open_store(store)
    try:
        state = project.from_plain(plain_of(state_blob)) if state_blob else \
            project.State()
        keeper = derive.Keeper()
        out: dict[str, Any] = {"count": 0, "at_snapshot": None, "lag": set(), "problem": None,
                               "at_cps": {}}
        if derived_seq == start:
            out["at_snapshot"] = project.to_plain(state)
        tree = Stretch(start, stops) if stops is not None else None
        chain = Chain(start + 1, prev, end, tree)
        raws = map(raw_of_row, chain.walk(store.rows(origin, start, end)))
        low = None
        for raw, event, effect in derive.forward(state, raws):
            keeper.see(state, raw, event, effect)
            low = raw.received_us if low is None or raw.received_us < low else low
            if raw.seq in cps:
                out["at_cps"][raw.seq] = (project.to_plain(state), state.max_at, low)
                low = None
            if raw.seq == derived_seq:
                out["at_snapshot"] = project.to_plain(state)
            if live_fmt is not None and derived_seq is not None and raw.seq >= derived_seq:
                rendered, _ = livefile.file_of(state, live_fmt)
                if rendered is not None:
                    out["lag"].add(rendered)
        out["problem"] = chain.problem and tuple(chain.problem)
        out["tree"] = None if tree is None else (tree.start, tree.pieces)
        if chain.problem is not None:
            return out
        batch = keeper.take()
        out.update(count=chain.count, seq=state.seq, end_plain=project.to_plain(state),
                   incidents=batch.incidents, closed=batch.closed, sessions=batch.sessions,
                   heads=batch.heads)
        return out
    finally:
        if own:
            store.close()


def check_anchor(store: Store, origin: str) -> Problem | None:
    """Whether the log's retention anchor is the one its log records (the anchor's state
    replaces the events it summarises, so it is held to its record in the hash chain: see
    :mod:`membership_log.core.anchors`); ``rebuild`` refuses to fold from one that is not."""
    anchor = store.anchor(origin)
    if anchor is None:
        return None
    why = anchors.check(anchor, store.latest_anchors(origin))
    if why is None:
        try:
            decode_anchor_state(anchor, store.label)
        except MembershipError as e:
            why = str(e)
    return Problem(anchor.seq + 1, why) if why is not None else None


def verify_log(store: Store, origin: str, label: str, live_path: str | None = None,
               fmt: str = "droonga", progress: Progress | None = None,
               url: str | None = None) -> Report:
    """Verify one log of a store (see the module's docstring). A long log is cut at its
    checkpoints and the stretches checked on every core
    (:mod:`membership_log.history.parallel`): each starts from a stored checkpoint, which
    the stretch before it checks."""
    from . import parallel

    ok: list[str] = []
    notes: list[str] = []
    problems: list[Problem] = []
    rebuild = " (run: membership rebuild)"
    with store.read():
        head = store.head_seq(origin)
        anchor = store.anchor(origin)
        snap = store.snapshot(origin)
        stored_cps = {r[0]: r for r in store.checkpoints(origin)}
        stored_incidents = sorted(tuple(r) for r in store.incidents(origin))
        stored_sessions = [tuple(r) for r in store.sessions(origin)]
        stored_heads = sorted(tuple(r[1:]) for r in store.witnessed_heads(log=origin))
        if anchor is not None:
            bad = check_anchor(store, origin)
            if bad is not None:
                return Report(ok, notes, [bad._replace(what=label + bad.what)])
            first, prev = anchor.seq + 1, anchor.hash
            start_blob = encode_state(decode_anchor_state(anchor, store.label))
            # Incidents that began before the anchor are kept, as the store kept them.
            kept = [r for r in stored_incidents if r[5] <= anchor.seq]
        else:
            first, prev, start_blob, kept = 1, GENESIS, None, []
        # The Merkle tree, and the heads other observers witnessed of this log (SPEC
        # "Witnessed history"): hashed by the same pass, in the same snapshot.
        name = store.origin_name() if isinstance(store, NodeStore) else origin  # central
        facts = witness.tree_facts(store, origin, name)
        sizes = sorted({w.size for w in facts.witnessed})
        derived_seq = snap[0] if snap is not None else None
        bounds = [first - 1, head]
        if url is not None:
            bounds = parallel.split_at_checkpoints(store, origin, first, head,
                                                   parallel.workers())
        jobs = []
        blob: bytes | None
        for k in range(len(bounds) - 1):
            lo, hi = bounds[k], bounds[k + 1]
            if k:
                cp = stored_cps[lo]
                blob, (_, prev_hash) = bytes(cp[4]), store.hashes(origin, lo, lo)[0]
            else:
                blob, prev_hash = start_blob, prev
            cps = frozenset(q for q in stored_cps if lo < q <= hi)
            stops = None if facts.base is None else [q for q in sizes if lo < q <= hi]
            jobs.append((store if k == 0 else url, origin, lo, hi, blob, bytes(prev_hash),
                         derived_seq, fmt if live_path is not None else None, cps, stops))
        parts = parallel.fork_map(_segment, jobs)
    problem = next((Problem(*p["problem"]) for p in parts if p["problem"]), None)
    count = sum(p["count"] for p in parts)
    if problem is None and parts[-1].get("seq") != head:
        problem = Problem(head, f"the log ends at event {parts[-1].get('seq')}, but its head "
                                f"says {head}")
    at_snapshot = next((p["at_snapshot"] for p in parts if p["at_snapshot"] is not None), None)
    at_snapshot = project.from_plain(at_snapshot) if at_snapshot is not None else None
    lag_renders = set().union(*(p["lag"] for p in parts))
    if problem is not None:
        return Report(ok, notes, [problem._replace(what=label + problem.what)])
    state = project.from_plain(parts[-1]["end_plain"])
    ok.append(f"{label}{count} events, hash chain intact"
              + (f" from the retention anchor at event {first - 1}" if anchor else ""))
    computed = None
    if facts.base is not None:
        computed = frontier.resume(facts.base[1], facts.base[0],
                                   [p["tree"] for p in parts], sizes)
    t_ok, t_notes, t_problems = witness.check_tree(facts, computed, label)
    ok += t_ok
    notes += t_notes
    problems += [Problem(*p) for p in t_problems]

    # Derived state must say what the fold knew at the snapshot (derived_seq).
    if derived_seq is None:
        if head:
            notes.append(f"{label}events {first}..{head} are recorded but not folded yet "
                         f"(the next handler run or membership rebuild folds them)")
        derived_seq = first - 1
    elif derived_seq > head:
        problems.append(Problem(head + 1, f"{label}the snapshot has folded up to event "
                                f"{derived_seq}, but the log ends at {head}: events are "
                                f"missing"))
        return Report(ok, notes, problems)
    else:
        assert snap is not None  # derived_seq is its seq
        fmt_ok = snap[1] == STATE_FORMAT
        snap_state = decode_state(snap[1], bytes(snap[2])) if fmt_ok else None
        if not fmt_ok:
            notes.append(f"{label}the snapshot is in another format ({snap[1]}); it is "
                         f"refolded on the next run")
        elif at_snapshot is None or snap_state != at_snapshot:
            problems.append(Problem(derived_seq, f"{label}the snapshot at event {derived_seq} "
                                    f"differs from a fresh fold{rebuild}"))
        elif bytes(snap[3]) != livefile.render_view(at_snapshot.nodes):
            problems.append(Problem(derived_seq, f"{label}the snapshot's live-file bytes at "
                                    f"event {derived_seq} differ from a fresh fold{rebuild}"))
        else:
            ok.append(f"{label}snapshot at event {derived_seq} agrees with a fresh fold")
        if derived_seq < head:
            notes.append(f"{label}events {derived_seq + 1}..{head} are recorded but not "
                         f"folded yet (the next handler run or membership rebuild folds them)")
    fresh_cps = {q: v for p in parts for q, v in p["at_cps"].items()}
    for seq, row in sorted(stored_cps.items()):
        if seq > head:
            problems.append(Problem(head + 1, f"{label}a checkpoint exists for event {seq}, "
                                    f"but the log ends at {head}: events are missing"))
            break
        if row[3] != STATE_FORMAT:
            continue  # another release's: ignored by reads, refolded by rebuild
        want = fresh_cps.get(seq)
        if want is None or plain_of(bytes(row[4])) != want[0] or row[1] != want[1] \
                or row[2] != want[2]:
            problems.append(Problem(seq, f"{label}the checkpoint at event {seq} differs from "
                                         f"a fresh fold{rebuild}"))
            break
    fresh = kept
    for p in parts:  # an incident still open across a part ends in a later one
        fresh = close(fresh, p["closed"]) + list(p["incidents"])
    as_of = []
    for r in fresh:
        if r[5] > derived_seq:
            continue
        if r[6] is not None and r[6] > derived_seq:
            r = (*r[:2], None, r[3], r[4], r[5], None)
        as_of.append(tuple(r))
    as_of.sort()
    if as_of != stored_incidents:
        diff = sorted(set(as_of) ^ set(stored_incidents), key=lambda r: r[5])
        problems.append(Problem(diff[0][5], f"{label}the derived incidents differ from a fresh "
                                            f"fold from event {diff[0][5]} on{rebuild}"))
    fresh_heads = sorted([h for h in stored_heads if h[0] <= first - 1]
                         + [tuple(h) for p in parts for h in p["heads"] if h[0] <= derived_seq])
    if fresh_heads != stored_heads:
        diff = sorted(set(fresh_heads) ^ set(stored_heads))
        problems.append(Problem(diff[0][0], f"{label}the witnessed heads differ from a fresh "
                                            f"fold from event {diff[0][0]} on{rebuild}"))
    fresh_sessions = [s for p in parts for s in p["sessions"] if s[0] <= derived_seq]
    old_sessions = [s for s in stored_sessions if s[0] <= first - 1]
    if old_sessions + fresh_sessions != stored_sessions:
        problems.append(Problem(None, f"{label}the observer sessions differ from a fresh "
                                      f"fold{rebuild}"))
    if live_path is not None:
        r = check_live_file(store, origin, state, head, live_path, fmt, lag_renders, label)
        ok += r.ok
        notes += r.notes
        problems += r.problems
    return Report(ok, notes, problems)


def check_live_file(store: Store, origin: str, state: project.State, head: int,
                    live_path: str, fmt: str,
                    lag_renders: frozenset | set = frozenset(), label: str = "") -> Report:
    """Whether the live file at ``live_path`` is the one the log gives: the fold at ``head``
    (``state``, advanced in place over whatever handlers recorded since), or a lagging one
    (``lag_renders``: the files of states verify saw folded but not yet published)."""
    ok: list[str] = []
    notes: list[str] = []
    problems: list[Problem] = []
    rebuild = " (run: membership rebuild)"
    live_bytes = files.read_bytes(live_path)
    expected, why = livefile.file_of(state, fmt)
    if expected is None and fmt != livefile.DROONGA_11 and live_bytes is not None:
        expected = livefile.render_view(state.nodes, fmt)  # no file is due: none is right
    if live_bytes is not None and live_bytes != expected and live_bytes not in lag_renders:
        # Read after the snapshot: a handler may have recorded and folded more since.
        # Fold what it added and accept the file of any state up to the new head.
        for raw, _, _ in derive.forward(state, store.events(origin, head)):
            rendered, _ = livefile.file_of(state, fmt)
            if rendered is not None and rendered == live_bytes:
                notes.append(f"{label}the live file is that of event {raw.seq}, recorded "
                             f"while verify ran")
                expected = live_bytes
                break
    if live_bytes is None:
        if expected is not None:
            problems.append(Problem(head, f"the live file {live_path} is missing{rebuild}"))
        else:
            ok.append(f"no live file {live_path}, rightly: {why}")
    elif expected is None:
        # Droonga 1.1's file with no catalog Droonga can load: the handler leaves the file
        # as it was, so it may be of any earlier state; not checked.
        notes.append(f"{label}the live file {live_path} is left as it was, not checked: {why}")
    elif live_bytes != expected and live_bytes not in lag_renders:
        problems.append(Problem(head, f"the live file {live_path} differs from a fresh "
                                      f"fold of the log up to event {head}{rebuild}"))
    else:
        ok.append(f"live file {live_path} agrees with the log")
    return Report(ok, notes, problems)


#: What the spool holds: events ``waiting`` (paths not yet taken in), files ``taken`` in
#: already (a handler killed before deleting them), files that cannot be read (``unusable``,
#: in the spool or quarantined in ``unreadable/``).
SpoolState = record("SpoolState", "waiting taken unusable")


def spool_state(spool_dir: str, store: NodeStore) -> SpoolState:
    """The spool of a node store, read (OSError if it cannot be listed)."""
    import os

    from ..stores import spool

    waiting, bad = spool.scan(spool_dir)
    quarantined = spool.unreadable(os.path.join(spool_dir, spool.UNREADABLE))
    taken: set[str] = set()
    if waiting:  # files whose events are in already
        taken = store.taken_in([os.path.basename(p) for p, _ in waiting])
    left = [p for p, _ in waiting if os.path.basename(p) not in taken]
    return SpoolState(left, sorted(taken), bad + quarantined)


def verify(settings: Settings, progress: Progress | None = None) -> Report:
    """Verify the store ``settings`` name: each log it holds, and on a node store the live
    file and the spool."""
    from ..stores.setup import open_store

    ok: list[str] = []
    notes: list[str] = []
    problems: list[Problem] = []
    with open_store(settings.db_url) as store:
        if store.role == ROLE_CENTRAL:
            from ..stores.central import CentralStore  # loaded already: it is one

            assert isinstance(store, CentralStore)
            origins = store.origins()
            for forged in store.anchor_rows():
                problems.append(Problem(None, f"{forged}: the central store has a retention "
                                              f"anchor for this log, which ship never writes "
                                              f"(it would hide events from verify): forged or "
                                              f"foreign; remove it"))
            for origin in origins:
                r = verify_log(store, origin, f"{origin}: ", progress=progress,
                               url=settings.db_url)
                ok += r.ok
                notes += r.notes
                problems += r.problems
            notes += witness.unshipped_witnessed(store, origins)
            ok.append(f"{len(origins)} node log(s)")
        else:
            r = verify_log(store, NODE, "", settings.live_file, settings.live_format, progress,
                           settings.db_url)
            ok += r.ok
            notes += r.notes
            problems += r.problems
    if store.role != ROLE_CENTRAL:
        import os

        with open_store(settings.db_url) as st:
            assert isinstance(st, NodeStore)  # the store just verified, a node store
            left, taken, unusable = spool_state(settings.spool_dir, st)
        if taken:
            notes.append(f"{len(taken)} spool file(s) in {settings.spool_dir} were taken in "
                         f"already; the next handler run deletes them")
        if left:
            problems.append(Problem(None, f"{len(left)} event(s) wait in the spool "
                                          f"{settings.spool_dir}: the next handler run that "
                                          f"can write the store takes them in"))
        if unusable:
            names = ", ".join(os.path.relpath(p, settings.spool_dir) for p in unusable[:3])
            more = f" and {len(unusable) - 3} more" if len(unusable) > 3 else ""
            problems.append(Problem(None, f"{len(unusable)} spool file(s) in "
                                          f"{settings.spool_dir} cannot be read ({names}{more}):"
                                          f" inspect them, then remove them"))
        if not (left or unusable):
            ok.append("spool empty" if not taken else "spool: nothing waiting")
    return Report(ok, notes, problems)
