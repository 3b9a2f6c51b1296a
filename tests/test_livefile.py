"""The live file: byte-identical to json.dumps, deterministic, atomic, rewritten only on change."""

import json
import os
import stat

from hypothesis import given
from hypothesis import strategies as st

from membership_log.render.livefile import render, render_compact
from membership_log.stores.files import write_atomic


@given(st.dictionaries(st.text(), st.text()))
def test_render_equals_json_dumps_indent_2_sorted(live):
    expected = json.dumps({k: {"serfAddress": v} for k, v in live.items()}, indent=2,
                          sort_keys=True) + "\n"
    assert render(live) == expected.encode()


def test_droonga_shape():
    assert render({"192.168.100.50:10031/droonga": "192.168.100.50"}) == (
        b'{\n  "192.168.100.50:10031/droonga": {\n    "serfAddress": "192.168.100.50"\n  }\n}\n'
    )
    assert render({}) == b"{}\n"


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_render_compact_equals_json_dumps(value):
    assert render_compact(value) == json.dumps(value, separators=(",", ":"))


def test_write_atomic_writes_0644_and_skips_equal_bytes(tmp_path):
    path = tmp_path / "live-nodes.json"
    os.umask(0o077)
    try:
        assert write_atomic(str(path), b"{}\n") is True
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    inode = path.stat().st_ino
    assert write_atomic(str(path), b"{}\n") is False
    assert path.stat().st_ino == inode, "equal bytes must not rewrite the file"
    assert write_atomic(str(path), b'{"a": 1}\n') is True
    assert path.read_bytes() == b'{"a": 1}\n'
    assert path.stat().st_ino != inode, "a change is a rename of a new file, not an overwrite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live-nodes.json"]


def test_write_atomic_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "live-nodes.json"
    link.symlink_to(victim)
    write_atomic(str(link), b"{}\n")
    assert victim.read_bytes() == b"keep"
    assert not link.is_symlink() and link.read_bytes() == b"{}\n"


def test_a_writer_holding_the_lock_sweeps_temporary_files_left_by_killed_writers(tmp_path):
    """A handler killed between creating its temporary live file and renaming it leaves
    `.live-nodes.json.<random>.tmp`; the next writer under the store's lock removes it, and
    nothing else."""
    target = tmp_path / "live-nodes.json"
    left = tmp_path / f".live-nodes.json.{'ab' * 8}.tmp"
    left.write_text("half")
    other = tmp_path / ".other.json.0000000000000000.tmp"
    other.write_text("not ours")
    write_atomic(str(target), b"{}\n")
    assert left.exists(), "without sweep nothing else is touched"
    write_atomic(str(target), b'{"a": 1}\n', sweep=True)
    assert not left.exists() and other.exists()
    assert target.read_bytes() == b'{"a": 1}\n'
