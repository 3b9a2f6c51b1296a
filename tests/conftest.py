"""Shared fixtures: a clean environment, the real ``membership`` command, real PostgreSQL
and real Serf. Under ``CI=true`` a missing PostgreSQL or Serf fails the run; elsewhere the
tests that need them are skipped with the reason."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from samples import CATALOG_V2

from membership_log.demo.localcluster import membership_command

# The real Prometheus and Alertmanager fixtures.
pytest_plugins = ["realservers"]

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("MEMBERSHIP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


#: Fixtures that start real servers or agents: a test using one is end to end (``e2e``).
E2E_FIXTURES = {"serf", "alertmanager", "prometheus_factory"}
#: Modules end to end as a whole that carry no ``pytestmark = pytest.mark.e2e`` of their own
#: (yet: they were being edited on other branches when the marker came in).
E2E_MODULES = {"test_deploy.py", "test_ops_hardening.py"}


def pytest_collection_modifyitems(items) -> None:
    """Mark ``e2e`` whatever drives real Serf agents or servers, so that the quick loop
    (``-m "not e2e"``) cannot pick one up by a forgotten mark; the rest is marked in its
    module (``pytestmark``) or on the test."""
    for item in items:
        if (item.get_closest_marker("serf") or E2E_FIXTURES & set(item.fixturenames)
                or item.path.name in E2E_MODULES):
            item.add_marker(pytest.mark.e2e)


def missing(reason: str) -> None:
    """Fail under CI (a missing real part is a broken run), skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No MEMBERSHIP_* or SERF_* from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("MEMBERSHIP_", "SERF_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def membership() -> str:
    return membership_command()


@pytest.fixture
def base(tmp_path) -> Path:
    """A base dir holding the seed's 3-node catalog (192.168.100.50-52)."""
    d = tmp_path / "base"
    d.mkdir()
    (d / "catalog.json").write_text(json.dumps(CATALOG_V2, indent=2))
    return d


class Handler:
    """Runs ``membership handle`` as Serf does: a subprocess with SERF_* set, stdin piped."""

    def __init__(self, membership: str, base: Path) -> None:
        self.membership = membership
        self.base = base

    def __call__(self, event: str | None, stdin: bytes = b"", extra: dict | None = None,
                 args: list[str] | None = None, observer: str = "node0"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
        if event is not None:
            env["SERF_EVENT"] = event
        env["SERF_SELF_NAME"] = observer
        env.update(extra or {})
        argv = args if args is not None else ["--base-dir", str(self.base)]
        return subprocess.run([self.membership, "handle", *argv], input=stdin, env=env,
                              capture_output=True, timeout=60)

    def live(self) -> dict:
        return live(self.base)

    def rows(self) -> list[tuple]:
        return rows(self.base, "seq, source, env, stdin")


@pytest.fixture
def handle(membership, base) -> Handler:
    return Handler(membership, base)


# -- helpers the test modules import (``from conftest import cli, invoke, ...``) -------------


def cli(membership: str, *args, input: bytes | None = None, timeout: float = 120,
        **kw) -> subprocess.CompletedProcess:
    """The installed ``membership`` as a subprocess (bytes out); ``kw`` goes to
    subprocess.run (cwd, env, preexec_fn...). Arguments may be paths."""
    return subprocess.run([membership, *map(str, args)], input=input, capture_output=True,
                          timeout=timeout, **kw)


class Ran(str):
    """What ``invoke`` answers: the text a test asserts on (stdout; stderr when a failure
    was expected, as an error is one line there) with the whole Result at hand
    (``.output``: both streams as a terminal shows them, ``.stdout``, ``.stderr``,
    ``.exit_code``, ``.exception``...)."""

    result: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def invoke(*args, code: int | None = 0, catch_exceptions: bool = False) -> Ran:
    """The CLI in-process through Typer's CliRunner, asserting exit code ``code`` (None:
    any, the caller looks). Exceptions propagate by default: an uncaught one must not pass
    for an expected exit 1."""
    from typer.testing import CliRunner

    from membership_log.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=catch_exceptions)
    if code is not None:
        assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
    ran = Ran(r.stderr if code not in (0, None) else r.stdout)
    ran.result = r
    return ran


def rows(base, columns: str = "seq, source, observer, env, stdin") -> list[tuple]:
    """The node store's raw event rows, in log order."""
    with sqlite3.connect(Path(base) / "membership.db") as c:
        return c.execute(f"SELECT {columns} FROM event ORDER BY seq").fetchall()


def live(base) -> dict:
    """The live file the handler keeps, parsed."""
    return json.loads((Path(base) / "live-nodes.json").read_bytes())


def central_seqs(url: str, origin: str) -> list[int]:
    """The seqs of ``origin``'s events in the central store at ``url``, in order."""
    from sqlalchemy import create_engine, text

    from membership_log.stores.connect import driver_url

    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as c:
            return [r[0] for r in c.execute(text(
                "SELECT seq FROM cluster_event WHERE origin = :o ORDER BY seq"), {"o": origin})]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The real PostgreSQL server's admin URL; fails under CI if it does not answer."""
    from sqlalchemy import create_engine, text

    from membership_log.stores.connect import driver_url

    try:
        engine = create_engine(driver_url(PG_URL))
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001
        missing(f"PostgreSQL at {PG_URL} does not answer: {str(e).splitlines()[0]}")
    return PG_URL


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh database on the real server for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    from membership_log.stores.connect import driver_url

    name = f"membership_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(driver_url(pg_server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    head, _, _ = pg_server.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"
            ), {"d": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def serf() -> str:
    path = shutil.which("serf")
    if path is None:
        missing("serf is not installed (apt-get install serf)")
    return path


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
