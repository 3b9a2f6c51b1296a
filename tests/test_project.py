"""The liveness rules (SPEC), one test each, on plain data; and properties of the fold."""

import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import CATALOG, NODES, Log

from membership_log.core import events as ev
from membership_log.core import fold as project

N0, N1, N2 = NODES


def live(events, state=None):
    s = project.fold(events, state)
    return sorted(project.live_nodes(s))


def test_every_catalog_node_starts_live():
    log = Log()
    assert live([log.catalog()]) == NODES


def test_failed_and_leave_kill_join_revives():
    log = Log()
    es = [log.catalog(), log.member("member-failed", ("node1", "192.168.100.51"))]
    assert live(es) == [N0, N2]
    es.append(log.member("member-join", ("node1", "192.168.100.51")))
    assert live(es) == NODES
    es.append(log.member("member-leave", ("node2", "192.168.100.52")))
    assert live(es) == [N0, N1]


def test_reap_keeps_dead_and_update_changes_no_liveness():
    log = Log()
    es = [log.catalog(), log.member("member-failed", ("node1", "192.168.100.51")),
          log.member("member-reap", ("node1", "192.168.100.51")),
          log.member("member-update", ("node1", "192.168.100.51")),
          log.member("member-update", ("node2", "192.168.100.52"))]
    assert live(es) == [N0, N2]
    state = project.fold(es)
    assert state.members["node1"].status == project.REAPED
    assert state.members["node2"].status is None  # only an update heard: no liveness info


def test_member_matched_by_name_host_or_address():
    log = Log()
    es = [log.catalog(),
          log.member("member-failed", (N0, "10.9.9.9")),               # exact node id
          log.member("member-failed", ("192.168.100.51", "10.9.9.9")),  # host == member name
          log.member("member-failed", ("node2", "192.168.100.52"))]     # host == address
    assert live(es) == []


def test_unmatched_members_are_shown_but_never_in_the_live_file():
    log = Log()
    es = [log.catalog(), log.member("member-join", ("stranger", "10.1.1.1"))]
    view = project.fold(es).nodes
    assert view["stranger"].live and not view["stranger"].in_catalog
    assert live(es) == NODES


def test_without_catalog_every_member_is_a_node():
    log = Log()
    es = [log.member("member-join", ("a", "10.0.0.1"), ("b", "10.0.0.2")),
          log.member("member-failed", ("b", "10.0.0.2"))]
    s = project.fold(es)
    assert project.live_nodes(s) == {"a": "10.0.0.1"}


def test_operator_mark_and_a_join_does_not_clear_it():
    log = Log()
    es = [log.catalog(), log.user("membership-down", "node1", 1)]
    # "node1" names no catalog node and no member yet: the mark waits until it can match.
    assert live(es) == NODES
    es += [log.member("member-join", ("node1", "192.168.100.51"))]
    assert live(es) == [N0, N2], "a mark made before the member appeared must apply"
    es += [log.member("member-failed", ("node1", "192.168.100.51")),
           log.member("member-join", ("node1", "192.168.100.51"))]
    assert live(es) == [N0, N2], "a Serf join must not clear an operator mark"
    es += [log.user("membership-up", N1, 2, kind="query")]  # cleared by another spelling
    assert live(es) == NODES


def test_mark_by_node_id_and_by_address():
    log = Log()
    assert live([log.catalog(), log.user("membership-down", f"{N0}\n{N2}", 1)]) == [N1]
    log = Log()
    es = [log.catalog(), log.member("member-join", ("node1", "192.168.100.51")),
          log.user("membership-down", "192.168.100.51", 1)]
    assert live(es) == [N0, N2]


def test_a_redelivered_user_event_takes_effect_once():
    log = Log()
    down = log.user("membership-down", "node1", 5)
    es = [log.catalog(), log.member("member-join", ("node1", "192.168.100.51")), down,
          log.user("membership-up", "node1", 6)]
    again = down._replace(seq=log._next()[0])
    assert live(es + [again]) == NODES
    s = project.fold(es)
    assert s.apply(again).redelivery


def test_marks_follow_lamport_time_not_arrival():
    """Real Serf delivered membership-up (ltime 6) before membership-down (ltime 5): the
    node is live (issue 11, item 5)."""
    log = Log()
    es = [log.catalog(), log.member("member-join", ("node1", "192.168.100.51")),
          log.user("membership-up", "node1", 6), log.user("membership-down", "node1", 5)]
    assert live(es) == NODES
    es.append(log.user("membership-down", "node1", 7))
    assert live(es) == [N0, N2]


def test_a_restart_of_the_observers_agent_starts_a_new_session_of_lamport_times():
    """After a cluster restart Lamport times begin at 1 again: a new membership-down at
    ltime 1 is not a duplicate of the old session's ltime 1."""
    log = Log()
    es = [log.catalog(), log.member("member-join", ("o", "10.0.0.9"),
                                    ("node1", "192.168.100.51")),
          log.user("membership-down", "node1", 1), log.user("membership-up", "node1", 9)]
    assert live(es) == NODES
    restart = log.member("member-join", ("o", "10.0.0.9"))  # the observer itself rejoins
    s = project.fold(es)
    effect = s.apply(restart)
    assert effect.restart == ("o", es[-1].at) and s.session == 2
    again = log.user("membership-down", "node1", 1)
    effect = s.apply(again)
    assert not effect.redelivery
    assert sorted(project.live_nodes(s)) == [N0, N2], "a later session's mark wins"


def test_a_mark_naming_too_many_nodes_is_folded_as_nothing():
    log = Log()
    s = project.fold([log.catalog()])
    names = " ".join(f"n{i}" for i in range(project.MAX_MARK_WORDS + 1))
    effect = s.apply(log.user("membership-down", names, 1))
    assert effect.warnings and not s.marks
    effect = s.apply(log.user("membership-down", "x" * (project.MAX_WORD + 1), 2))
    assert effect.warnings and not s.marks


def test_the_state_keeps_a_bounded_number_of_members_and_marks(monkeypatch):
    monkeypatch.setattr(project, "MAX_MEMBERS", 5)
    monkeypatch.setattr(project, "MAX_MARKS", 4)
    log = Log()
    s = project.State()
    effect = s.apply(log.member("member-join", *[(f"m{i}", f"10.0.0.{i + 1}")
                                                   for i in range(8)]))
    assert len(s.members) == 5 and effect.warnings
    s.apply(log.user("membership-down", "m0 m1", 1))
    s.apply(log.user("membership-down", "ghost1 ghost2 ghost3", 2))
    assert len(s.marks) == 4
    assert {"m0", "m1"} <= set(s.marks), "marks naming known nodes are kept first"
    assert not s.nodes["m0"].live and not s.nodes["m1"].live


def test_an_unusable_catalog_keeps_the_last_good_one():
    log = Log()
    es = [log.catalog(), log.member("member-failed", ("node1", "192.168.100.51")),
          log.catalog(None)]
    assert live(es) == [N0, N2]


def test_apply_reports_changes():
    log = Log()
    s = project.State()
    ch = s.apply(log.catalog()).changes
    assert [(c.node, c.before, c.after) for c in ch] == [(n, None, "live") for n in NODES]
    ch = s.apply(log.member("member-failed", ("node1", "192.168.100.51"))).changes
    assert list(ch) == [project.Change(N1, "live", "dead")]
    assert s.apply(log.member("member-update", ("node1", "192.168.100.51"))).changes == ()


def test_fold_leaves_its_input_alone():
    log = Log()
    s = project.fold([log.catalog()])
    before = project.to_plain(s)
    after = project.fold([log.member("member-failed", ("node1", "192.168.100.51"))], s)
    assert project.to_plain(s) == before
    assert sorted(project.live_nodes(after)) == [N0, N2]


# -- properties over random logs ------------------------------------------------------------

names = st.sampled_from(["node0", "node1", "node2", "x", "o", "192.168.100.51",
                         "192.168.100.52", "10.0.0.1", N2])
addresses = st.sampled_from(["192.168.100.50", "192.168.100.51", "192.168.100.52", "10.0.0.1"])


@st.composite
def random_log(draw, max_size=40):
    log = Log()
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        choice = draw(st.integers(0, 3))
        observer = "o"
        if choice == 0:
            out.append(log.catalog(draw(st.sampled_from([CATALOG, None]))))
        elif choice == 1:
            kind = draw(st.sampled_from(sorted(ev.MEMBER_KINDS)))
            ms = draw(st.lists(st.tuples(names, addresses), min_size=1, max_size=3))
            out.append(log.member(kind, *ms, observer=observer))
        else:
            name = draw(st.sampled_from(["membership-down", "membership-up", "other"]))
            payload = " ".join(draw(st.lists(names, max_size=2)))
            out.append(log.user(name, payload, draw(st.integers(0, 5) | st.none()),
                                kind=draw(st.sampled_from(["user", "query"]))))
    return out


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=200)
@given(random_log(), st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_the_whole(es, data):
    cut = data.draw(st.integers(0, len(es)))
    whole = project.fold(es)
    assert project.fold(es[cut:], project.fold(es[:cut])) == whole


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=200)
@given(random_log())
def test_state_round_trips_through_a_marshal_snapshot(es):
    s = project.fold(es)
    back = project.from_plain(marshal.loads(marshal.dumps(project.to_plain(s))))
    assert back == s
    assert project.live_nodes(back) == project.live_nodes(s)


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=300)
@given(random_log())
def test_the_incremental_view_equals_a_view_computed_from_scratch(es):
    """apply() recomputes only the nodes an event can touch; after every event its view, and
    the changes it reported, must equal what a full recomputation gives."""
    s = project.State()
    for e in es:
        before = dict(s.nodes)
        ch = s.apply(e).changes
        scratch = project.from_plain(project.to_plain(s))  # rebuilds every index and view
        assert s.nodes == scratch.nodes
        after = scratch.nodes
        want = []
        for name in sorted(before.keys() | after.keys()):
            b = None if name not in before else ("live" if before[name].live else "dead")
            a = None if name not in after else ("live" if after[name].live else "dead")
            if b != a:
                want.append(project.Change(name, b, a))
        assert list(ch) == want


# -- fuzz: no event, however strange, makes the fold raise --------------------------------

texts = st.text(max_size=12)
any_member = st.builds(ev.Member, texts, texts, texts, st.dictionaries(texts, texts, max_size=2))
any_event = st.builds(
    ev.Event,
    st.integers(1, 10**6), st.integers(0, 2**62), texts,
    st.sampled_from(sorted(ev.SERF_KINDS | {"catalog", "unknown"})) | texts,
    st.sampled_from(["membership-down", "membership-up"]) | texts | st.none(),
    st.integers(-5, 2**40) | st.none(),
    st.lists(any_member, max_size=4).map(tuple),
    texts | st.none(),
    st.sampled_from([CATALOG, None]),
    st.just(()),
)


@pytest.mark.e2e  # seconds long: kept out of the quick loop
@settings(max_examples=500)
@given(st.lists(any_event, max_size=25))
def test_fold_never_raises_on_arbitrary_events(es):
    state = project.State()
    for e in es:
        state.apply(e)
    live = project.live_nodes(state)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in live.items())
