"""Issues 17, 18 and 19: what a hostile review found in ``membership serve``, ``membership
alerts`` and the dashboard, each reproduced through the real CLI and server processes, the
real handler, the real Alertmanager (with a webhook receiver) and headless Chromium.

Where a finding needs an Alertmanager that misbehaves (answers that trickle, are huge, are
not HTTP or are cut short), :class:`StandIn` plays that answer once and then forwards to the
real Alertmanager. Every slow-client test is bounded in time and stops what it started (by
pid, or by closing its sockets); resource limits are set on the server process alone.
"""

from __future__ import annotations

import ast
import json
import os
import re
import resource
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import cli
from opshelpers import Chromium, Proc, Serve, chromium_binary, wait_for
from realservers import Alertmanager
from samples import NODES
from test_ops_live import WEBHOOK_CONFIG, Webhook, us_of

from membership_log.core.outage import Backoff, Outage
from membership_log.demo.synthetic import make_store

N0, N1, N2 = NODES
JOIN = b"node1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n"
NODE1 = b"node1\t192.168.100.51\t\t\n"


def incidents(membership: str, base, node: str) -> list[dict]:
    r = cli(membership, "audit", "--base-dir", str(base), "--node", node, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["nodes"][node]["incidents"]


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def alertmanager_with_webhook(tmp_path, webhook) -> Alertmanager:
    am = Alertmanager(tmp_path)
    am.config.write_text(WEBHOOK_CONFIG.format(url=webhook.url))
    am.start()
    return am


# -- a stand-in that misbehaves once, then forwards to the real Alertmanager ---------------------


class StandIn:
    """A TCP server on 127.0.0.1: each connection's request is read whole, then answered by
    the next act of ``script`` (then ``forward``: passed to ``upstream`` and its answer
    back). ``seen`` lists the acts played, in order."""

    def __init__(self, script: list[str], upstream: str | None = None) -> None:
        self.script = list(script)
        self.upstream = None
        if upstream is not None:
            host, _, port = upstream.rpartition("//")[2].rpartition(":")
            self.upstream = (host, int(port))
        self.seen: list[str] = []
        self.stop_event = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                act = self.script.pop(0) if self.script else "forward"
                self.seen.append(act)
            t = threading.Thread(target=self._serve, args=(conn, act), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        need = int(m.group(1)) if m else 0
        while len(body) < need:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        # The upstream must close after its answer: the forwarder pipes until it does.
        head = re.sub(rb"(?im)^connection:[^\r\n]*\r\n", b"", head + b"\r\n")
        return head + b"Connection: close\r\n\r\n" + body

    def _serve(self, conn: socket.socket, act: str) -> None:
        try:
            request = self._request(conn)
            if act == "garbage":
                conn.sendall(b"this is not HTTP at all\r\n\r\n")
            elif act == "truncated":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n{\"status\"")
            elif act == "503":
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n"
                             b"Connection: close\r\n\r\nbusy\n")
            elif act == "trickle":  # 100,000 bytes, one every 2 s: never a whole answer
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 99950\r\n\r\n" + b"x" * 99950
                for i in range(len(answer)):
                    if self.stop_event.wait(2.0 if i else 0.0):
                        return
                    conn.sendall(answer[i:i + 1])
            elif act == "huge":  # a 300 MB answer, as fast as the client takes it
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n")
                block = b"0" * (1 << 20)
                for _ in range(300):
                    if self.stop_event.is_set():
                        return
                    conn.sendall(block)
            elif act == "forward":
                assert self.upstream is not None
                with socket.create_connection(self.upstream, timeout=10) as up:
                    up.sendall(request)
                    while chunk := up.recv(65536):
                        conn.sendall(chunk)
        except OSError:
            pass  # the client gave up on us: what these tests want
        finally:
            conn.close()

    def close(self) -> None:
        self.stop_event.set()
        try:  # wakes the thread blocked in accept(); close() alone does not
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(10)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- 3: an incident over before it was delivered reaches a receiver ------------------------------


def test_03_an_incident_over_before_alerts_runs_reaches_a_receiver_with_exact_times(
        membership, handle, base, tmp_path, webhook):
    """node1 fails and is back 2 s later, then fails again; only then does ``alerts`` run.
    Alertmanager notifies no alert it never saw firing, so the first incident goes out
    firing, as its own alert, with its exact startsAt and its end in the annotations, and
    resolves by itself --over-hold seconds later; the open one keeps its own exact start."""
    am = alertmanager_with_webhook(tmp_path, webhook)
    try:
        handle("member-join", JOIN)
        handle("member-failed", NODE1)
        time.sleep(2)
        handle("member-join", NODE1)
        handle("member-failed", NODE1)
        first, second = sorted(incidents(membership, base, N1), key=lambda i: i["down_at"])
        assert first["up_at"] is not None and second["up_at"] is None
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", am.url,
                "--over-hold", "3")
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"{N1} failed: down {first['down_at']} to {first['up_at']}" in out
        assert "already over" in out
        assert out.endswith("2 alert(s) delivered to " + am.url + ": 1 firing, 0 re-sent "
                            "(still open), 0 resolved, 1 already over (firing for 3 s)\n"), out

        def notified(status: str) -> list[dict]:
            return webhook.alerts(status, N1)

        firing = wait_for("both firing notifications", lambda: len(notified("firing")) >= 2
                          and notified("firing"), timeout=30)
        over = [a for a in firing if "incident" in a["labels"]]
        now = [a for a in firing if "incident" not in a["labels"]]
        assert len(over) >= 1 and len(now) >= 1
        # Each keeps its exact start: the short one did not merge into the open one.
        assert us_of(over[0]["startsAt"]) == us_of(first["down_at"])
        assert us_of(now[0]["startsAt"]) == us_of(second["down_at"])
        assert us_of(over[0]["annotations"]["ended_at"]) == us_of(first["up_at"])
        assert "already over" in over[0]["annotations"]["summary"]
        assert first["up_at"] in over[0]["annotations"]["description"]
        # It resolves by itself (endsAt a hold after delivery): no false "firing" left.
        [resolved] = wait_for("the short incident resolved", lambda: [
            a for a in notified("resolved") if "incident" in a["labels"]], timeout=30)
        assert us_of(resolved["startsAt"]) == us_of(first["down_at"])
        wait_for("only the open incident left in Alertmanager",
                 lambda: [a["labels"].get("incident") for a in am.alerts()] == [None])
        # Delivered once: a second run sends nothing but the open incident again.
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", am.url)
        assert r.stdout.decode().endswith(": 0 firing, 1 re-sent (still open), 0 resolved\n")
    finally:
        am.stop()


# -- 6: member names that are Object.prototype's ------------------------------------------------


PROTO_NAMES = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]


def test_06_prototype_names_do_not_blank_the_dashboard(membership, handle, base, tmp_path):
    binary = chromium_binary()
    members = b"".join(f"{name}\t10.9.9.{i}\t\t\n".encode()
                       for i, name in enumerate(PROTO_NAMES, 1))
    handle("member-join", JOIN + members)
    handle("member-failed", b"constructor\t10.9.9.1\t\t\n")  # one of them has an incident
    handle("member-failed", NODE1)
    expected = {N0, N1, N2, *PROTO_NAMES}
    # The Incidents column found by its heading: the table has gained columns before.
    rows_js = ("(() => { const i = Array.from(document.querySelectorAll('#nodes thead th'))"
               ".findIndex(th => th.textContent === 'Incidents'); "
               "return Array.from(document.querySelectorAll('#nodes tbody tr')).map(tr => "
               "[tr.dataset.node, tr.classList.contains('dead'), i >= 0 && tr.cells.length > i"
               " ? tr.cells[i].textContent : null]); })()")
    with Serve(membership, ["--base-dir", str(base)], tmp_path) as serve, \
            Chromium(binary, tmp_path / "profile") as browser:
        browser.goto(serve.url + "/")
        # (The audit lists catalog nodes and nodes with incidents: the others show "-".)
        got = wait_for("every node in the cluster table, with the audit's figures", lambda: (
            r := {n: (dead, count) for n, dead, count in browser.eval(rows_js) if n}) and
            set(r) == expected and r["constructor"][1] == "1" and r, timeout=30)
        assert got["constructor"] == (True, "1") and got[N1] == (True, "1")
        assert got[N2] == (False, "0")
        for name in PROTO_NAMES[1:]:
            assert got[name] == (False, "-"), name
        summary = browser.eval("document.getElementById('summary').textContent")
        assert "Cannot" not in summary and "2 of 3 catalog node(s) live" in summary
        incidents_text = browser.eval("document.querySelector('#incidents tbody').textContent")
        assert "constructor" in incidents_text and incidents_text.count("still down") == 2
        assert serve.stop() == 0


# -- 7: connections that never finish their request --------------------------------------------


def test_07_half_requests_at_an_open_file_limit_of_64_cannot_starve_metrics(membership, tmp_path):
    s = make_store(str(tmp_path / "n"), "node0", 500)
    with Serve(membership, ["--base-dir", s.base_dir], tmp_path) as serve:
        resource.prlimit(serve.pid, resource.RLIMIT_NOFILE, (64, 64))  # the server alone
        slow = []
        try:
            for _ in range(66):
                c = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
                slow.append(c)
            # A scraper gets its answer within 5 s: at most a 503 "try again" or two while
            # the server's threads close the connections it displaced (busy machine).
            t = time.monotonic()
            while True:
                status, _, body = serve.get("/metrics", timeout=10)
                took = time.monotonic() - t
                if status != 503 or took > 5:
                    break
                time.sleep(0.2)
            assert status == 200, body
            assert took < 5, f"/metrics answered after {took:.1f} s"
            for _ in range(5):  # and again: the store still opens
                assert serve.get("/metrics", timeout=10)[0] == 200

            # Every half request is closed, at the latest the request deadline (10 s) after
            # it was accepted: by an answer (503: the cap, 408: too slow) and end of stream.
            deadline = time.monotonic() + 20
            answers = []
            for c in slow:
                c.settimeout(max(0.1, deadline - time.monotonic()))
                data = b""
                try:
                    while chunk := c.recv(65536):
                        data += chunk
                except ConnectionResetError:
                    pass
                answers.append(data.split(b"\r\n", 1)[0])
            assert time.monotonic() < deadline
            assert set(answers) <= {b"HTTP/1.0 503 Service Unavailable",
                                    b"HTTP/1.0 408 Request Timeout"}, set(answers)
            assert b"HTTP/1.0 408 Request Timeout" in answers
        finally:
            for c in slow:
                c.close()
        assert serve.get("/metrics", timeout=10)[0] == 200
        # The spell at the cap ends once the connections have gone, without a new one (the
        # serving loop looks every half second).
        wait_for("the end of the spell at the cap", lambda: "under the connection cap again"
                 in serve.stderr(), timeout=10)
        assert serve.stop() == 0
    err = serve.stderr()
    assert "cannot open store" not in err and "Traceback" not in err, err
    assert err.count("connection cap reached:") == 1, err
    assert err.count("under the connection cap again after") == 1, err


# -- 8: a stalled replay client ------------------------------------------------------------------


def _fds_naming(pid: int, needle: str) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if needle in target:
            out.append(target)
    return out


def test_08_a_stalled_replay_client_holds_no_read_transaction(membership, tmp_path):
    """``curl .../api/replay | less``: a client that reads nothing. While it stalls, the real
    handler records events and a TRUNCATE checkpoint succeeds (no reader pins the WAL); the
    server holds no store for it; after --client-timeout (8 s) it is dropped."""
    s = make_store(str(tmp_path / "n"), "node0", 30000, flap_rate=0.05)
    db = Path(s.sqlite_path)
    wal = Path(str(db) + "-wal")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SERF_")},
           "SERF_SELF_NAME": "node0"}

    def record(n: int) -> None:
        for i in range(n):
            kind = "member-failed" if i % 2 == 0 else "member-join"
            r = subprocess.run([membership, "handle", "--base-dir", s.base_dir],
                               input=b"m1\t10.0.0.1\t\t\n", env={**env, "SERF_EVENT": kind},
                               capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr

    with Serve(membership, ["--base-dir", s.base_dir], tmp_path,
               ["--client-timeout", "8"]) as serve:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            client.connect(("127.0.0.1", serve.port))
            client.sendall(b"GET /api/replay HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            stalled_at = time.monotonic()
            time.sleep(1.0)  # the server fills the buffers and blocks on the send
            record(10)
            assert _fds_naming(serve.pid, "membership.db") == [], "a store is held open"
            with sqlite3.connect(db, timeout=1) as c:
                busy, _, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "a read transaction pins the WAL"
            assert wal.stat().st_size == 0
            record(5)
            assert wal.stat().st_size < 1 << 20  # and it grows only by what was recorded
            assert time.monotonic() - stalled_at < 8, "the test itself was too slow"

            # After 8 s of taking nothing it is dropped (still reading nothing meanwhile)...
            wait_for("the drop", lambda: "took nothing of the answer" in serve.stderr(),
                     timeout=30)
            # ... so draining now reaches the end of a stream cut short.
            client.settimeout(20)
            data = b""
            try:
                while chunk := client.recv(1 << 20):
                    data += chunk
            except ConnectionResetError:
                pass
            assert 0 < data.count(b"\n") < 30000
        finally:
            client.close()
        assert serve.get("/metrics")[0] == 200
        assert serve.stop() == 0
    err = serve.stderr()
    assert err.count("GET /api/replay: the client took nothing of the answer for 8 s") == 1, err
    assert "Traceback" not in err


def test_08_the_paged_stream_is_byte_identical_to_replay_json(membership, tmp_path):
    """Several pages (and a window that starts mid-log) give exactly the command's bytes."""
    s = make_store(str(tmp_path / "n"), "node0", 7000, flap_rate=0.05)
    with Serve(membership, ["--base-dir", s.base_dir], tmp_path) as serve:
        for query, args in [("", []), ("?since=%403001&until=%406500", ["--since", "@3001",
                                                                         "--until", "@6500"]),
                            ("?node=node1", ["--node", "node1"])]:
            status, _, body = serve.get("/api/replay" + query, timeout=60)
            assert status == 200
            r = cli(membership, "replay", "--base-dir", s.base_dir, "--json", *args)
            assert r.returncode == 0, r.stderr
            assert body == r.stdout, query
        assert serve.stop() == 0


@pytest.mark.postgres
def test_08_a_central_store_streams_merged_pages_byte_identical(membership, tmp_path, pg_url):
    """The merged replay of a central store (several logs, each over several pages, merged
    by receive time with cluster-wide changes) and one log of it, as the command prints."""
    assert cli(membership, "db", "upgrade", "--db", pg_url).returncode == 0
    for observer in ("node0", "node1"):
        s = make_store(str(tmp_path / observer), observer, 4500, flap_rate=0.05)
        r = cli(membership, "ship", "--base-dir", s.base_dir, "--to", pg_url)
        assert r.returncode == 0, r.stderr
    with Serve(membership, ["--db", pg_url], tmp_path) as serve:
        for query, args in [("", []), ("?observer=node1&since=%401999", ["--observer", "node1",
                                                                          "--since", "@1999"])]:
            status, _, body = serve.get("/api/replay" + query, timeout=120)
            assert status == 200
            r = cli(membership, "replay", "--db", pg_url, "--json", *args)
            assert r.returncode == 0, r.stderr
            assert body == r.stdout, query
            assert body.count(b"\n") > 2000
        assert serve.stop() == 0


# -- 10: a trickling or huge answer ------------------------------------------------------------


def test_10_a_trickling_answer_is_cut_at_the_deadline_and_retried(membership, handle, base,
                                                                alertmanager):
    handle("member-failed", NODE1)
    with StandIn(["trickle"], alertmanager.url) as stand_in:
        t = time.monotonic()
        r = subprocess.run([membership, "alerts", "--base-dir", str(base), "--to",
                            stand_in.url], capture_output=True, timeout=60)
        took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert stand_in.seen == ["trickle", "forward"]
    assert took < 20, f"one pass took {took:.1f} s"
    [got] = alertmanager.alerts()
    assert got["labels"]["node"] == N1
    print(f"trickling answer given up on and retried: {took:.1f} s")


def test_10_a_300_mb_answer_is_not_read(membership, handle, base):
    handle("member-failed", NODE1)
    with StandIn(["huge"]) as stand_in:
        out_file, err_file = base / "alerts.out", base / "alerts.err"
        with open(out_file, "wb") as out, open(err_file, "wb") as err:
            p = subprocess.Popen([membership, "alerts", "--base-dir", str(base), "--to",
                                  stand_in.url], stdout=out, stderr=err)
        deadline = time.monotonic() + 60
        done = None
        peak_kb = 0
        try:
            while done is None and time.monotonic() < deadline:
                # The command's own peak resident size (VmHWM is reset by exec, unlike a
                # wait4 rusage, which counts what a vforked child shared with this process).
                try:
                    status_text = Path(f"/proc/{p.pid}/status").read_text()
                    hwm = next(line for line in status_text.splitlines()
                               if line.startswith("VmHWM:"))
                    peak_kb = max(peak_kb, int(hwm.split()[1]))
                except (OSError, StopIteration, ValueError):
                    pass
                pid, status, _ = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    done = os.waitstatus_to_exitcode(status)
                time.sleep(0.02)
        finally:
            if done is None:
                p.kill()
                os.wait4(p.pid, 0)
            p.returncode = -1  # reaped here, by wait4
        assert done is not None, "alerts was still reading after 60 s"
    assert done == 0, err_file.read_text()
    assert 0 < peak_kb < 150 * 1024, f"{peak_kb / 1024:.0f} MB resident"
    assert out_file.read_text().endswith(": 1 firing, 0 re-sent (still open), 0 resolved\n")


# -- 11: answers that are not HTTP, or cut short, under --follow --------------------------------


def test_11_follow_retries_answers_that_are_not_http_or_are_cut_short(membership, handle, base,
                                                                     tmp_path, alertmanager):
    handle("member-join", JOIN)
    handle("member-failed", NODE1)
    with StandIn(["garbage", "truncated", "503"], alertmanager.url) as stand_in:
        follow = Proc(membership, ["alerts", "--base-dir", str(base), "--to", stand_in.url,
                                   "--follow", "--interval", "0.2"], tmp_path, "alerts")
        try:
            got = wait_for("the alert, past three bad answers", lambda: alertmanager.alerts(),
                           timeout=40)
            # Alertmanager may hold the alert before alerts has had its answer and said so.
            wait_for("the end of the outage reported", lambda: "reachable again after"
                     in follow.stderr(), timeout=20)
            assert follow.proc.poll() is None, follow.stderr()
            assert follow.stop() == 0
        finally:
            follow.stop()
    assert stand_in.seen[:4] == ["garbage", "truncated", "503", "forward"]
    assert got[0]["labels"]["node"] == N1
    err = follow.stderr()
    assert "internal error" not in err and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "sending the incidents of" not in line]
    assert len(lines) == 2, err
    assert "is not HTTP" in lines[0] and "(retrying with backoff" in lines[0], err
    assert lines[1].startswith("membership alerts: Alertmanager reachable again after "), err
    assert "(3 failed attempts)" in lines[1]


# -- 12: the store locked for a while under --follow --------------------------------------------


def test_12_a_locked_store_is_reported_once_and_nothing_is_posted_twice(membership, handle, base,
                                                                       tmp_path, alertmanager):
    handle("member-join", JOIN)
    handle("member-failed", NODE1)
    db = base / "membership.db"
    lock = sqlite3.connect(db, isolation_level=None)
    follow = None
    try:
        lock.execute("BEGIN IMMEDIATE")  # a writer holds the store for 25 s
        locked_at = time.monotonic()
        follow = Proc(membership, ["alerts", "--base-dir", str(base), "--to", alertmanager.url,
                                   "--follow", "--interval", "0.2"], tmp_path, "alerts")
        wait_for("the alert", lambda: alertmanager.alerts(), timeout=30)
        time.sleep(max(0.0, 25 - (time.monotonic() - locked_at)))
        lock.execute("ROLLBACK")
        wait_for("the delivery recorded", lambda: sqlite3.connect(db).execute(
            "SELECT count(*) FROM alert_delivery").fetchone()[0] == 1, timeout=30)
        wait_for("the end of the outage reported",
                 lambda: "the store is readable again" in follow.stderr(), timeout=30)
        assert follow.stop() == 0
    finally:
        lock.close()
        if follow is not None:
            follow.stop()
    err = follow.stderr()
    out = follow.stdout()
    assert out.count("firing since") == 1, out  # posted once, not once per attempt
    assert len([line for line in err.splitlines() if "is locked" in line]) == 1, err
    assert err.count("the store is readable again after") == 1, err
    assert "Traceback" not in err


# -- 14: clients that hang up before the answer ------------------------------------------------


def _reset(c: socket.socket) -> None:
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    c.close()


def test_14_clients_that_hang_up_leave_no_traceback(membership, tmp_path):
    s = make_store(str(tmp_path / "n"), "node0", 3000, flap_rate=0.05)
    with Serve(membership, ["--base-dir", s.base_dir], tmp_path) as serve:
        for path in ["/metrics"] * 20 + ["/api/audit", "/api/replay", "/"] * 3:
            c = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
            c.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            _reset(c)  # a scrape timeout: gone before the answer
        for _ in range(5):  # and some gone before they even asked
            c = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
            c.sendall(b"GET /metr")
            _reset(c)
        time.sleep(1)
        assert serve.get("/metrics")[0] == 200
        assert serve.stop() == 0
    lines = serve.stderr().splitlines()
    assert len(lines) == 1 and "listening on" in lines[0], lines  # nothing about hang-ups


# -- 18: a permanent 4xx is one line, not retried ------------------------------------------------


def test_18_a_404_says_which_url_was_posted_and_is_not_retried(membership, handle, base, tmp_path,
                                                              alertmanager):
    handle("member-failed", NODE1)
    wrong = alertmanager.url + "/api/v2/alerts"
    t = time.monotonic()
    r = cli(membership, "alerts", "--base-dir", str(base), "--to", wrong)
    took = time.monotonic() - t
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("membership: "), err
    assert "HTTP 404" in err and f"POST {wrong}/api/v2/alerts" in err, err
    assert "--to takes Alertmanager's base URL (e.g. http://HOST:9093, not .../api/v2/alerts)" \
        in err, err
    assert took < 5, "retried"  # the retries of a transient error take 7.5 s

    follow = Proc(membership, ["alerts", "--base-dir", str(base), "--to", wrong, "--follow"],
                  tmp_path, "alerts")
    try:
        assert follow.proc.wait(timeout=30) == 1
    finally:
        follow.stop()
    assert "HTTP 404" in follow.stderr() and "Traceback" not in follow.stderr()
    assert alertmanager.alerts() == []


#: bcrypt of "s3cret" (Alertmanager's web config wants a bcrypt hash).
S3CRET_BCRYPT = "$2b$12$h5UrLAqLt3hVM5J3d0V0E.hYU2b3fTwIAukpQP7wEL/YzUeX8xTW2"


class AuthAlertmanager(Alertmanager):
    """The real Alertmanager behind basic auth (user ``am``, password ``s3cret``)."""

    def __init__(self, tmpdir) -> None:
        super().__init__(tmpdir)
        self.web = self.dir / "web.yml"
        self.web.write_text(f"basic_auth_users:\n  am: {S3CRET_BCRYPT}\n")

    def argv(self, port: int) -> list[str]:
        return [*super().argv(port), f"--web.config.file={self.web}"]

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        request = urllib.request.Request(self.url + "/-/ready",
                                         headers={"Authorization": "Basic YW06czNjcmV0"})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False


def test_18_a_401_is_one_line_not_retried_and_the_password_never_shown(membership, handle, base,
                                                                       tmp_path):
    handle("member-failed", NODE1)
    am = AuthAlertmanager(tmp_path)
    am.start()
    try:
        host = am.url.removeprefix("http://")
        for to in (am.url, f"http://am:wrong@{host}"):
            t = time.monotonic()
            r = cli(membership, "alerts", "--base-dir", str(base), "--to", to)
            assert r.returncode == 1
            err = r.stderr.decode()
            assert err.count("\n") == 1 and "HTTP 401" in err, err
            assert f"POST http://{host}/api/v2/alerts" in err and "wrong" not in err, err
            assert time.monotonic() - t < 5
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", f"http://am:s3cret@{host}")
        assert r.returncode == 0, r.stderr
        assert b"s3cret" not in r.stdout + r.stderr
    finally:
        am.stop()


def test_18_a_5xx_is_still_retried(membership, handle, base, alertmanager):
    handle("member-failed", NODE1)
    with StandIn(["503", "503"], alertmanager.url) as stand_in:
        r = cli(membership, "alerts", "--base-dir", str(base), "--to", stand_in.url)
    assert r.returncode == 0, r.stderr
    assert stand_in.seen == ["503", "503", "forward"]
    assert len(alertmanager.alerts()) == 1


# -- 19: one outage reporter, one backoff ----------------------------------------------------


def test_19_one_outage_reporter_says_when_it_began_and_how_long_it_lasted():
    lines: list[str] = []
    ticks = iter([10.0, 82.4])
    o = Outage(lines.append, lambda: next(ticks), began="{error} ({what})",
               ended="{what} back after {lasted} ({failures} failed attempts)", what="thing")
    assert not o.succeeded() and lines == []
    assert o.failed("broke {braces}") and not o.failed("again") and o.down
    assert lines == ["broke {braces} (thing)"]
    assert o.succeeded() and not o.succeeded() and not o.down
    assert lines[1:] == ["thing back after 72 s (2 failed attempts)"]
    b = Backoff(0.5, 4)
    assert [b.next() for _ in range(5)] == [0.5, 1, 2, 4, 4]
    b.reset()
    assert b.next() == 0.5


def test_19_no_module_writes_its_own_outage_reporter_or_backoff():
    package = Path(__file__).resolve().parent.parent / "membership_log"
    own = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and re.search(r"Backoff|Outage|Trouble",
                                                            node.name):
                own.append(f"{path.relative_to(package)}:{node.name}")
    assert sorted(own) == ["core/outage.py:Backoff", "core/outage.py:Outage"]
    users = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
             if "core.outage import" in p.read_text() or "from ..core import outage"
             in p.read_text()}
    assert {"ops/alerts.py", "ops/serve.py", "ops/alertmanager.py",
            "history/transfer.py"} <= users, users


def test_19_serve_reports_an_unreadable_store_once_with_how_long(membership, handle, base,
                                                                tmp_path):
    handle("member-failed", NODE1)
    with Serve(membership, ["--base-dir", str(base)], tmp_path) as serve:
        db = base / "membership.db"
        db.rename(base / "away.db")
        for _ in range(3):
            assert serve.get("/metrics")[0] == 503
        (base / "away.db").rename(db)
        assert serve.get("/metrics")[0] == 200
        assert serve.stop() == 0
    err = serve.stderr()
    assert err.count("answering 503: ") == 1, err
    # (Three 503s, and the start-up look at the store if it came after the rename.)
    m = re.search(r"the store is readable again after \d+ s \((\d+) failed reads\)", err)
    assert m and int(m.group(1)) in (3, 4), err

