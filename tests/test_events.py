"""Parsing what Serf hands the handler: the seed's literal inputs, real Serf lines, garbage."""

from hypothesis import given, settings
from hypothesis import strategies as st

from membership_log.core import events as ev
from membership_log.core.raw import RawEvent


def raw(env: dict, stdin: bytes = b"", source: str = "serf", seq: int = 1) -> RawEvent:
    return RawEvent(seq, 1_700_000_000_000_000, "node0", source, env, stdin, b"")


def test_seed_member_failed_with_stray_dot_and_space_separated_stdin():
    # The wiki: $SERF_EVENT `member-failed.`, stdin `node1 192.168.100.51`.
    e = ev.parse(raw({"SERF_EVENT": "member-failed."}, b"node1 192.168.100.51"))
    assert e.kind == "member-failed"
    assert e.members == (ev.Member("node1", "192.168.100.51", "", {}),)
    assert any("read as 'member-failed'" in w for w in e.warnings)


def test_real_serf_member_lines_with_role_and_tags_in_any_order():
    stdin = b"node0\t127.0.0.11\tweb\trole=web,dc=east\nnode1\t127.0.0.12\t\tdc=west,role=\n"
    e = ev.parse(raw({"SERF_EVENT": "member-join"}, stdin))
    assert e.kind == "member-join" and e.warnings == ()
    assert e.members[0] == ev.Member("node0", "127.0.0.11", "web", {"role": "web", "dc": "east"})
    assert e.members[1].tags == {"dc": "west", "role": ""}


def test_serf_escaped_tab_and_newline_in_names_are_unescaped():
    e = ev.parse(raw({"SERF_EVENT": "member-update"}, b"we\\tird\\nname\t10.0.0.1\t\t\n"))
    assert e.members[0].name == "we\tird\nname"


def test_coalesced_event_with_many_members():
    stdin = b"".join(f"n{i}\t10.0.{i // 256}.{i % 256}\t\t\n".encode() for i in range(1000))
    e = ev.parse(raw({"SERF_EVENT": "member-join"}, stdin))
    assert len(e.members) == 1000 and e.members[999].name == "n999"


def test_malformed_member_lines_are_skipped_with_a_warning():
    e = ev.parse(raw({"SERF_EVENT": "member-join"}, b"a\tb\tc\td\te\tf\n\t10.0.0.1\nok\t1.2.3.4\n"))
    assert [m.name for m in e.members] == ["ok"]
    assert any("malformed" in w for w in e.warnings)


def test_user_event_payload_and_lamport_time():
    env = {"SERF_EVENT": "user", "SERF_USER_EVENT": "membership-down", "SERF_USER_LTIME": "42"}
    e = ev.parse(raw(env, b"node1 node2\n"))
    assert (e.kind, e.name, e.ltime, e.payload) == ("user", "membership-down", 42, "node1 node2")


def test_query_name_and_ltime():
    env = {"SERF_EVENT": "query", "SERF_QUERY_NAME": "membership-live", "SERF_QUERY_LTIME": "7"}
    e = ev.parse(raw(env, b"\n"))
    assert (e.kind, e.name, e.ltime, e.payload) == ("query", "membership-live", 7, "")


def test_lamport_time_that_is_not_a_number():
    env = {"SERF_EVENT": "user", "SERF_USER_EVENT": "x", "SERF_USER_LTIME": "12abc"}
    e = ev.parse(raw(env, b""))
    assert e.ltime is None and any("not a number" in w for w in e.warnings)


def test_missing_and_unknown_serf_event_become_unknown():
    assert ev.parse(raw({}, b"x")).kind == "unknown"
    e = ev.parse(raw({"SERF_EVENT": "member-explode"}, b"x"))
    assert e.kind == "unknown" and "member-explode" in e.warnings[0]


def test_invalid_utf8_is_replaced_and_reported():
    e = ev.parse(raw({"SERF_EVENT": "member-join"}, b"n\xffode\t10.0.0.1\t\t\n"))
    assert e.members[0].name == "n\ufffdode"
    assert any("UTF-8" in w for w in e.warnings)


def test_catalog_event_is_parsed_with_the_catalog_module():
    e = ev.parse(raw({}, b'{"version": 1, "zones": ["10.0.0.1:10031/droonga"]}', "catalog"))
    assert e.kind == "catalog" and [n.id for n in e.catalog.nodes] == ["10.0.0.1:10031/droonga"]
    bad = ev.parse(raw({}, b"{not json", "catalog"))
    assert bad.catalog is None and "not valid JSON" in bad.warnings[0]


def test_clean_event_name():
    assert ev.clean_event_name(" Member-Join.\n") == "member-join"
    assert ev.clean_event_name("...") == ""


serf_env = st.fixed_dictionaries(
    {},
    optional={
        "SERF_EVENT": st.sampled_from(sorted(ev.SERF_KINDS)) | st.text(max_size=20),
        "SERF_USER_EVENT": st.text(max_size=20),
        "SERF_USER_LTIME": st.text(max_size=8),
        "SERF_QUERY_NAME": st.text(max_size=20),
        "SERF_QUERY_LTIME": st.text(max_size=8),
    },
)


@settings(max_examples=400)
@given(serf_env, st.binary(max_size=400), st.sampled_from(["serf", "catalog"]))
def test_parse_never_raises(env, stdin, source):
    e = ev.parse(raw(env, stdin, source))
    assert e.kind in ev.SERF_KINDS | {"catalog", "unknown"}
    assert all(isinstance(w, str) and "\n" not in w for w in e.warnings)
