"""The engine side: routing, reading both live-file formats, and watching the live file
(the library and a real `membership watch` process)."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from opshelpers import wait_for
from typer.testing import CliRunner

from membership_log import engine
from membership_log.cli import app
from membership_log.core.catalog import parse_datasets

runner = CliRunner()
A, B = "192.168.100.50:10031/droonga", "192.168.100.51:10031/droonga"


def two_by_two() -> dict:
    """2 replicas x 2 slices: replica 0 on node A, replica 1 on node B."""
    return {"version": 2, "datasets": {"Default": {"replicas": [
        {"slices": [{"label": f"slice00{i}", "volume": {"address": f"{host}.00{i}"}}
                    for i in range(2)]}
        for host in (A, B)]}}}


def test_a_dead_node_takes_its_replica_out_and_the_other_is_offered():
    (ds,), _ = parse_datasets(json.dumps(two_by_two()).encode())
    r = engine.route([ds], frozenset({A}))["Default"]
    assert r["usable_replicas"] == [0]
    assert r["replicas"][1]["dead_nodes"] == [B]
    assert r["slices"] == {"slice000": [f"{A}.000"], "slice001": [f"{A}.001"]}
    assert engine.route([ds], frozenset())["Default"]["usable_replicas"] == []


def test_nested_replicas_are_usable_if_one_inner_replica_is():
    inner = {"replicas": [{"slices": [{"volume": {"address": f"{h}.000"}}]} for h in (A, B)]}
    doc = {"version": 2, "datasets": {"D": {"replicas": [{"slices": [{"volume": inner}]}]}}}
    (ds,), _ = parse_datasets(json.dumps(doc).encode())
    assert engine.route([ds], frozenset({B}))["D"]["usable_replicas"] == [0]
    assert engine.route([ds], frozenset())["D"]["usable_replicas"] == []


def test_route_command(tmp_path):
    (tmp_path / "catalog.json").write_text(json.dumps(two_by_two()))
    (tmp_path / "live-nodes.json").write_text(json.dumps({A: {"serfAddress": "x"}}))
    r = runner.invoke(app, ["route", "--base-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "1 of 2 replica(s) usable" in r.output and f"DOWN (dead: {B})" in r.output
    doc = json.loads(runner.invoke(app, ["route", "--base-dir", str(tmp_path), "--json"]).output)
    assert doc["datasets"]["Default"]["usable_replicas"] == [0]
    (tmp_path / "live-nodes.json").write_text("{}\n")
    r = runner.invoke(app, ["route", "--base-dir", str(tmp_path)])
    assert r.exit_code == 1 and "NO USABLE REPLICA" in r.output
    assert r.output.endswith("membership: no usable replica for dataset(s): Default\n")
    r = runner.invoke(app, ["route", "--base-dir", str(tmp_path), "--dataset", "Nope"])
    assert r.exit_code == 1 and "no dataset 'Nope'" in r.output


def test_parse_live_reads_both_formats_and_rejects_garbage():
    assert engine.parse_live(b'{"a": {"serfAddress": "1.2.3.4"}, "b": {}}') == {"a", "b"}
    assert engine.parse_live(b'{"a": {"live": true}, "b": {"live": false}}') == {"a"}
    assert engine.parse_live(b"{}\n") == frozenset()
    for bad in [b"", b"{", b"[]", b"\xff"]:
        assert engine.parse_live(bad) is None


def _write(path, live):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({n: {"serfAddress": "x"} for n in live}, f)
    os.replace(tmp, path)


def test_watcher_sees_rewrites_that_keep_mtime_and_keeps_the_last_good_set(tmp_path):
    path = tmp_path / "live-nodes.json"
    _write(path, ["aa", "bb"])
    changes, problems = [], []
    with engine.LiveWatcher(str(path), changes.append, interval=0.02,
                            on_problem=problems.append) as w:
        wait_for("the first change", lambda: len(changes) == 1, timeout=5, interval=0.01)
        st = path.stat()
        with open(path, "w") as f:  # in place, same size, mtime put back: only bytes differ
            json.dump({"aa": {"serfAddress": "x"}, "cc": {"serfAddress": "x"}}, f)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_mtime_ns == st.st_mtime_ns
        wait_for("the second change", lambda: len(changes) == 2, timeout=5, interval=0.01)
        assert (changes[1].added, changes[1].removed) == (("cc",), ("bb",))
        path.unlink()
        wait_for("the problem said", lambda: problems, timeout=5, interval=0.01)
        path.write_bytes(b"{half")
        time.sleep(0.2)
        assert w.live == {"aa", "cc"}, "a missing or half file keeps the last good set"
        assert len(problems) == 1, "said once per spell"
        _write(path, ["aa", "cc"])  # same set again: no change reported
        time.sleep(0.2)
        _write(path, ["dd"])
        wait_for("the third change", lambda: len(changes) == 3, timeout=5, interval=0.01)
    assert changes[0].added == ("aa", "bb") and changes[0].removed == ()
    assert changes[2].live == ("dd",)


@pytest.mark.e2e
def test_a_real_watcher_process_follows_50_quick_rewrites_by_the_handler(handle, base,
                                                                        membership):
    (base / "catalog.json").unlink()  # members are the nodes
    assert handle("member-join", b"m0\t10.0.0.1\t\t\n").returncode == 0
    watcher = subprocess.Popen([membership, "watch", "--json", "--interval", "0.01",
                                "--base-dir", str(base)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    reported: list[str] = []
    reader = threading.Thread(target=lambda: reported.extend(watcher.stdout), daemon=True)
    reader.start()
    try:
        seen_states = {frozenset(handle.live())}
        for i in range(50):
            kind = "member-failed" if i % 3 == 0 else "member-join"
            r = handle(kind, f"m{i % 7}\t10.0.0.{i % 7 + 1}\t\t\n".encode())
            assert r.returncode == 0
            seen_states.add(frozenset(handle.live()))
        final = frozenset(handle.live())
        # However late the watcher started on a busy machine, it reports the final file.
        wait_for(f"the watcher to report {set(final)}", lambda: reported and frozenset(
            json.loads(reported[-1])["live"]) == final, timeout=30, interval=0.05)
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=10)
        reader.join(timeout=10)
    err = watcher.stderr.read()
    assert watcher.returncode == 0, err
    lines = [json.loads(x) for x in reported]
    assert len(lines) >= 2
    previous = frozenset()
    for k, line in enumerate(lines):
        live = frozenset(line["live"])
        # The first readable set is reported whatever it is (engine.watch), even the empty
        # one after m0's failure, when the watcher started late on a busy machine.
        assert k == 0 or live != previous, "no spurious change"
        assert live in seen_states, "every reported set is one the file really held"
        assert set(line["added"]) == live - previous and set(line["removed"]) == previous - live
        previous = live
    assert previous == final, "the last report equals the file"


def test_watch_exits_cleanly_on_sigterm(membership, tmp_path):
    p = subprocess.Popen([membership, "watch", "--live-file", str(tmp_path / "none.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.terminate()
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert err.count("\n") == 1 and "unreadable" in err and "keeping the last good" in err


def test_cluster_state_format_end_to_end(handle, base):
    args = ["--base-dir", str(base), "--live-format", "cluster-state"]
    assert handle("member-failed", b"node1\t192.168.100.51\t\t\n", args=args).returncode == 0
    doc = json.loads((base / "live-nodes.json").read_bytes())
    assert doc == {A: {"live": True}, B: {"live": False},
                   "192.168.100.52:10031/droonga": {"live": True}}
    assert engine.read_live(str(base / "live-nodes.json")) == {A, "192.168.100.52:10031/droonga"}
    assert runner.invoke(app, ["verify", *args]).exit_code == 0
    r = runner.invoke(app, ["state", *args, "--as-live-file"])
    assert r.stdout_bytes == (base / "live-nodes.json").read_bytes()
    # The default format disagrees with this file: verify in that format says so.
    assert runner.invoke(app, ["verify", "--base-dir", str(base)]).exit_code == 1
    r = runner.invoke(app, ["state", "--base-dir", str(base), "--live-format", "xml"])
    assert r.exit_code == 1
    assert "live-file format must be droonga, cluster-state or droonga-1.1" in r.output


def test_library_api_imports_without_the_cli():
    code = ("import sys, membership_log.engine as e; "
            "assert 'typer' not in sys.modules and 'sqlalchemy' not in sys.modules; "
            "print(sorted(e.parse_live(b'{\"a\": {}}')))")
    r = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "['a']", r.stderr


