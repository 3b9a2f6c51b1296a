"""The central store on the real PostgreSQL server: ship, resume, refuse a diverged copy,
and read commands that answer for one node or the whole cluster."""

import json
import signal
import subprocess
import time

import pytest
from conftest import central_seqs, invoke
from opshelpers import wait_for
from samples import NODES
from sqlalchemy import create_engine, text

from membership_log import settings
from membership_log.core.timespec import iso
from membership_log.demo.synthetic import make_store
from membership_log.history import driver as derive
from membership_log.history import setup as hsetup
from membership_log.history.publish import publisher
from membership_log.stores.connect import driver_url
from membership_log.stores.node import NODE, NodeStore

pytestmark = pytest.mark.postgres
N0, N1, N2 = NODES


@pytest.fixture
def central(pg_url):
    invoke("db", "upgrade", "--db", pg_url)
    return pg_url


def synthetic_store(base, observer: str, n: int, start_us: int = 1_700_000_000_000_000):
    return make_store(str(base), observer, n, start_us)


def test_ship_is_idempotent_and_the_central_chain_verifies(handle, base, central):
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    out = invoke("ship", "--base-dir", str(base), "--to", central)
    assert "shipped 3 event(s) of node0" in out
    assert "shipped 0 event(s)" in invoke("ship", "--base-dir", str(base), "--to", central)
    handle("member-leave", b"node2\t192.168.100.52\t\t\n")
    assert "shipped 1 event(s) of node0: the central store holds its events up to 4" in \
        invoke("ship", "--base-dir", str(base), "--to", central)
    assert central_seqs(central, "node0") == [1, 2, 3, 4]
    assert "ok: node0: 4 events, hash chain intact" in invoke("verify", "--db", central)


def central_count(url, origin) -> int:
    engine = create_engine(driver_url(url))
    with engine.connect() as c:
        n = c.execute(text("SELECT count(*) FROM cluster_event WHERE origin = :o"),
                      {"o": origin}).scalar_one()
    engine.dispose()
    return n


@pytest.mark.e2e
def test_ship_killed_mid_batch_resumes_without_duplicates_or_gaps(tmp_path, central,
                                                                  membership):
    n = 150_000
    s = synthetic_store(tmp_path / "n", "node7", n)
    partial = []
    for _ in range(3):
        before = central_count(central, "node7")
        p = subprocess.Popen([membership, "ship", "--base-dir", s.base_dir, "--to", central],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # Kill as soon as a batch has landed: by then the copy is under way.
        while central_count(central, "node7") == before and p.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        shipped = central_seqs(central, "node7")
        assert shipped == list(range(1, len(shipped) + 1)), "a kill leaves no gap"
        partial.append(len(shipped))
    assert any(0 < k < n for k in partial), f"no kill landed mid-copy: {partial}"
    invoke("ship", "--base-dir", s.base_dir, "--to", central)
    assert central_seqs(central, "node7") == list(range(1, n + 1))
    assert f"ok: node7: {n} events" in invoke("verify", "--db", central)


def test_a_central_copy_that_diverges_is_refused(tmp_path, central):
    a = synthetic_store(tmp_path / "a", "node5", 10)
    invoke("ship", "--base-dir", a.base_dir, "--to", central)
    b = synthetic_store(tmp_path / "b", "node5", 12, start_us=1_800_000_000_000_000)
    out = invoke("ship", "--base-dir", b.base_dir, "--to", central, code=1)
    assert "diverges from the local log at event 10" in out


def test_ship_needs_a_central_schema_and_a_central_store(handle, base, pg_url, tmp_path):
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    out = invoke("ship", "--base-dir", str(base), "--to", pg_url, code=1)
    assert "not a membership-log store" in out
    out = invoke("ship", "--base-dir", str(base), "--to", str(tmp_path / "x.db"), code=1)
    assert out.startswith("membership: ")


@pytest.mark.e2e  # seconds long: kept out of the quick loop
def test_state_on_the_central_store_agrees_with_each_local_store(tmp_path, central, membership):
    t0 = 1_700_000_000_000_000
    bases = {}
    for name in ["node0", "node2"]:
        b = tmp_path / name
        b.mkdir()
        (b / "catalog.json").write_text(json.dumps(__import__("samples").CATALOG_V2))
        bases[name] = b
    # node0 sees node1 fail at +10 s and return at +40 s; node2 sees it at +12 s and +45 s.
    timeline = [("node0", 10, "member-failed"), ("node2", 12, "member-failed"),
                ("node0", 40, "member-join"), ("node2", 45, "member-join")]
    for name, b in bases.items():
        s = settings.resolve(str(b))
        hsetup.init(s, observer=name, received_us=t0)
        j = NodeStore(s.sqlite_path)
        with j.write():
            j.append([(t0 + sec * 1_000_000, name, "serf",
                       f"SERF_EVENT={kind}\0SERF_SELF_NAME={name}".encode(),
                       b"node1\t192.168.100.51\t\t\n")
                      for who, sec, kind in timeline if who == name])
        derive.catch_up(j, NODE, publisher(s.live_file))
        j.close()
        invoke("ship", "--base-dir", str(b), "--to", central)
    for name, b in bases.items():
        for sec in (5, 11, 30, 42, 50):
            at = iso(t0 + sec * 1_000_000)
            local = invoke("state", "--base-dir", str(b), "--at", at, "--as-live-file",
                           code=None).stdout_bytes
            remote = invoke("state", "--db", central, "--observer", name, "--at", at,
                            "--as-live-file", code=None).stdout_bytes
            assert local == remote, (name, sec)
    # Cluster-wide: node1 is down from the first report (node0, +10 s) to the last recovery
    # (node2, +45 s), seen by both observers.
    doc = json.loads(invoke("audit", "--db", central, "--json", "--until",
                            iso(t0 + 60 * 1_000_000)))
    (inc,) = doc["nodes"][N1]["incidents"]
    assert inc["down_at"] == iso(t0 + 10 * 1_000_000)
    assert inc["up_at"] == iso(t0 + 45 * 1_000_000)
    assert inc["duration_s"] == 35.0 and inc["observers"] == ["node0", "node2"]
    per = json.loads(invoke("audit", "--db", central, "--json", "--observer", "node2",
                            "--until", iso(t0 + 60 * 1_000_000)))
    assert per["nodes"][N1]["incidents"][0]["duration_s"] == 33.0
    merged_mid = invoke("state", "--db", central, "--at", iso(t0 + 42 * 1_000_000),
                        "--as-live-file", code=None)
    assert N1 not in json.loads(merged_mid.stdout_bytes), "still down for node2 at +42 s"
    lines = [json.loads(x) for x in invoke("replay", "--db", central, "--json").splitlines()]
    assert {x["origin"] for x in lines} == {"node0", "node2"}
    assert [x["at"] for x in lines] == sorted(x["at"] for x in lines)
    out = invoke("state", "--db", central, "--at", "@2", code=1)
    assert "add --observer NODE" in out
    invoke("timeline", "--db", central, "-o", str(tmp_path / "t.svg"))


@pytest.mark.e2e
def test_ship_follow_keeps_shipping_until_terminated(handle, base, central, membership):
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    p = subprocess.Popen([membership, "ship", "--base-dir", str(base), "--to", central,
                          "--follow", "--interval", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for kind in ["member-failed", "member-join", "member-leave"]:
            handle(kind, b"node1\t192.168.100.51\t\t\n")
        wait_for("5 events shipped", lambda: len(central_seqs(central, "node0")) >= 5)
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert central_seqs(central, "node0") == [1, 2, 3, 4, 5]
    assert "shipped" in out


@pytest.mark.serf
def test_real_cluster_shipped_to_postgres_audits_cluster_wide(serf, central, membership,
                                                               tmp_path):
    from membership_log.core.timespec import parse
    from membership_log.demo.localcluster import Cluster, catalog_for, wait_until

    ips = [f"127.0.0.{91 + i}" for i in range(3)]
    nodes = [f"{ip}:10031/droonga" for ip in ips]
    with Cluster(tmp_path, 3, 91, catalog=catalog_for(ips)) as c:
        for a in c.agents:
            assert wait_until(lambda a=a: sorted(a.live()) == nodes, 45)
        c[1].pause()
        for a in (c[0], c[2]):
            assert wait_until(lambda a=a: nodes[1] not in a.live(), 45)
        c[1].resume()
        for a in c.agents:
            assert wait_until(lambda a=a: sorted(a.live()) == nodes, 45)
        time.sleep(1)
    for a in c.agents:
        invoke("ship", "--base-dir", str(a.base_dir), "--to", central)
    assert "ok: 3 node log(s)" in invoke("verify", "--db", central)
    doc = json.loads(invoke("audit", "--db", central, "--json"))
    (inc,) = doc["nodes"][nodes[1]]["incidents"]
    assert inc["cause"] == "failed" and inc["up_at"] is not None
    assert inc["observers"] == ["node0", "node2"], "seen by both other observers"
    # The cluster-wide incident spans each observer's own.
    for name in ("node0", "node2"):
        own = json.loads(invoke("audit", "--db", central, "--json", "--observer", name))
        (mine,) = own["nodes"][nodes[1]]["incidents"]
        assert parse(inc["down_at"], 0).us <= parse(mine["down_at"], 0).us
        assert parse(inc["up_at"], 0).us >= parse(mine["up_at"], 0).us
    # state --at on the central store agrees with each local store, byte for byte.
    during = iso((parse(inc["down_at"], 0).us + parse(inc["up_at"], 0).us) // 2)
    for a in c.agents:
        for at in (during, "now"):
            local = invoke("state", "--base-dir", str(a.base_dir), "--at", at,
                           "--as-live-file", code=None).stdout_bytes
            remote = invoke("state", "--db", central, "--observer", a.name, "--at", at,
                            "--as-live-file", code=None).stdout_bytes
            assert local == remote and local, (a.name, at)
