"""The CLI through Typer's CliRunner (and a real subprocess for the launcher): outputs,
JSON keys (SPEC "Replay and audit JSON"), one-line errors, --help that teaches."""

import json
import subprocess
import sys

import pytest
from conftest import invoke
from samples import NODES
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.version import SCHEMA_REVISION

runner = CliRunner()
N0, N1, N2 = NODES


def run(*args):
    """The CLI in-process, any exit code: these tests look at the code themselves."""
    return invoke(*args, code=None)


@pytest.fixture
def history(handle, base):
    """A small history: start, node1 fails, node2 marked down by host, node1 rejoins."""
    handle("member-join", b"node0\t192.168.100.50\t\t\nnode1\t192.168.100.51\t\t\n")
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("user", b"192.168.100.52", {"SERF_USER_EVENT": "membership-down",
                                       "SERF_USER_LTIME": "9"})
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    return base


def test_init_reports_store_and_live_nodes(base):
    r = run("init", "--base-dir", str(base))
    assert r.exit_code == 0, r.output
    assert "3 live node(s)" in r.output
    assert list(json.loads((base / "live-nodes.json").read_text())) == NODES
    again = run("init", "--base-dir", str(base))
    assert again.exit_code == 0 and "1 events" in again.output


def test_state_json(history):
    r = run("state", "--base-dir", str(history), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["seq"] == 5
    assert {n: v["live"] for n, v in doc["nodes"].items()} == {N0: True, N1: True, N2: False}
    assert doc["nodes"][N2]["marked"] and doc["nodes"][N1]["member"] == "node1"


def test_state_table(history):
    r = run("state", "--base-dir", str(history))
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].startswith("after event 5 (") and "2 of 3 node(s) live" in lines[0]
    assert lines[2].split()[:2] == [N2, "DEAD"], "dead nodes come first"


def test_replay_json_lines_have_the_spec_keys_and_changes(history):
    r = run("replay", "--base-dir", str(history), "--json")
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.output.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5]
    for x in lines:
        assert {"seq", "at", "observer", "event", "name", "ltime", "members", "payload",
                "changes"} <= set(x)
        assert x["at"].endswith("Z")
    assert [x["event"] for x in lines] == ["catalog", "member-join", "member-failed", "user",
                                           "member-join"]
    assert lines[2]["members"] == [{"name": "node1", "address": "192.168.100.51", "role": "",
                                    "tags": {}}]
    assert lines[2]["changes"] == [{"node": N1, "from": "live", "to": "dead"}]
    assert lines[3]["name"] == "membership-down" and lines[3]["ltime"] == 9
    assert lines[3]["changes"] == [{"node": N2, "from": "live", "to": "dead"}]
    assert lines[4]["changes"] == [{"node": N1, "from": "dead", "to": "live"}]


def test_replay_table(history):
    r = run("replay", "--base-dir", str(history))
    assert r.exit_code == 0
    assert f"{N1} live -> dead" in r.output and f"{N1} dead -> live" in r.output


def test_replay_agrees_with_the_live_file_the_handler_wrote(history):
    # The handler's incremental fold and replay's full fold are the same fold.
    lines = [json.loads(x) for x in run("replay", "--base-dir", str(history),
                                           "--json").output.splitlines()]
    live = set()
    for x in lines:
        for c in x["changes"]:
            (live.add if c["to"] == "live" else live.discard)(c["node"])
    assert sorted(live) == list(json.loads((history / "live-nodes.json").read_text()))


def test_missing_store_is_one_line_and_exit_1(tmp_path):
    for command in ["state", "replay"]:
        r = runner.invoke(app, [command, "--base-dir", str(tmp_path)])
        assert r.exit_code == 1
        assert r.output == f"membership: no store at {tmp_path}/membership.db " \
                           f"(run: membership init)\n"


def test_foreign_store_is_one_line(tmp_path):
    import sqlite3
    with sqlite3.connect(tmp_path / "membership.db") as c:
        c.execute("CREATE TABLE t (x)")
    r = runner.invoke(app, ["state", "--base-dir", str(tmp_path)])
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "not a membership-log store" in r.output


def _commands():
    """Every command the CLI has, found from the app itself: a new command without help
    or an example fails here."""
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub] for sub in cmd.commands]
        else:
            out.append([name])
    return sorted(out)


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    r = run(*command, "--help")
    assert r.exit_code == 0
    assert "Example" in r.output or "event_handlers" in r.output
    # Where things live: shown by every command that reads the store (watch and route read
    # files only, and show just those; heartbeat reads nothing: it talks to Serf; check-proof
    # reads nothing but the proof it is given).
    if command == ["heartbeat"]:
        assert "--base-dir" not in r.output and "--rpc-addr" in r.output
    elif command == ["check-proof"]:
        assert "--base-dir" not in r.output
    else:
        assert "--base-dir" in r.output and "MEMBERSHIP_BASE_DIR" in r.output
    # The example lines stay lines (Click would otherwise run them together).
    example = r.output.split("Example:")[-1].split("Options:")[0].split("Arguments:")[0]
    assert all(line.count("membership ") <= 1 for line in example.splitlines()), example


def test_the_readme_shows_every_command():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for command in _commands():
        assert f"membership {' '.join(command)}" in readme, command


@pytest.mark.postgres
def test_db_upgrade_on_postgres(pg_url):
    r = run("db", "upgrade", "--db", pg_url)
    assert r.exit_code == 0 and f"empty -> {SCHEMA_REVISION}" in r.output
    assert f"already at schema {SCHEMA_REVISION}" in run("db", "upgrade", "--db", pg_url).output
    r = run("state", "--db", pg_url, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["nodes"] == {}


def test_db_upgrade_on_sqlite_path(tmp_path):
    r = run("db", "upgrade", "--db", str(tmp_path / "x.db"))
    assert r.exit_code == 0 and f"empty -> {SCHEMA_REVISION}" in r.output


def test_launcher_and_python_m_run_the_same_cli(membership, tmp_path):
    for argv in ([membership, "--version"], [sys.executable, "-m", "membership_log", "--version"]):
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("membership-log ")
    r = subprocess.run([membership, "state", "--base-dir", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
