"""Hardening of the pure and file-level helpers, one section per review finding: each test
reproduces the finding and would fail without its fix."""

from __future__ import annotations

import json
import os
import stat
import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from membership_log.core import catalog, raw, timespec
from membership_log.core.incidents import Incident
from membership_log.core.redact import mask_url as safe_url
from membership_log.render import tables as render
from membership_log.render.timeline import render_html, render_svg
from membership_log.stores import files, spool

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- 1. catalog.parse / parse_datasets never raise ------------------------------------------

def _v2(replicas: str) -> bytes:
    return ('{"version": 2, "datasets": {"D": {"replicas": ' + replicas + "}}}").encode()


def _nested_replicas(depth: int, inner: str = "[]") -> str:
    """Replicas whose first slice holds a real node and whose second nests ``depth`` deep."""
    opening = '[{"slices": [{"volume": {"address": "10.0.0.2:10031/droonga.0"}}, ' \
              '{"volume": {"replicas": '
    return opening * depth + inner + "}}]}]" * depth


def test_catalog_nested_5000_deep_is_a_warning_not_recursion_error():
    for parse in (catalog.parse, catalog.parse_datasets):
        result, warnings = parse(b"[" * 5000)
        assert not result and warnings
        result, warnings = parse(_v2("[" * 5000 + "]" * 5000))
        assert not result and warnings


def test_catalog_port_of_5000_digits_is_a_warning_not_value_error():
    doc = {"version": 2, "datasets": {"D": {"replicas": [{"slices": [
        {"volume": {"address": "10.0.0.1:" + "9" * 5000 + "/droonga.000"}},
        {"volume": {"address": "10.0.0.3:10031/droonga.000"}},
    ]}]}}}
    cat, warnings = catalog.parse(json.dumps(doc).encode())
    assert [n.id for n in cat.nodes] == ["10.0.0.3:10031/droonga"]
    assert any("volume address must be" in w for w in warnings)
    assert max(len(w) for w in warnings) < 300, "a warning quotes the bad value cut short"
    datasets, _ = catalog.parse_datasets(json.dumps(doc).encode())
    assert [s.node for s in datasets[0].replicas[0]] == ["10.0.0.3:10031/droonga"]


@pytest.mark.parametrize("port,ok", [("1", True), ("65535", True), ("065535", False),
                                     ("65536", False), ("99999", False), ("١٢", False),
                                     ("9" * 4301, False)])
def test_catalog_port_is_at_most_5_ascii_digits_and_65535(port, ok):
    assert (catalog.parse_node_id(f"10.0.0.1:{port}/droonga.0") is not None) is ok


def test_catalog_replicas_nested_past_the_limit_are_skipped_with_one_warning():
    # 150 levels: fine for json (~750 deep), far past our limit of 32.
    cat, warnings = catalog.parse(_v2(_nested_replicas(150)))
    assert [n.id for n in cat.nodes] == ["10.0.0.2:10031/droonga"]
    assert sum("nested deeper than" in w for w in warnings) == 1
    datasets, warnings = catalog.parse_datasets(_v2(_nested_replicas(150)))
    assert sum("nested deeper than" in w for w in warnings) == 1
    # Within the limit, the innermost node is still found.
    inner = '[{"slices": [{"volume": {"address": "10.0.0.9:10031/droonga.0"}}]}]'
    cat, warnings = catalog.parse(_v2(_nested_replicas(20, inner)))
    assert [n.id for n in cat.nodes] == ["10.0.0.2:10031/droonga", "10.0.0.9:10031/droonga"]
    assert warnings == []


def test_catalog_v1_zones_nested_past_the_limit():
    zones = "[" * 300 + '"10.0.0.5:1/t"' + "]" * 300
    cat, warnings = catalog.parse(('{"version": 1, "zones": [' + zones + ', "10.0.0.4:1/t"]}')
                                  .encode())
    assert [n.id for n in cat.nodes] == ["10.0.0.4:1/t"]
    assert sum("nested deeper than" in w for w in warnings) == 1


def test_catalog_hostile_version_and_labels_are_kept_short():
    deep = "[" * 600 + "]" * 600
    data = ('{"version": ' + deep + ', "datasets": {"D": {"replicas": [{"slices": ['
            '{"label": ' + deep + ', "volume": {"address": "10.0.0.1:1/t.0"}}]}]}}}').encode()
    cat, warnings = catalog.parse(data)
    assert cat.nodes[0].id == "10.0.0.1:1/t" and isinstance(cat.version, str)
    datasets, _ = catalog.parse_datasets(data)
    assert len(datasets[0].replicas[0][0].label) < 100


def test_catalog_warnings_are_capped():
    slices = ",".join(f'{{"volume": {{"address": "bad{i}"}}}}' for i in range(1000))
    cat, warnings = catalog.parse(_v2('[{"slices": [' + slices + "]}]"))
    assert cat is None and len(warnings) <= catalog.MAX_WARNINGS + 2


_KEYS = st.sampled_from(["version", "datasets", "replicas", "slices", "volume", "address",
                         "zones", "label", "D"]) | st.text(max_size=5)
_LEAVES = st.one_of(
    st.sampled_from(["null", "true", "2", "1", "1e999", "-1e999", "NaN", "9" * 5000,
                     "1" + "0" * 4299, '"10.0.0.1:10031/droonga.0"', '"h:65536/t"',
                     '"h:' + "9" * 5000 + '/t"', '"\\ud800:1/t"', '"a b:1/t"', "{}", "[]"]),
    st.integers().map(str),
    st.floats().map(lambda f: json.dumps(f)),
    st.text(max_size=20).map(json.dumps),
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(_KEYS, inner), max_size=4).map(
        lambda kv: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kv) + "}"),
    max_leaves=25,
)
_WRAPS = st.sampled_from(["[%s]", '{"replicas":[{"slices":[{"volume":%s}]}]}',
                          '[{"slices":[{"volume":{"replicas":%s}}]}]', '{"zones":%s}',
                          '{"version":1,"zones":[%s]}', '{"datasets":{"D":%s}}'])


@st.composite
def _catalog_texts(draw) -> bytes:
    text = draw(_JSON)
    depth = draw(st.sampled_from([0, 1, 5, 31, 33, 40, 200, 2000]))
    wrap = draw(_WRAPS)
    left, right = wrap.split("%s")
    text = left * depth + text + right * depth
    frame = draw(st.sampled_from(["%s", '{"version":2,"datasets":{"D":{"replicas":%s}}}',
                                  '{"version":1,"zones":%s}', '{"version":2,"datasets":%s}']))
    data = frame.replace("%s", text).encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


@FUZZ
@given(st.binary(max_size=300) | _catalog_texts())
def test_catalog_never_raises_for_any_bytes(data):
    cat, warnings = catalog.parse(data)
    assert cat is None or (cat.nodes and all(0 <= n.port <= 65535 for n in cat.nodes))
    assert cat is not None or warnings
    datasets, warnings = catalog.parse_datasets(data)
    assert isinstance(datasets, list) and isinstance(warnings, list)


# --- 2. timespec: iso for years 1..9999, parse only ValueError, check_window -----------------

def _reference_iso(us: int) -> str:
    dt = datetime(1970, 1, 1) + timedelta(microseconds=us)
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}.{dt.microsecond:06d}Z")


@pytest.mark.parametrize("dt,text", [
    (datetime(1, 1, 1), "0001-01-01T00:00:00.000000Z"),
    (datetime(999, 12, 31, 23, 59, 59, 999999), "0999-12-31T23:59:59.999999Z"),
    (datetime(1969, 12, 31, 23, 59, 59, 999999), "1969-12-31T23:59:59.999999Z"),
    (datetime(1900, 2, 28, 1, 2, 3, 4), "1900-02-28T01:02:03.000004Z"),
    (datetime(9999, 12, 31, 23, 59, 59, 999999), "9999-12-31T23:59:59.999999Z"),
])
def test_iso_pads_the_year_and_handles_times_before_1970(dt, text):
    assert timespec.iso(timespec.to_us(dt)) == text
    assert timespec.parse(text, 0).us == timespec.to_us(dt)


@settings(max_examples=300, deadline=None)
@given(st.integers(timespec.MIN_US, timespec.MAX_US))
def test_iso_equals_datetime_and_round_trips(us):
    assert timespec.iso(us) == _reference_iso(us)
    assert timespec.parse(timespec.iso(us), 0).us == us


@pytest.mark.parametrize("us", [timespec.MIN_US - 1, timespec.MAX_US + 1, 2**63 - 1, -2**63])
def test_iso_outside_years_1_to_9999_is_a_value_error(us):
    with pytest.raises(ValueError):
        timespec.iso(us)


NOW = timespec.to_us(datetime(2026, 11, 25, 12, 0, 0))


@pytest.mark.parametrize("text", [
    "@99999999999999999999999", "@9223372036854775808", "@" + "9" * 5000,
    "999999999999999999999 w ago", "9999999 w ago", "3000000 d ago", "9" * 5000 + " s ago",
    "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "10000-01-01", "0000-01-01",
    "2026-02-30", "2026-11-25T25:00:00",
])
def test_parse_out_of_range_is_a_value_error(text):
    with pytest.raises(ValueError):
        timespec.parse(text, NOW)


def test_parse_event_number_limit_is_named():
    assert timespec.parse("@9223372036854775807", NOW).seq == 2**63 - 1
    with pytest.raises(ValueError, match="9223372036854775807"):
        timespec.parse("@9223372036854775808", NOW)


def test_parse_now_and_ago_out_of_range_now():
    with pytest.raises(ValueError):
        timespec.parse("now", timespec.MAX_US + 1)
    assert timespec.parse("0 s ago", timespec.MIN_US).us == timespec.MIN_US


_TIMEISH = st.one_of(
    st.text(max_size=40),
    st.builds(lambda n, u: f"{n} {u} ago", st.integers(0, 10**25), st.sampled_from("smhdwx")),
    st.builds(lambda n: f"@{n}", st.integers(-5, 10**25)),
    st.builds(lambda y, mo, d, h, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:00:00{z}",
              st.integers(0, 10000), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
              st.sampled_from(["", "Z", "+23:59", "-23:59", "+00:00"])),
)


@settings(max_examples=400, deadline=None)
@given(_TIMEISH, st.integers(timespec.MIN_US, timespec.MAX_US))
def test_parse_raises_nothing_but_value_error(text, now):
    try:
        p = timespec.parse(text, now)
    except ValueError:
        return
    if p.seq is not None:
        assert 0 <= p.seq <= 2**63 - 1
    else:
        assert timespec.MIN_US <= p.us <= timespec.MAX_US
        timespec.iso(p.us)


def test_check_window():
    P = timespec.parse
    timespec.check_window(None, P("now", NOW))
    timespec.check_window(P("2h ago", NOW), P("1h ago", NOW))
    timespec.check_window(P("@3", NOW), P("@3", NOW))
    timespec.check_window(P("@9", NOW), P("1h ago", NOW))  # a seq and a time: not compared
    with pytest.raises(ValueError, match="--since '1h ago' .* is after --until '2h ago'"):
        timespec.check_window(P("1h ago", NOW), P("2h ago", NOW))
    with pytest.raises(ValueError, match="--since '@9' is after --until '@3'"):
        timespec.check_window(P("@9", NOW), P("@3", NOW))


# --- 3. raw.serf_env drops the serf CLI's SERF_RPC_* -----------------------------------------

def test_serf_env_never_records_serf_rpc_variables():
    environ = {"SERF_EVENT": "user", "SERF_SELF_NAME": "n0", "SERF_TAG_role": "db",
               "SERF_USER_EVENT": "x", "SERF_QUERY_NAME": "q", "SERF_FUTURE_THING": "1",
               "SERF_RPC_AUTH": "secret", "SERF_RPC_ADDR": "127.0.0.1:7373",
               "HOME": "/root", "serf_rpc_auth": "x"}
    env = raw.serf_env(environ)
    assert sorted(env) == ["SERF_EVENT", "SERF_FUTURE_THING", "SERF_QUERY_NAME",
                           "SERF_SELF_NAME", "SERF_TAG_role", "SERF_USER_EVENT"]
    assert b"secret" not in raw.encode_env(env)


# --- 4. spool: unreadable files are named and quarantined; decode only raises ValueError ----

def _item(i: int) -> tuple:
    return (1_700_000_000_000_000 + i, "node0", "serf", b"SERF_EVENT=user", b"payload %d" % i)


@pytest.mark.timeout(20)  # before the fix, reading the FIFO blocked forever
def test_spool_unreadable_files_are_listed_and_quarantined(tmp_path):
    d = str(tmp_path / "spool")
    good = [spool.put(d, _item(i)) for i in (1, 3)]
    outside = tmp_path / "secret"
    outside.write_bytes(spool.encode(_item(9)))
    bad = {
        "00000000000000000002-garbage.event": b"not a spool file",
        "00000000000000000004-truncated.event": spool.encode(_item(4))[:-3],
        "00000000000000000005-trailing.event": spool.encode(_item(5)) + b"x",
    }
    for name, data in bad.items():
        (tmp_path / "spool" / name).write_bytes(data)
    os.symlink(outside, os.path.join(d, "00000000000000000006-link.event"))
    os.mkfifo(os.path.join(d, "00000000000000000007-fifo.event"))
    names = sorted(bad) + ["00000000000000000006-link.event", "00000000000000000007-fifo.event"]

    assert spool.scan(d)[0] == [(good[0], _item(1)), (good[1], _item(3))]
    assert spool.unreadable(d) == [os.path.join(d, n) for n in names]
    moved = spool.quarantine(d, spool.unreadable(d))
    q = os.path.join(d, spool.UNREADABLE)
    assert moved == [os.path.join(q, n) for n in names]
    assert stat.S_IMODE(os.stat(q).st_mode) == 0o700
    assert spool.unreadable(d) == [] and [p for p, _ in spool.scan(d)[0]] == good
    for name, data in bad.items():  # kept byte for byte, not deleted
        assert open(os.path.join(q, name), "rb").read() == data
    assert outside.read_bytes() == spool.encode(_item(9))
    # A second file of the same name never replaces the first in quarantine.
    (tmp_path / "spool" / names[0]).write_bytes(b"again")
    assert spool.quarantine(d, spool.unreadable(d)) == [os.path.join(q, names[0] + ".1")]
    assert spool.quarantine(d, [str(outside)]) == []  # only files of this spool move


def test_spool_dir_is_created_0700_even_with_umask_0(tmp_path):
    old = os.umask(0)
    try:
        path = spool.put(str(tmp_path / "spool"), _item(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "spool")) == [os.path.basename(path)]


def test_spool_decode_refuses_every_truncation_and_lax_numbers():
    data = spool.encode(_item(1))
    assert spool.decode(data) == _item(1)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            spool.decode(data[:cut])
    body = data[len(spool.MAGIC):]
    for lax in (b"+" + body, b" " + body, body.replace(b"16:", b"1_6:", 1)):
        with pytest.raises(ValueError):
            spool.decode(spool.MAGIC + lax)


_items = st.tuples(st.integers(-2**63 + 1, 2**63 - 1), st.text(), st.sampled_from(["serf",
                   "catalog"]), st.binary(), st.binary())


@FUZZ
@given(_items)
def test_spool_round_trip(item):
    assert spool.decode(spool.encode(item)) == item


@FUZZ
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: spool.MAGIC + b)
       | st.tuples(_items, st.integers(0, 200), st.binary(max_size=3)).map(
           lambda t: (lambda e: e[:t[1]] + t[2] + e[t[1] + len(t[2]):])(spool.encode(t[0]))))
def test_spool_decode_raises_only_value_error(data):
    try:
        item = spool.decode(data)
    except ValueError:
        return
    assert spool.encode(item) == data  # anything accepted is exactly what encode writes


# --- 5. files.read_regular and files.open_lock -----------------------------------------------

def test_read_regular_reads_regular_files_and_follows_symlinks(tmp_path):
    f = tmp_path / "catalog.json"
    f.write_bytes(b"12345")
    assert files.read_regular(str(f), 5) == (b"12345", None)
    link = tmp_path / "link.json"
    link.symlink_to(f)
    assert files.read_regular(str(link), 100) == (b"12345", None)
    assert files.read_regular(str(tmp_path / "missing"), 100) == (None, None)
    data, reason = files.read_regular(str(f), 4)
    assert data is None and "larger than 4 bytes" in reason


@pytest.mark.timeout(10)
def test_read_regular_refuses_fifo_devices_and_directories(tmp_path):
    fifo = tmp_path / "catalog.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero, tmp_path, "/dev/null"):
        data, reason = files.read_regular(str(path), 1 << 20)
        assert data is None and "not a regular file" in reason and "\n" not in reason


def test_read_regular_never_raises(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    data, reason = files.read_regular(str(f / "below"), 10)
    assert data is None and reason


def test_open_lock_refuses_a_planted_symlink_and_creates_nothing(tmp_path):
    target = tmp_path / "etc" / "victim"
    target.parent.mkdir()
    lock = tmp_path / "membership.db.lock"
    lock.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        files.open_lock(str(lock))
    assert not target.exists()


def test_open_lock_is_0600_even_with_umask_0_and_tightens_a_loose_file(tmp_path):
    old = os.umask(0)
    try:
        fd = files.open_lock(str(tmp_path / "a.lock"))
        os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.lock").st_mode) == 0o600
    loose = tmp_path / "b.lock"
    loose.write_bytes(b"")
    loose.chmod(0o666)
    os.close(files.open_lock(str(loose)))
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600


@pytest.mark.timeout(10)
def test_open_lock_refuses_fifo_directory_and_hard_link(tmp_path):
    os.mkfifo(tmp_path / "fifo.lock")
    (tmp_path / "dir.lock").mkdir()
    other = tmp_path / "other"
    other.write_bytes(b"")
    os.link(other, tmp_path / "hard.lock")
    for name in ("fifo.lock", "dir.lock", "hard.lock"):
        with pytest.raises(OSError, match="lock file"):
            files.open_lock(str(tmp_path / name))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a file to another user")
def test_open_lock_refuses_a_file_owned_by_someone_else(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_bytes(b"")
    os.chown(lock, 65534, 65534)
    with pytest.raises(OSError, match="owned by uid 65534"):
        files.open_lock(str(lock))


def test_files_imports_nothing_heavy():
    import subprocess
    import sys
    code = ("import sys; import membership_log.stores.files; "
            "print(sorted(m for m in ('pathlib', 'json', 're') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                         env={"PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert out.stdout.strip() == "[]"


# --- 6. core.redact.mask_url ---------------------------------------------------------------------

@pytest.mark.parametrize("url,safe", [
    ("postgresql://u:s3cretPW@127.0.0.1:notaport/db", "postgresql://u:***@127.0.0.1:notaport/db"),
    ("foo://u:p@h", "foo://u:***@h"),
    ("postgresql+psycopg://u:p%40x@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql://u:p@ss:w@rd@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://h/db?sslmode=require&password=pw", "postgresql://h/db?sslmode=require&password=***"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    ("postgresql://127.0.0.1:5432/test", "postgresql://127.0.0.1:5432/test"),
    ("sqlite:////var/lib/droonga/membership.db", "sqlite:////var/lib/droonga/membership.db"),
    ("sqlite:////tmp/a:b@c/x.db", "sqlite:////tmp/a:b@c/x.db"),
    ("/var/lib/droonga/membership.db", "/var/lib/droonga/membership.db"),
    ("", ""),
])
def test_safe_url(url, safe):
    assert safe_url(url) == safe


_PW = st.text(alphabet="abcXYZ019@:%/?#&=!$-_.~ ", min_size=6, max_size=20)
_WORD = st.text(alphabet="abcdefghijklmnop0123456789.-", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["postgresql", "postgresql+psycopg", "foo", "mysql+pymysql"]), _WORD,
       _PW, _WORD, st.sampled_from(["", ":5432", ":notaport", ":"]),
       st.sampled_from(["", "/db", "/d@b", "/db?x=1", "/db?a=b@c"]))
def test_safe_url_never_shows_the_password(scheme, user, password, host, port, tail):
    url = f"{scheme}://{user}:{password}@{host}{port}{tail}"
    assume(url.count(password) == 1)
    out = safe_url(url)
    assert password not in out and out.startswith(f"{scheme}://{user}:***@")


@given(st.text())
def test_safe_url_never_raises(text):
    assert isinstance(safe_url(text), str)


def test_settings_safe_url_does_not_import_sqlalchemy():
    import subprocess
    import sys
    code = ("import sys; from membership_log.core.redact import mask_url as safe_url; "
            "safe_url('postgresql://u:p@h:x/db'); print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# --- 7. render.printable and render.table ----------------------------------------------------

@pytest.mark.parametrize("text,shown", [
    ("192.168.100.50:10031/droonga", "192.168.100.50:10031/droonga"),
    ("café 東京", "café 東京"),
    ("a\\b", "a\\\\b"),
    ("\x1b[2K\r\n\t\b\x00\x7f", "\\x1b[2K\\r\\n\\t\\x08\\x00\\x7f"),
    ("\x85\x9b", "\\u0085\\u009b"),
    (b"n\xff\x80".decode("utf-8", "surrogateescape"), "n\\xff\\x80"),
    ("\ud800", "\\ud800"),
    ("\u202eevil\u2066\u2069\u200e\u200f\u061c", "\\u202eevil\\u2066\\u2069\\u200e\\u200f\\u061c"),
    ("a\u2028b\u2029", "a\\u2028b\\u2029"),
])
def test_printable(text, shown):
    assert render.printable(text) == shown


def test_printable_is_unambiguous_for_a_literal_backslash_escape():
    assert render.printable("\\x1b") != render.printable("\x1b")
    assert render.printable(b"\x9b".decode("utf-8", "surrogateescape")) != render.printable("\x9b")


def test_table_member_name_cannot_erase_or_add_a_line():
    evil = "evil\x1b[2K\r127.0.0.201:10031/droonga  live  alive"
    out = render.table(["NODE", "LIVE", "SERF"], [[evil, "live", "alive"],
                                                  ["10.0.0.1:10031/droonga", "dead", "failed"]])
    assert "\x1b" not in out and "\r" not in out
    assert len(out.split("\n")) == 3 and len(out.splitlines()) == 3


def _old_table(headers, rows):
    """cli._table before render.table existed: the layout must not change."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


_CELL = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(_CELL, min_size=n, max_size=n),
    st.lists(st.lists(_CELL, min_size=n, max_size=n), max_size=5))))
def test_table_has_one_line_per_row_and_no_control_characters(table):
    headers, rows = table
    out = render.table(headers, rows)
    lines = out.split("\n")
    assert len(lines) == len(rows) + 1
    assert all(len(line.splitlines()) <= 1 for line in lines)  # no \x0b, \x1c, \x85, U+2028...
    assert all(ch == "\n" or ch.isprintable() for ch in out)
    out.encode("utf-8")  # no lone surrogate left
    clean = [[render.printable(c) for c in r] for r in rows]
    assert out == _old_table([render.printable(h) for h in headers], clean)


def test_table_of_printable_text_is_the_old_layout():
    rows = [["node1", "live", ""], ["10.0.0.1:10031/droonga", "dead", "x"]]
    assert render.table(["NODE", "LIVE", ""], rows) == _old_table(["NODE", "LIVE", ""], rows)


# --- 8. timeline: well-formed XML whatever the names ----------------------------------------

_NASTY = ["evil\x1bname", "nul\x00", "\ud800", "bad\udcff", "<script>alert(1)</script>", "a&b",
          'q"uote', "\ufffe\uffff", "\u202eltr", "tab\tnl\n"]


def test_timeline_svg_is_well_formed_for_any_names_and_causes():
    t0 = timespec.to_us(datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc))
    incidents = [Incident(n, t0 + 60_000_000 * i, t0 + 60_000_000 * (i + 2),
                          ["failed", "left", "operator", "new\x1b<cause>"][i % 4], (), 1, 2)
                 for i, n in enumerate(_NASTY)]
    svg = render_svg(_NASTY, incidents, t0, t0 + 3600_000_000, timespec.iso)
    svg.encode("utf-8")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert [g.get("data-node") for g in root.iter(ns + "g")] == [
        render.printable(n) for n in _NASTY]
    html = render_html(svg, title="t\x1b\ud800")
    html.encode("utf-8")


def test_timeline_layout_unchanged_for_plain_names():
    t0 = 1_764_000_000_000_000
    svg = render_svg(["node1"], [Incident("node1", t0 + 10**9, None, "failed", (), 1, None)],
                     t0, t0 + 3600 * 10**6, timespec.iso)
    assert '<g class="node-row" data-node="node1">' in svg
    assert 'text-anchor="end">node1</text>' in svg and "<title>node1: failed, down " in svg


def test_iso_cache_is_thread_safe_enough():
    # The per-day cache is a plain dict; concurrent use must still give right answers.
    out: list[bool] = []

    def work(k: int) -> None:
        out.append(all(timespec.iso(us) == _reference_iso(us)
                       for us in range(k * 86_400_000_000 * 50, (k + 1) * 86_400_000_000 * 50,
                                       86_400_000_000 // 3)))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [True] * 4
