"""Shipping to the real PostgreSQL server: two ships at once, events recorded
meanwhile, and ship --follow through a 2 s outage of the central store.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import time

import pytest
from conftest import central_seqs, cli, rows
from hardeninghelpers import (
    NODE1,
    serf,
)
from opshelpers import wait_for

from membership_log import settings
from membership_log.stores.node import NodeStore

pytestmark = pytest.mark.e2e

# == 15. One line, never a traceback; ship --follow rides out an outage ========================
# Before: two ships at once died of an unwrapped UniqueViolation; `rebuild` on a read-only
# store, `audit --since @99999999999999999999999` and `route` on the catalogs of item 2
# crashed; a newer store said "run: membership db upgrade" (which then refused); ship
# --follow exited on a 2 s outage.

@pytest.mark.postgres
def test_two_ships_at_once_both_succeed_and_copy_nothing_twice(membership, tmp_path, pg_url):
    from membership_log.demo.synthetic import make_store

    assert cli(membership, "db", "upgrade", "--db", pg_url).returncode == 0
    s = make_store(str(tmp_path / "n"), "node0", 20_000)
    failures = []

    def handler_runs(stop: threading.Event) -> None:
        while not stop.is_set():
            r = serf(membership, s.base_dir, "member-update", b"node1\t192.168.0.2\t\t\n")
            if r.returncode != 0:
                failures.append(r.stderr)

    for _ in range(3):
        # The node's handler keeps recording while both ships run.
        stop = threading.Event()
        t = threading.Thread(target=handler_runs, args=(stop,))
        t.start()
        try:
            ships = [subprocess.Popen([membership, "ship", "--base-dir", s.base_dir, "--to",
                                       pg_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for _ in range(2)]
            results = [(p.wait(timeout=120), *p.communicate()) for p in ships]
        finally:
            stop.set()
            t.join()
        for code, out, err in results:
            assert code == 0 and err == b"" and out.startswith(b"shipped "), (out, err)
        shipped = central_seqs(pg_url, "node0")
        assert shipped == list(range(1, len(shipped) + 1)), "no gap, nothing twice"
    assert failures == []
    assert cli(membership, "ship", "--base-dir", s.base_dir, "--to", pg_url).returncode == 0
    assert central_seqs(pg_url, "node0") == list(range(1, rows(s.base_dir)[-1][0] + 1))
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 0 and b"FAILED" not in r.stdout, r.stdout


@pytest.mark.postgres
def test_ship_does_not_mistake_events_recorded_meanwhile_for_another_log(membership, base,
                                                                           pg_url, monkeypatch):
    """Deterministic: the node's handler records an event between ship's look at the local
    head and its reading of a batch. Before, the batch took the new event along, and the next
    look saw a central copy longer than the (stale) local head: "not the same log", exit 1
    (and ship --follow exited for good)."""
    from membership_log.history import transfer

    assert cli(membership, "db", "upgrade", "--db", pg_url).returncode == 0
    assert serf(membership, base, "member-join", NODE1).returncode == 0
    real = NodeStore.stored_rows
    meanwhile = []

    def stored_rows(self, after, limit):
        if not meanwhile:
            meanwhile.append(serf(membership, base, "member-failed", NODE1).returncode)
        return real(self, after, limit)

    monkeypatch.setattr(NodeStore, "stored_rows", stored_rows)
    s = settings.resolve(str(base))
    first = transfer.ship(s, pg_url)
    assert meanwhile == [0]
    second = transfer.ship(s, pg_url)
    assert first.copied + second.copied == 3 and second.central_head == 3
    assert central_seqs(pg_url, "node0") == [1, 2, 3]


class Forwarder:
    """A TCP forwarder 127.0.0.1:<port> -> PostgreSQL, in threads, that can be cut (every
    connection reset, new ones refused) and restored on the same port: an outage of the
    central database as the shipper sees it."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.listener = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            self._spawn(self._pipe, client, server)

    def _pipe(self, a, b) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        # shutdown first: a listener closed while a thread is blocked in accept() keeps
        # listening until one more connection arrives, so the outage let one through
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:  # reset, as a dead network or a crashed server looks
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.cut()
        for t in self.threads:
            t.join(2)


@pytest.mark.postgres
def test_ship_follow_rides_out_a_2_s_outage_of_the_central_store(membership, handle, base,
                                                                    pg_url):
    fwd = Forwarder()
    fwd.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{fwd.port}")
    assert url != pg_url
    p = None
    try:
        assert cli(membership, "db", "upgrade", "--db", url).returncode == 0
        assert handle("member-join", NODE1).returncode == 0
        p = subprocess.Popen([membership, "ship", "--base-dir", str(base), "--to", url,
                              "--follow", "--interval", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def shipped(n: int) -> bool:
            return len(central_seqs(pg_url, "node0")) >= n

        wait_for("the first 2 events shipped", lambda: shipped(2))
        fwd.cut()
        cut_at = time.monotonic()
        for kind in ["member-failed", "member-join", "member-leave", "member-join"]:
            assert handle(kind, NODE1).returncode == 0  # recorded meanwhile
        time.sleep(max(0.0, 2.0 - (time.monotonic() - cut_at)))
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"ship --follow exited {p.returncode} during the outage: {out!r} {err!r}")
        fwd.start()
        restored_at = time.monotonic()
        wait_for("shipping to resume", lambda: shipped(6))
        resumed_in = time.monotonic() - restored_at
        assert handle("member-update", NODE1).returncode == 0
        wait_for("the 7th event shipped", lambda: shipped(7))
        time.sleep(0.5)
    finally:
        if p is not None:
            p.terminate()
            out, err = p.communicate(timeout=15)
        fwd.stop()
    assert p.returncode == 0, err
    text = out.decode()
    assert central_seqs(pg_url, "node0") == list(range(1, 8)), "nothing lost or duplicated"
    assert text.count("retrying with backoff") == 1, text
    assert text.count("reachable again") == 1, text
    assert "s3cret" not in text and "Traceback" not in err.decode()
    print(f"\nship --follow: a 2 s outage, reported once; shipping resumed {resumed_in:.1f} s "
          f"after the database came back; 7 of 7 events shipped, none twice")
    r = cli(membership, "verify", "--db", pg_url)
    assert r.returncode == 0 and b"ok: node0: 7 events" in r.stdout, r.stdout
