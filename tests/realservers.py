"""The real Prometheus and Alertmanager for the operations tests, and their fixtures.

Each server runs from the Debian package's binary on a free 127.0.0.1 port with its storage
in the test's tmp dir, so tests never touch (or depend on) a system instance on 9090/9093.
Every process started here is stopped by pid: SIGTERM, then SIGKILL after 10 s.

Loaded by ``pytest_plugins`` in conftest.py; the classes are also usable directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

READY_TIMEOUT = 60.0  # the machine is small and shared: Prometheus's first start can be slow


def binary(*names: str) -> str | None:
    """The first of ``names`` on PATH. Debian calls Alertmanager ``prometheus-alertmanager``
    (upstream: ``alertmanager``)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def require(*names: str, package: str = "prometheus") -> str:
    """Like :func:`binary`, but a missing one fails under CI and skips elsewhere."""
    path = binary(*names)
    if path is None:
        from conftest import missing

        missing(f"{names[0]} is not installed (apt-get install {package})")
    assert path is not None
    return path


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server may still lose a race for it: the
    start is retried on a new port then)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One real server process: started on ``start()``, ready when ``/-/ready`` answers 200."""

    name = "server"

    def __init__(self, tmpdir: Path | str) -> None:
        self.dir = Path(tmpdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "server.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start and wait until ready. A first start picks a free port (again if another
        process took it first); a restart keeps the port, so clients need no new URL."""
        keep = self.port is not None
        for _ in range(1 if keep else 5):
            port = self.port if keep else free_port()
            assert port is not None
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(self.argv(port), stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL, cwd=self.dir)
            self.port = port
            if self._wait_ready():
                return
            in_use = "address already in use" in self.log_tail().lower()
            self.stop()
            if keep or not in_use:
                break
            self.port = None
        raise AssertionError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after 10 s, and reap. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(Server):
    """The real Prometheus with ``config_yaml`` as its configuration."""

    name = "prometheus"

    def __init__(self, config_yaml: str, tmpdir: Path | str) -> None:
        super().__init__(tmpdir)
        self.binary = require("prometheus")
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config_yaml)

    def argv(self, port: int) -> list[str]:
        return [self.binary, f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn"]

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]


ALERTMANAGER_CONFIG = """\
# One receiver that sends nowhere: the tests read alerts back through the API.
route:
  receiver: blackhole
receivers:
  - name: blackhole
"""


class Alertmanager(Server):
    """The real Alertmanager, restartable on the same port with the same storage dir."""

    name = "alertmanager"

    def __init__(self, tmpdir: Path | str) -> None:
        super().__init__(tmpdir)
        self.binary = require("alertmanager", "prometheus-alertmanager",
                              package="prometheus-alertmanager")
        self.config = self.dir / "alertmanager.yml"
        self.config.write_text(ALERTMANAGER_CONFIG)

    def argv(self, port: int) -> list[str]:
        return [self.binary, f"--config.file={self.config}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # An empty address turns HA gossip off; by default it listens on 0.0.0.0:9094.
                "--cluster.listen-address=",
                "--log.level=warn"]

    def alerts(self, **params: str) -> list[dict]:
        """``GET /api/v2/alerts`` (``params``: its filters, e.g. ``active="false"``)."""
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{q}", timeout=5) as r:
            return json.load(r)


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[Alertmanager]:
    """A started real Alertmanager for one test."""
    with Alertmanager(tmp_path) as am:
        yield am


@pytest.fixture
def prometheus_factory(tmp_path) -> Iterator:
    """Start a real Prometheus from a config text: ``prometheus_factory(yaml)``; every one
    started is stopped after the test."""
    started: list[Prometheus] = []

    def start(config_yaml: str) -> Prometheus:
        prom = Prometheus(config_yaml, tmp_path / f"p{len(started)}")
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()
