"""The raw record: lossless environment encoding and a hash chain that notices any change."""

from hypothesis import given
from hypothesis import strategies as st

from membership_log.core.raw import GENESIS, chain_hash, decode_env, encode_env, serf_env

names = st.text(st.characters(codec="utf-8", exclude_characters="=\0"), min_size=1)
values = st.text(st.characters(codec="utf-8", exclude_characters="\0")) | st.binary().map(
    lambda b: b.replace(b"\0", b"").decode("utf-8", "surrogateescape"))


@given(st.dictionaries(names, values))
def test_env_round_trips_byte_for_byte(env):
    assert decode_env(encode_env(env)) == env


def test_env_encoding_is_sorted_and_deterministic():
    assert encode_env({"SERF_B": "2", "SERF_A": "1"}) == b"SERF_A=1\0SERF_B=2"
    assert decode_env(b"") == {}


def test_only_serf_variables_are_kept():
    env = {"SERF_EVENT": "member-join", "AWS_SECRET": "x", "PATH": "/bin", "SERFX": "no"}
    assert serf_env(env) == {"SERF_EVENT": "member-join"}


def test_chain_hash_changes_with_every_field():
    base = (GENESIS, 1, 1_700_000_000_000_000, "node0", "serf", b"SERF_EVENT=x", b"in")
    h = chain_hash(*base)
    assert h == chain_hash(*base) and len(h) == 32
    for i, other in enumerate([b"\1" * 32, 2, 1, "node1", "catalog", b"SERF_EVENT=y", b"im"]):
        changed = list(base)
        changed[i] = other
        assert chain_hash(*changed) != h, f"field {i} not covered by the hash"


def test_fields_cannot_shift_into_each_other():
    a = chain_hash(GENESIS, 1, 0, "node", "serf", b"ab", b"c")
    b = chain_hash(GENESIS, 1, 0, "node", "serf", b"a", b"bc")
    assert a != b
