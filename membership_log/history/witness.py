"""Witnessed history (SPEC): a log's tree head, its proofs, and holding logs to the heads
other observers witnessed.

Each log keeps a Merkle tree over its event hashes (:mod:`membership_log.core.merkle`; the
append paths keep its frontier in ``merkle_head``). A node publishes its head over Serf
(``membership head --publish``, :mod:`membership_log.ops.serfagent`); every observer records it
and the fold keeps it (:mod:`membership_log.core.fold`, ``witness_head``). Here:

- :func:`head_of`: the head of one log (``membership head``);
- :func:`inclusion` and :func:`consistency`: proof documents (``membership prove``), checked
  by :mod:`membership_log.core.proofs` without a store;
- :func:`tree_facts` and :func:`check_tree`: ``verify``'s look at a log's tree: the kept
  frontier against the log, and the log against every head another observer recorded of
  it;
- :func:`check_shipment`: ``ship``'s refusal of events that contradict heads witnessed for
  their log on the central store;
- :func:`keep_trees`: the frontier of every log computed from the log (an upgrade, and
  ``rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core import merkle, proofs
from ..core.errors import MembershipError
from ..core.raw import GENESIS
from ..core.records import record
from ..core.witness import CONFLICT
from ..render.jsondoc import export_doc
from ..stores.node import NodeStore
from ..stores.protocol import ROLE_CENTRAL, Store

#: A log's tree head: ``observer`` (the node whose log it is), ``size`` (its head seq) and
#: ``root`` (bytes).
Head = record("Head", "observer size root")

#: A head another observer recorded of a log: ``size``, ``root`` (bytes), the ``witnesses``
#: (observer names) and where they recorded it (``(log origin, seq)`` pairs).
Witnessed = record("Witnessed", "size root witnesses events")


def _short(h: bytes) -> str:
    return h.hex()[:16] + "..."


def _untreeable(store: Store, origin: str) -> MembershipError:
    anchor = store.anchor(origin)
    assert anchor is not None  # only a compacted log has no tree to compute
    return MembershipError(
        f"events 1..{anchor.seq} of this log were compacted before it kept a Merkle tree: "
        f"its tree (which begins at event 1) cannot be computed here any more; the central "
        f"store, which holds every event it was shipped, can (membership head --db URL "
        f"--observer NODE)")


def log_of(store: Store, observer: str | None, what: str) -> tuple[str, str]:
    """``(origin, name)`` of the one log a command works on: a node store's own (``observer``
    must be its observer, if given), or on a central store the log ``observer`` names."""
    if store.role == ROLE_CENTRAL:
        if observer is None:
            held = ", ".join(store.origins()) or "no log yet"
            raise MembershipError(f"{what} works on one node's log: with a central store, add "
                                  f"--observer NODE (it holds: {held})")
        return store.scope(observer).origins[0], observer
    assert isinstance(store, NodeStore)  # the other role
    name = store.origin_name()
    if name is None:
        raise MembershipError(f"store {store.label} has no event with an observer yet: nothing "
                              f"names its log")
    if observer is not None and observer != name:
        raise MembershipError(f"--observer {observer!r}: this node store holds the log of "
                              f"{name!r} only")
    return store.origins()[0], name


def _front(store: Store, origin: str) -> tuple[int, tuple]:
    """The log's frontier at its head: the kept one when it is the head's, else computed
    from the log (inside the caller's read snapshot)."""
    head = store.head_seq(origin)
    kept = store.tree(origin)
    if kept is not None and kept[0] == head:
        try:
            size, front = merkle.decode(bytes(kept[1]))
            if size == head:
                return size, front
        except ValueError:
            pass
    computed = store.log_tree(origin)
    if computed is None:
        raise _untreeable(store, origin)
    return computed[0], computed[1]


def head_of(store: Store, observer: str | None = None) -> Head:
    """The tree head of this node's log (on a central store: the log ``observer`` names)."""
    origin, name = log_of(store, observer, "head")
    with store.read():
        size, front = _front(store, origin)
    return Head(name, size, merkle.root(front, size))


def _witnessed(store: Store, name: str) -> list[tuple]:
    """The heads of ``name``'s log recorded by another observer (a node's own record of its
    own head witnesses nothing)."""
    return [h for h in store.witnessed_heads(head_origin=name) if h[3] != name]


def group(heads: list[tuple]) -> list[Witnessed]:
    """``witness_head`` rows of one origin as :data:`Witnessed`, one per (size, root), by
    size."""
    out: dict[tuple, list] = {}
    for origin, seq, _, observer, _, size, root, _ in heads:
        out.setdefault((size, bytes(root)), []).append((observer, origin, seq))
    return [Witnessed(size, root, tuple(sorted({o for o, _, _ in v})),
                      tuple((lg, s) for _, lg, s in v))
            for (size, root), v in sorted(out.items())]


# -- proofs ------------------------------------------------------------------------------------


def _prover(store: Store,
            origin: str) -> tuple[Callable[[int, int], list[bytes]], dict, int]:
    """``(leaves, known, floor)`` for core/merkle's proofs over one log: the kept events'
    leaves, and after a compaction the anchor's frontier standing in for the dropped ones."""
    anchor = store.anchor(origin)
    if anchor is None:
        known, floor = {}, 0
    elif anchor.frontier is None:
        raise _untreeable(store, origin)
    else:
        size, front = merkle.decode(anchor.frontier)
        known, floor = merkle.subtrees(front, size), size

    def leaves(lo: int, hi: int) -> list[bytes]:
        rows = store.hashes(origin, lo + 1, hi)
        if len(rows) != hi - lo:
            raise MembershipError(f"events {lo + 1}..{hi} are not all in the log: it is damaged "
                                  f"(run: membership verify)")
        return [merkle.leaf_hash(bytes(h)) for _, h in rows]

    return leaves, known, floor


def _size(store: Store, origin: str, size: int, what: str) -> None:
    head = store.head_seq(origin)
    if size > head:
        raise MembershipError(f"{what} {size}: the log's last event is {head}, so its tree has "
                              f"at most {head} leaves")


def inclusion(store: Store, seq: int, size: int | None = None,
              observer: str | None = None) -> tuple[dict, list[str]]:
    """The inclusion proof of event ``seq`` (SPEC "Witnessed history") in the tree of
    ``size``; by default the largest head of this log another observer witnessed that holds
    the event, else the head. Returns the document and warnings (a witnessed root at that
    size that is not this log's)."""
    origin, name = log_of(store, observer, "prove")
    notes: list[str] = []
    with store.read():
        head = store.head_seq(origin)
        first = store.first_seq(origin)
        if not 1 <= seq <= head:
            raise MembershipError(f"there is no event {seq}: the log's last event is {head}")
        if seq < first:
            raise MembershipError(f"event {seq} was compacted away: the earliest event kept is "
                                  f"{first}, and a proof carries its event")
        witnessed = [h for h in _witnessed(store, name) if seq <= h[5] <= head]
        if size is None:
            size = max((h[5] for h in witnessed), default=head)
        _size(store, origin, size, "--size")
        leaves, known, floor = _prover(store, origin)
        (raw,) = list(store.events(origin, seq - 1, seq))
        if seq == 1:
            prev = GENESIS
        elif seq - 1 == floor and (anchor := store.anchor(origin)) is not None:
            prev = anchor.hash
        else:
            prev = bytes(store.hashes(origin, seq - 1, seq - 1)[0][1])
        try:
            doc = proofs.inclusion(name, export_doc(raw), prev, size, leaves, known, floor)
        except merkle.Unprovable as e:
            raise MembershipError(f"cannot prove event {seq} in the tree of size {size}: {e}") \
                from None
    notes += _against_witnesses(witnessed, size, bytes.fromhex(doc["root"]))
    return doc, notes


def consistency(store: Store, m: int, n: int | None = None,
                observer: str | None = None) -> tuple[dict, list[str]]:
    """The consistency proof of this log from size ``m`` to ``n`` (default: the head)."""
    origin, name = log_of(store, observer, "prove")
    with store.read():
        head = store.head_seq(origin)
        n = head if n is None else n
        _size(store, origin, n, "--to")
        if m > n:
            raise MembershipError(f"--from {m} is after --to {n}")
        leaves, known, floor = _prover(store, origin)
        try:
            doc = proofs.consistency(name, m, n, leaves, known, floor)
        except merkle.Unprovable:
            raise MembershipError(f"cannot prove consistency from size {m}: events 1..{floor} "
                                  f"were compacted, and with them the tree nodes such a proof "
                                  f"needs; sizes from {floor} on can be proved") from None
        witnessed = [h for h in _witnessed(store, name) if h[5] in (m, n)]
    notes = _against_witnesses(witnessed, m, bytes.fromhex(doc["root_from"])) + \
        _against_witnesses(witnessed, n, bytes.fromhex(doc["root_to"]))
    return doc, notes


def _against_witnesses(heads: list[tuple], size: int, root: bytes) -> list[str]:
    return [f"{', '.join(w.witnesses)} witnessed root {_short(w.root)} at size {size}; this "
            f"log's root there is {_short(root)}: the log is not the one they saw"
            for w in group([h for h in heads if h[5] == size]) if w.root != root]


# -- holding logs to their witnessed heads -----------------------------------------------------


#: What ``verify`` reads of a log's tree, in the snapshot it checks the log in: ``heads``
#: (``witness_head`` rows of this log recorded by other observers), ``witnessed``
#: (:func:`group` of them), ``base`` (:meth:`Store.tree_base`), ``kept`` (the kept
#: ``(size, frontier blob)``), ``head`` and ``floor`` (the last compacted event, 0 if none).
TreeFacts = record("TreeFacts", "heads witnessed base kept head floor")


def tree_facts(store: Store, origin: str, name: str | None) -> TreeFacts:
    """The :data:`TreeFacts` of one log, inside the caller's read snapshot."""
    heads = _witnessed(store, name) if name is not None else []
    return TreeFacts(heads, group(heads), store.tree_base(origin), store.tree(origin),
                     store.head_seq(origin), store.first_seq(origin) - 1)


def check_tree(facts: TreeFacts, computed: tuple | None, label: str) -> tuple[list, list, list]:
    """``verify`` of one log's tree: ``(ok, notes, problems)`` lines, each problem ``(seq or
    None, what)``. ``computed``: ``(size, frontier, roots)`` of the log's tree as verify's
    pass over the log computed it (:func:`membership_log.core.frontier.resume`), with the
    root at every witnessed size the log has reached; None if the log cannot have one.

    The kept frontier must be the log's (the anchor's frontier extended by every kept
    event); every head another observer recorded of this log, at a size the log has
    reached, must have the log's root at that size. A contradiction names the witnesses,
    the witnessed size, and the events that differ from what they saw: those after the
    largest witnessed size that still agrees. A head beyond the log's end is only a note:
    the log may not have been shipped that far yet. Conflicts the witnesses' folds found
    between this origin's own heads (a fork, a log that went back) are problems too."""
    ok: list[str] = []
    notes: list[str] = []
    problems: list[tuple] = []
    heads, witnessed, kept, head = facts.heads, facts.witnessed, facts.kept, facts.head
    if computed is None:
        notes.append(f"{label}events 1..{facts.floor} were compacted before the log kept a "
                     f"Merkle tree: its tree cannot be computed or checked here")
        return ok, notes, problems
    size, front, roots = computed
    if kept is None:
        if head:
            problems.append((None, f"{label}no Merkle frontier is kept for this log (run: "
                                   f"membership rebuild)"))
    elif kept[0] != size or bytes(kept[1]) != merkle.encode(front, size):
        problems.append((None, f"{label}the kept Merkle frontier (size {kept[0]}) is not the "
                               f"log's (size {size}, root {_short(merkle.root(front, size))})"
                               f" (run: membership rebuild)"))
    floor = facts.floor
    agree: list[Witnessed] = []
    disagree: list[Witnessed] = []
    ahead: list[Witnessed] = []
    for w in witnessed:
        if w.size > size:
            ahead.append(w)
        elif w.size < floor:
            continue  # compacted: no root to hold it to (the central store checks it)
        elif roots[w.size] == w.root:
            agree.append(w)
        else:
            disagree.append(w)
    if disagree:
        bad = disagree[0]
        below = [w.size for w in agree if w.size < bad.size]
        lo = (max(below) if below else 0) + 1
        names = sorted({n for w in disagree for n in w.witnesses})
        problems.append((lo, (
            f"{label}the log contradicts {len(disagree)} head(s) witnessed by {', '.join(names)}"
            f": at size {bad.size} {', '.join(bad.witnesses)} recorded root {_short(bad.root)}, "
            f"the log's root there is {_short(roots[bad.size])}; {_events(lo, bad.size)} they "
            f"saw (rewritten, truncated or re-created since)")))
    for log, seq, _, observer, _, _, _, conflict in heads:
        if conflict is not None:
            reason = conflict[len(CONFLICT):] if conflict.startswith(CONFLICT) else conflict
            problems.append((None, f"{label}{observer} witnessed (event {seq} of "
                                   f"{log or observer}'s log): {reason}"))
    if ahead:
        notes.append(f"{label}{len(ahead)} head(s) witnessed by "
                     f"{', '.join(sorted({n for w in ahead for n in w.witnesses}))} are beyond "
                     f"its event {size} (up to size {ahead[-1].size}): not checked until it "
                     f"gets there")
    if not any(p[1].startswith(f"{label}the kept") or p[1].startswith(f"{label}no Merkle")
               for p in problems):
        ok.append(f"{label}Merkle tree of {size} events (root {_short(merkle.root(front, size))})"
                  f" kept as the log gives it")
    if agree:
        sizes = (f"size {agree[0].size}" if len(agree) == 1
                 else f"sizes {agree[0].size}..{agree[-1].size}")
        ok.append(f"{label}agrees with {len(agree)} head(s) witnessed by "
                  f"{', '.join(sorted({n for w in agree for n in w.witnesses}))} ({sizes})")
    return ok, notes, problems


def _events(lo: int, hi: int) -> str:
    return f"event {lo} is not the one" if lo == hi else f"events {lo}..{hi} are not the ones"


def unshipped_witnessed(store: Store, origins: list[str]) -> list[str]:
    """Notes on heads witnessed of logs the central store does not hold."""
    out = []
    held = set(origins)
    by: dict[str, list] = {}
    for h in store.witnessed_heads():
        if h[4] not in held and h[3] != h[4]:
            by.setdefault(h[4], []).append(h)
    for name, heads in sorted(by.items()):
        conflicts = sum(1 for h in heads if h[7] is not None)
        out.append(f"{name}: {len(heads)} head(s) witnessed by "
                   f"{', '.join(sorted({h[3] for h in heads}))}"
                   + (f" ({conflicts} contradicting an earlier one)" if conflicts else "")
                   + ", but its log was never shipped here: not checked")
    return out


def check_shipment(central: Store, origin: str, c_head: int, rows: list[tuple]) -> None:
    """Refuse (one line) events ``rows`` (stored rows, seqs ``c_head+1..``) of ``origin``'s
    log if the tree they give contradicts a head another observer witnessed for it, already
    on the central store, at a size they reach. A witness's own log is never held to what
    it witnessed: only the log of the origin a head names is."""
    if not rows:
        return
    end = c_head + len(rows)
    heads = [h for h in central.witnessed_heads(head_origin=origin, after=c_head, through=end)
             if h[3] != origin]
    if not heads:
        return
    front = None
    kept = central.tree(origin)
    if kept is not None and kept[0] == c_head:
        size, front = merkle.decode(bytes(kept[1]))
    if front is None:
        computed = central.log_tree(origin)
        assert computed is not None  # a central store keeps every event it was shipped
        front = computed[1]
    leaves = [merkle.leaf_hash(bytes(r[6])) for r in rows]
    size = c_head
    for w in group(heads):
        front = merkle.extend(front, size, leaves[size - c_head:w.size - c_head])
        size = w.size
        mine = merkle.root(front, size)
        if mine != w.root:
            raise MembershipError(
                f"refusing to ship events {c_head + 1}..{end} of {origin}: its tree at size "
                f"{w.size} (root {_short(mine)}) contradicts the head {', '.join(w.witnesses)} "
                f"witnessed at that size (root {_short(w.root)}): the log was rewritten, "
                f"truncated or re-created after they saw it")


def keep_trees(store: Store, recompute: bool = False) -> list[str]:
    """Compute each log's frontier from the log and keep it where the kept one is missing or
    not the head's (``recompute``: in any case, as ``rebuild`` does); the logs whose tree
    was written. A log compacted before it kept a tree gets none."""
    done = []
    for origin in store.origins():
        with store.write():
            head = store.head_seq(origin)
            kept = store.tree(origin)
            if not recompute and (kept is not None and kept[0] == head or head == 0):
                continue
            computed = store.log_tree(origin)
            if computed is None:
                continue
            size, front, _ = computed
            store.put_tree(origin, size, merkle.encode(front, size))
            done.append(origin)
    return done
