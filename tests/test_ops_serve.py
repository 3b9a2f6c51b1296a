"""``membership metrics`` and ``membership serve``: the exposition of a real store (checked by
the real promtool), the API's JSON equal to the commands' --json, bad input (400, 404, 503
while serving goes on), hostile node names, and the real server process (binds loopback,
says so, stops cleanly on SIGTERM)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import cli, invoke
from opshelpers import Serve, get, wait_for
from prometheus_client.parser import text_string_to_metric_families
from realservers import require
from samples import NODES
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.demo.synthetic import make_store
from membership_log.ops.serve import Api, parse_listen

N1 = NODES[1]
# ESC, a newline (Serf's escaped \n in a member line), markup and a byte that is not UTF-8.
HOSTILE_LINE = b"evil\x1b[31m<script>window.__pwned=1</script>\\nline\xff\t10.9.9.9\t\t\n"
# As the log reads it: the fold decodes member lines with U+FFFD for bytes that are not UTF-8.
HOSTILE = "evil\x1b[31m<script>window.__pwned=1</script>\nline\ufffd"
runner = CliRunner()


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def history_store(handle, base):
    """A base dir whose log has joins, a failure and its recovery, a leave, and a member with
    a hostile name that failed."""
    handle("member-join", b"node1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n")
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    handle("member-leave", b"node2\t192.168.100.52\t\t\n")
    handle("member-join", HOSTILE_LINE)
    handle("member-failed", HOSTILE_LINE)
    return base


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    """A synthetic 200-event node store, shared by the tests that only read it."""
    return make_store(str(tmp_path_factory.mktemp("small")), "node0", 200).db_url


def api(base, **kw) -> Api:
    return Api(f"sqlite:///{base}/membership.db", **kw)


# -- membership metrics ----------------------------------------------------------------------


def test_metrics_of_a_real_store_pass_promtool_and_count_from_the_log(membership,
                                                                      history_store, tmp_path):
    promtool = require("promtool")
    r = cli(membership, "metrics", "--base-dir", str(history_store))
    assert r.returncode == 0, r.stderr
    check = subprocess.run([promtool, "check", "metrics"], input=r.stdout,
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    got = samples(r.stdout.decode("utf-8"))
    assert got[("membership_node_up", (("node", N1),))] == 1
    assert got[("membership_node_up", (("node", NODES[2]),))] == 0
    assert got[("membership_node_up", (("node", HOSTILE),))] == 0
    assert got[("membership_node_incidents_total", (("cause", "failed"), ("node", N1)))] == 1
    assert got[("membership_node_incidents_total", (("cause", "left"),
                                                    ("node", NODES[2])))] == 1
    assert got[("membership_node_incidents_total", (("cause", "failed"),
                                                    ("node", HOSTILE)))] == 1
    assert got[("membership_live_nodes", ())] == 2
    assert got[("membership_events_total", (("event", "member-join"),
                                            ("observer", "node0")))] == 3
    assert got[("membership_observer_info", (("observer", "node0"),))] == 1

    # -o: written atomically, the same series (values of open incidents move with time).
    out = tmp_path / "textfile" / "membership.prom"
    out.parent.mkdir()
    r = cli(membership, "metrics", "--base-dir", str(history_store), "-o", str(out))
    assert r.returncode == 0 and r.stdout == b"", r.stderr
    assert set(samples(out.read_text("utf-8"))) == set(got)
    assert [p.name for p in out.parent.iterdir()] == ["membership.prom"]  # no temp left
    r = cli(membership, "metrics", "--base-dir", str(history_store), "-o",
            str(tmp_path / "no" / "such" / "dir.prom"))
    assert r.returncode == 1
    assert r.stderr.decode().startswith("membership: cannot write ") and \
        r.stderr.count(b"\n") == 1


# -- the API, in-process --------------------------------------------------------------------


def test_api_answers_with_the_commands_json(history_store):
    b = str(history_store)
    a = api(history_store)
    r = a.respond("/api/state")
    assert r.status == 200 and r.content_type == "application/json"
    assert r.body.decode() + "\n" == invoke("state", "--base-dir", b, "--json")
    r = a.respond("/api/state?at=%402")
    assert r.body.decode() + "\n" == invoke("state", "--base-dir", b, "--at", "@2", "--json")
    until = json.loads(a.respond("/api/state").body)["at"]
    r = a.respond(f"/api/audit?until={until}&node={N1.replace('/', '%2F')}")
    assert r.body.decode() + "\n" == invoke("audit", "--base-dir", b, "--until", until,
                                            "--node", N1, "--json")
    r = a.respond("/api/replay?since=%403")
    assert r.content_type == "application/x-ndjson"
    assert b"".join(r.body).decode() == invoke("replay", "--base-dir", b, "--since", "@3",
                                               "--json")
    assert a.respond("/api/replay?since=%4099").status == 200  # nothing after the head
    assert b"".join(a.respond("/api/replay?since=%4099").body) == b""
    heads = json.loads(a.respond("/api/heads").body)
    # The catalog event and six events; each log's head and each observer's latest event.
    assert heads["role"] == "node" and heads["heads"] == {"": 7}
    assert heads["logs"][""]["head"] == 7 and set(heads["observers"]) == {"node0"}
    assert heads["logs"][""]["at"] == heads["observers"]["node0"]
    assert heads["stale_after_s"] == 900.0
    svg = a.respond(f"/api/timeline.svg?until={until}")
    assert svg.content_type == "image/svg+xml" and svg.body.startswith(b"<svg")
    assert "default-src 'none'" in svg.headers["Content-Security-Policy"]


@pytest.mark.parametrize("target, status, start", [
    ("/api/state?at=garbage", 400, "at: 'garbage' is not a time; accepted: ISO 8601"),
    ("/api/audit?since=yesterday", 400, "since: 'yesterday' is not a time"),
    ("/api/audit?until=%4099999999999999999999", 400, "until: '@99999999999999999999': the "
                                                      "event number must be at most"),
    ("/api/replay?since=3h%20ago&until=5h%20ago", 400, "--since '3h ago'"),
    # Escaped as the CLI's one-line errors are (repr, then render.printable).
    ("/api/replay?since=%1b%5b2J", 400, "since: '\\\\x1b[2J' is not a time"),
    ("/api/timeline.svg?since=garbage", 400, "since: 'garbage' is not a time"),
    ("/api/state?sinec=1h%20ago", 400, "unknown parameter 'sinec' for /api/state (it takes: "
                                       "at, observer)"),
    ("/api/state?at=now&at=now", 400, "parameter 'at' given twice"),
    ("/metrics?nope=1", 400, "unknown parameter 'nope'"),
    ("/nope", 404, "no such page: /nope (try / or /metrics)"),
    ("/api", 404, "no such page: /api"),
    ("/metrics/", 404, "no such page: /metrics/"),
])
def test_bad_requests_are_one_line(small_store, target, status, start):
    r = Api(small_store).respond(target)
    assert r.status == status
    assert r.content_type == "text/plain; charset=utf-8"
    text = r.body.decode("utf-8")
    assert text.startswith(start), text
    assert text.endswith("\n") and text.count("\n") == 1


def test_an_unreadable_store_is_503_until_it_is_back(history_store):
    db = history_store / "membership.db"
    heard: list = []
    a = api(history_store, on_store_error=heard.append)
    assert a.respond("/metrics").status == 200
    os.rename(db, history_store / "away.db")
    for path in ("/metrics", "/api/state", "/api/audit", "/api/heads", "/api/replay"):
        r = a.respond(path)
        assert r.status == 503, path
        assert r.body.decode().startswith("the store cannot be read: no store at ")
    assert a.respond("/").status == 200  # the page itself needs no store
    os.rename(history_store / "away.db", db)
    assert a.respond("/metrics").status == 200
    assert [type(e).__name__ if e else None for e in heard][-2:] == ["StoreError", None]


def test_on_a_1000_event_store_the_stream_matches_the_command(tmp_path):
    s = make_store(str(tmp_path / "n"), "node0", 1000, flap_rate=0.05)
    body = b"".join(Api(s.db_url).respond("/api/replay").body)
    assert body.decode() == invoke("replay", "--base-dir", s.base_dir, "--json")
    assert body.count(b"\n") == 1000


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9137", ("127.0.0.1", 9137)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9137", ("::1", 9137)), ("localhost:0", ("localhost", 0)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9137", ":9137", "host:", "host:99999", "host:port", ""])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen(text)


# -- the real server process ----------------------------------------------------------------


def test_serve_process_binds_loopback_serves_and_stops_cleanly(membership, history_store,
                                                               tmp_path):
    """One real `membership serve`: the default address is loopback and it says so; a store
    that becomes unreadable gives 503 (reported once) while it keeps serving; SIGTERM stops
    it with exit 0."""
    with Serve(membership, ["--base-dir", str(history_store)], tmp_path) as serve:
        assert "(this machine only)" in serve.stderr()
        status, headers, body = serve.get("/metrics")
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert b'membership_node_up{node="192.168.100.51:10031/droonga"} 1.0' in body
        status, headers, page = serve.get("/")
        assert status == 200 and page.startswith(b"<!DOCTYPE html>")
        assert "script-src 'unsafe-inline'" in headers["Content-Security-Policy"]
        assert b"http://" not in page.replace(b"http://www.w3.org", b"")  # fetches nothing
        assert serve.get("/api/state?at=garbage")[0] == 400
        assert serve.get("/nope")[0] == 404
        # A page elsewhere cannot read the log through a DNS name rebound to 127.0.0.1.
        assert serve.get("/api/heads", headers={"Host": "evil.example:9137"})[0] == 421
        assert serve.get("/api/heads", headers={"Host": "localhost:9137"})[0] == 200

        db = history_store / "membership.db"
        db.rename(history_store / "away.db")
        (history_store / "membership.db").write_bytes(b"this is not SQLite" * 100)
        for _ in range(3):
            status, _, body = serve.get("/metrics")
            assert status == 503, body
            assert body.count(b"\n") == 1
        assert serve.get("/")[0] == 200
        (history_store / "away.db").replace(db)
        assert serve.get("/metrics")[0] == 200
        assert serve.stop() == 0
    err = serve.stderr()
    assert err.count("answering 503:") == 1, err
    assert err.count("the store is readable again") == 1, err
    assert "Traceback" not in err


def test_serve_refuses_a_bad_listen_address(membership, base):
    r = cli(membership, "serve", "--base-dir", str(base), "--listen", "nowhere")
    assert r.returncode == 2 and b"is not HOST:PORT" in r.stderr
    import socket

    with socket.socket() as s:  # a port that is taken: one line, exit 1
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli(membership, "serve", "--base-dir", str(base), "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 1, r.stderr
    assert r.stderr.decode().startswith(f"membership: cannot listen on 127.0.0.1:{port}: ")


def test_serve_started_before_the_first_event(tmp_path, membership, base, handle):
    """Started before Serf delivered anything (no store yet): 503, then the numbers as soon
    as the handler has set the store up."""
    with Serve(membership, ["--base-dir", str(base)], tmp_path) as serve:
        status, _, body = get(serve.url + "/metrics")
        assert status == 503 and b"no store at" in body
        handle("member-failed", b"node1\t192.168.100.51\t\t\n")
        status, _, body = wait_for("the store", lambda: (r := serve.get("/metrics"))[0] == 200
                                   and r, timeout=10)
        assert b'membership_node_up{node="192.168.100.51:10031/droonga"} 0.0' in body
        assert serve.stop() == 0


@pytest.mark.postgres
def test_api_on_the_central_store_merged_and_per_observer(tmp_path, pg_url):
    """Every route works on the central store: merged over every node's log, or one node's
    log with ?observer= (and @N needs one)."""
    assert runner.invoke(app, ["db", "upgrade", "--db", pg_url]).exit_code == 0
    for observer in ("node0", "node1"):
        s = make_store(str(tmp_path / observer), observer, 300, flap_rate=0.05)
        assert runner.invoke(app, ["ship", "--base-dir", s.base_dir, "--to", pg_url]) \
            .exit_code == 0
    a = Api(pg_url)
    heads = json.loads(a.respond("/api/heads").body)
    assert heads["role"] == "central" and heads["heads"] == {"node0": 300, "node1": 300}
    assert {o: h["head"] for o, h in heads["logs"].items()} == heads["heads"]
    assert set(heads["observers"]) == {"node0", "node1"}
    merged = a.respond("/metrics")
    assert merged.status == 200
    merged_samples = samples(merged.body.decode())
    assert not any(name == "membership_observer_info" for name, _ in merged_samples)
    assert {dict(labels)["observer"] for name, labels in merged_samples
            if name == "membership_events_total"} == {"node0", "node1"}
    assert a.respond("/metrics?observer=nobody").status == 400
    assert a.respond("/api/state").status == 200
    r = a.respond("/api/state?at=%405")
    assert r.status == 400 and b"add --observer NODE" in r.body
    assert a.respond("/api/state?at=%405&observer=node0").status == 200
    assert a.respond("/api/audit").status == 200
    assert a.respond("/api/timeline.svg").status == 200
    lines = b"".join(a.respond("/api/replay?observer=node1").body).splitlines()
    assert len(lines) == 300 and json.loads(lines[0])["observer"] == "node1"


@pytest.mark.postgres
def test_metrics_of_one_node_log_on_the_central_store(tmp_path, pg_url):
    assert runner.invoke(app, ["db", "upgrade", "--db", pg_url]).exit_code == 0
    s = make_store(str(tmp_path / "node1"), "node1", 300, flap_rate=0.05)
    assert runner.invoke(app, ["ship", "--base-dir", s.base_dir, "--to", pg_url]).exit_code == 0
    one = samples(Api(pg_url).respond("/metrics?observer=node1").body.decode())
    assert one[("membership_observer_info", (("observer", "node1"),))] == 1
