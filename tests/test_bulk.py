"""The long jobs on every core give the same bytes as the plain path: replay --json, audit
--json and verify, cut at checkpoints or by node (the cut-off is lowered so small logs are
cut too)."""

import io
import sqlite3

import pytest

from membership_log.core.timespec import Point
from membership_log.demo.synthetic import make_store
from membership_log.history import api as history
from membership_log.history import bulk, integrity, parallel, transfer
from membership_log.render import jsondoc
from membership_log.stores import setup as admin

START = 1_700_000_000_000_000


@pytest.fixture(autouse=True)
def cut_small_logs(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1_000)
    monkeypatch.setattr(parallel, "workers", lambda: 3)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("bulk") / "n"), "node0", 12_000, START,
                      members=30, flap_rate=0.2)


def _plain_replay(store, *args):
    out = io.StringIO()
    jsondoc.write_lines(out, (jsondoc.replay_doc(r) for r in history.replay(store, *args)))
    return out.getvalue()


@pytest.mark.parametrize("window", [(None, None), (Point("@", None, 2_345), None),
                                    (Point("@", None, 10), Point("@", None, 11_111))])
def test_replay_json_on_every_core_equals_the_plain_replay(log, window):
    with history.open_store(log.db_url) as st:
        out = io.StringIO()
        bulk.replay_json(log.db_url, st, out, *window)
        assert out.getvalue() == _plain_replay(st, *window)
        assert out.getvalue().count("\n") > 5_000 or window[0] is not None


@pytest.mark.e2e  # seconds long: kept out of the quick loop
def test_replay_json_of_one_log_of_a_central_store(log, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    admin.upgrade(url, "central")
    transfer.ship(log, url)
    with history.open_store(url) as st:
        out = io.StringIO()
        bulk.replay_json(url, st, out, None, None, None, "node0")
        assert out.getvalue() == _plain_replay(st, None, None, None, "node0")


@pytest.mark.parametrize("options", [{}, {"detection_delay_s": 2.5},
                                     {"flap_window_s": 5, "flap_threshold": 2}])
def test_audit_json_on_every_core_equals_the_plain_audit(log, options):
    until = Point("u", START + 13_000 * 1000, None)
    with history.open_store(log.db_url) as st:
        got = bulk.audit_json(log.db_url, st, None, until, now=1, **options)
        want = jsondoc.audit_text(history.audit(st, None, until, now=1, **options))
    assert got == want
    assert got.count('"down_at"') > 1_000


def test_verify_in_parts_finds_tampering_in_any_part(log, tmp_path):
    import shutil

    from membership_log import settings

    base = tmp_path / "copy"
    base.mkdir()
    shutil.copy(log.sqlite_path, base / "membership.db")
    shutil.copy(log.live_file, base / "live-nodes.json")
    s = settings.resolve(str(base))
    assert integrity.verify(s).problems == []
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("DROP TRIGGER event_no_update")
        (original,) = c.execute("SELECT stdin FROM event WHERE seq = 9000").fetchone()
        c.execute("UPDATE event SET stdin = x'00' WHERE seq = 9000")
    problems = integrity.verify(s).problems
    assert problems and problems[0].seq == 9_000
    with sqlite3.connect(base / "membership.db") as c:
        c.execute("UPDATE event SET stdin = ? WHERE seq = 9000", (original,))
    assert integrity.verify(s).problems == []
    # A checkpoint at a cut point, replaced by another: the part before it says so.
    with sqlite3.connect(base / "membership.db") as c:
        seqs = [r[0] for r in c.execute("SELECT seq FROM checkpoint ORDER BY seq")]
        first, cut = seqs[0], seqs[len(seqs) // 2]
        assert c.execute("UPDATE checkpoint SET state = (SELECT state FROM checkpoint WHERE "
                         "seq = ?) WHERE seq = ?", (first, cut)).rowcount == 1
    problems = integrity.verify(s).problems
    assert any(f"checkpoint at event {cut} differs" in p.what for p in problems), problems


def test_bulk_commands_pause_the_cycle_collector_and_give_it_back(log, monkeypatch):
    """audit, replay, verify and the other bulk commands run with the collector paused
    (parallel.paused_gc) and leave it as they found it, on success and on an error alike;
    a server's commands are not bulk ones."""
    import gc

    from typer.testing import CliRunner

    from membership_log import cli

    seen = []
    real = history.audit

    def spy(*args, **kw):
        seen.append(gc.isenabled())
        return real(*args, **kw)

    monkeypatch.setattr(history, "audit", spy)
    runner = CliRunner()
    assert gc.isenabled()
    r = runner.invoke(cli.app, ["audit", "--base-dir", log.base_dir])
    assert r.exit_code == 0, r.output
    assert seen == [False] and gc.isenabled()
    r = runner.invoke(cli.app, ["audit", "--base-dir", log.base_dir, "--node", "nobody"])
    assert r.exit_code == 1 and gc.isenabled()
    gc.disable()
    try:
        with parallel.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "left as it was found"
    finally:
        gc.enable()
