"""The central store on the real PostgreSQL server: ship, resume, refuse a diverged copy,
and read commands that answer for one node or the whole cluster."""

import json
import random
import signal
import subprocess
import time

import pytest
from samples import NODES
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from membership_log import journal, settings, store
from membership_log.cli import app
from membership_log.timespec import iso

pytestmark = pytest.mark.postgres
runner = CliRunner()
N0, N1, N2 = NODES


def invoke(*args, code=0):
    r = runner.invoke(app, list(args))
    assert r.exit_code == code, r.output
    return r.output


@pytest.fixture
def central(pg_url):
    invoke("db", "upgrade", "--db", pg_url)
    return pg_url


def synthetic_store(base, observer: str, n: int, start_us: int = 1_700_000_000_000_000):
    """A node store of ``n`` member events, appended through the real append path."""
    s = settings.resolve(str(base))
    store.init(s, observer=observer, received_us=start_us)
    j = journal.Journal(s.sqlite_path)
    try:
        for first in range(0, n, 10_000):
            items = []
            for i in range(first, min(n, first + 10_000)):
                kind = ("member-failed", "member-join")[i % 2]
                env = f"SERF_EVENT={kind}\0SERF_SELF_NAME={observer}".encode()
                items.append((start_us + (i + 1) * 1000, observer, "serf", env,
                              b"node1\t192.168.100.51\t\t\n"))
            with j.write():
                j.append(items)
        journal.catch_up(j, s.live_file)
    finally:
        j.close()
    return s


def central_seqs(url, origin):
    engine = create_engine(store.driver_url(url))
    with engine.connect() as c:
        seqs = [r[0] for r in c.execute(text(
            "SELECT seq FROM cluster_event WHERE origin = :o ORDER BY seq"), {"o": origin})]
    engine.dispose()
    return seqs


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


def test_ship_killed_mid_batch_resumes_without_duplicates_or_gaps(tmp_path, central,
                                                                  membership):
    s = synthetic_store(tmp_path / "n", "node7", 40_000)
    rng = random.Random(3)
    for _ in range(3):
        p = subprocess.Popen([membership, "ship", "--base-dir", s.base_dir, "--to", central],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
    shipped = central_seqs(central, "node7")
    assert shipped == list(range(1, len(shipped) + 1)), "a kill leaves no gap"
    invoke("ship", "--base-dir", s.base_dir, "--to", central)
    assert central_seqs(central, "node7") == list(range(1, 40_001))
    assert "ok: node7: 40000 events" in invoke("verify", "--db", central)


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
        store.init(s, observer=name, received_us=t0)
        j = journal.Journal(s.sqlite_path)
        with j.write():
            j.append([(t0 + sec * 1_000_000, name, "serf",
                       f"SERF_EVENT={kind}\0SERF_SELF_NAME={name}".encode(),
                       b"node1\t192.168.100.51\t\t\n")
                      for who, sec, kind in timeline if who == name])
        journal.catch_up(j, s.live_file)
        j.close()
        invoke("ship", "--base-dir", str(b), "--to", central)
    for name, b in bases.items():
        for sec in (5, 11, 30, 42, 50):
            at = iso(t0 + sec * 1_000_000)
            local = runner.invoke(app, ["state", "--base-dir", str(b), "--at", at,
                                        "--as-live-file"]).stdout_bytes
            remote = runner.invoke(app, ["state", "--db", central, "--observer", name,
                                         "--at", at, "--as-live-file"]).stdout_bytes
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
    merged_mid = runner.invoke(app, ["state", "--db", central, "--at",
                                     iso(t0 + 42 * 1_000_000), "--as-live-file"])
    assert N1 not in json.loads(merged_mid.stdout_bytes), "still down for node2 at +42 s"
    lines = [json.loads(x) for x in invoke("replay", "--db", central, "--json").splitlines()]
    assert {x["origin"] for x in lines} == {"node0", "node2"}
    assert [x["at"] for x in lines] == sorted(x["at"] for x in lines)
    out = invoke("state", "--db", central, "--at", "@2", code=1)
    assert "add --observer NODE" in out
    invoke("timeline", "--db", central, "-o", str(tmp_path / "t.svg"))
