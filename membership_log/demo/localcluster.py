"""Real Serf agents side by side on loopback, each with ``membership handle`` as its handler.

Used by the demo and the end-to-end tests. Every agent started here is stopped by pid
(:meth:`Cluster.stop`, also on leaving the ``with`` block). Traffic stays on 127.0.0.0/8.

The seed's faults on one machine (shared/reference/serf.md): ``pause`` (SIGSTOP) is a paused
VM, ``resume`` (SIGCONT) its return; ``kill9`` then ``start`` again is a VM reset and reboot;
``leave`` a graceful leave.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import MembershipError

SERF_PORT = 7946
RPC_PORT = 7373


def serf_binary(install: bool = False) -> str:
    """The ``serf`` executable; with ``install``, apt-get it (as root) when it is missing."""
    found = shutil.which("serf")
    if found or not install:
        if not found:
            raise MembershipError("serf is not installed (apt-get install serf)")
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise MembershipError("serf is not installed and cannot be installed here; "
                              "install it with: apt-get install serf")
    print("serf is missing; installing it with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "serf"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    found = shutil.which("serf")
    if not found:
        raise MembershipError("apt-get installed serf, but it is not on PATH")
    return found


def membership_command() -> str:
    """The ``membership`` launcher next to the running interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("membership")
    if beside.exists():
        return str(beside)
    found = shutil.which("membership")
    if not found:
        raise MembershipError("the membership command is not installed (pip install .)")
    return found


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Agent:
    """One ``serf agent`` bound to its own loopback address, with its own base dir."""

    def __init__(self, name: str, ip: str, base_dir: Path, serf: str, membership: str | None,
                 profile: str = "local", tags: dict[str, str] | None = None,
                 live_format: str | None = None) -> None:
        self.name = name
        self.ip = ip
        self.base_dir = Path(base_dir)
        self.serf = serf
        #: None: an agent with no event handler (a bare Serf member, e.g. a Droonga engine's).
        self.membership = membership
        self.profile = profile
        #: Serf tags the agent starts with (``-tag k=v``), as Droonga's engines set them.
        self.tags = dict(tags or {})
        #: The handler's ``--live-format`` (None: the default, ``droonga``).
        self.live_format = live_format
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def bind(self) -> str:
        return f"{self.ip}:{SERF_PORT}"

    @property
    def rpc(self) -> str:
        return f"{self.ip}:{RPC_PORT}"

    @property
    def live_file(self) -> Path:
        """Where the handler writes the live file: the default path of its format."""
        if self.live_format == "droonga-1.1":
            from ..core.droonga import STATE_FILE

            return self.base_dir / STATE_FILE
        return self.base_dir / "live-nodes.json"

    @property
    def handler(self) -> str:
        line = f"{self.membership} handle --base-dir {shlex.quote(str(self.base_dir))}"
        if self.live_format is not None:
            line += f" --live-format {shlex.quote(self.live_format)}"
        return line

    def start(self, join: Agent | None = None) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.serf, "agent", f"-node={self.name}", f"-bind={self.bind}",
               f"-rpc-addr={self.rpc}", f"-profile={self.profile}"]
        if self.membership is not None:
            cmd.append(f"-event-handler={self.handler}")
        for key, value in self.tags.items():
            cmd += ["-tag", f"{key}={value}"]
        if join is not None:
            cmd.append(f"-join={join.bind}")
        log = open(self.base_dir / "agent.log", "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.base_dir)
        finally:
            log.close()
        self.paused = False
        if not wait_until(self._answers, 10):
            self.stop()
            raise MembershipError(f"serf agent {self.name} did not start; see "
                                  f"{self.base_dir / 'agent.log'}")

    def _answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise MembershipError(f"serf agent {self.name} exited; see "
                                  f"{self.base_dir / 'agent.log'}")
        r = subprocess.run([self.serf, "members", f"-rpc-addr={self.rpc}"],
                           capture_output=True, timeout=5)
        return r.returncode == 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            raise MembershipError(f"serf agent {self.name} was never started")
        return self.proc

    def pause(self) -> None:
        os.kill(self._started().pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self._started().pid, signal.SIGCONT)
        self.paused = False

    def kill9(self) -> None:
        self._started().kill()
        self._started().wait(10)

    def leave(self) -> None:
        """Graceful leave (peers get member-leave); the agent then exits."""
        subprocess.run([self.serf, "leave", f"-rpc-addr={self.rpc}"], capture_output=True,
                       timeout=30)
        try:
            self._started().wait(15)
        except subprocess.TimeoutExpired:
            self.stop()

    def stop(self) -> None:
        """Stop the agent by pid, whatever state it is in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.paused = False

    # -- talking to the cluster through this agent ------------------------------------------

    def members(self) -> dict[str, str]:
        """Member name -> Serf status, as this agent sees it."""
        return {m["name"]: m["status"] for m in self.member_list()}

    def member_list(self) -> list[dict]:
        """``serf members -format json`` through this agent: Serf's own member records
        (name, addr, port, tags, status, protocol)."""
        r = subprocess.run([self.serf, "members", f"-rpc-addr={self.rpc}", "-format=json"],
                           capture_output=True, timeout=10, check=True)
        return json.loads(r.stdout)["members"]

    def set_tag(self, key: str, value: str) -> None:
        """``serf tags -set key=value`` on this agent (peers get a member-update)."""
        subprocess.run([self.serf, "tags", f"-rpc-addr={self.rpc}", "-set", f"{key}={value}"],
                       capture_output=True, timeout=10, check=True)

    def event(self, name: str, payload: str = "") -> None:
        subprocess.run([self.serf, "event", f"-rpc-addr={self.rpc}", name, payload],
                       capture_output=True, timeout=10, check=True)

    def query(self, name: str, payload: str = "", timeout: str = "5s") -> dict[str, str]:
        """Responses by node name."""
        r = subprocess.run([self.serf, "query", f"-rpc-addr={self.rpc}", "-format=json",
                            f"-timeout={timeout}", name, payload],
                           capture_output=True, timeout=60, check=True)
        return json.loads(r.stdout).get("Responses") or {}

    def live(self) -> dict:
        """This agent's live file, parsed ({} if not there yet)."""
        try:
            return json.loads(self.live_file.read_bytes())
        except FileNotFoundError:
            return {}


class Cluster:
    """``n`` agents named ``node0``.. on ``127.0.0.<first_ip>``.., joined through node0."""

    def __init__(self, root: Path, n: int = 3, first_ip: int = 11, catalog: bytes | None = None,
                 install_serf: bool = False) -> None:
        serf = serf_binary(install=install_serf)
        membership = membership_command()
        self.root = Path(root)
        self.agents = [
            Agent(f"node{i}", f"127.0.0.{first_ip + i}", self.root / f"node{i}", serf, membership)
            for i in range(n)
        ]
        if catalog is not None:
            for a in self.agents:
                a.base_dir.mkdir(parents=True, exist_ok=True)
                (a.base_dir / "catalog.json").write_bytes(catalog)

    def __getitem__(self, i: int) -> Agent:
        return self.agents[i]

    def start(self) -> Cluster:
        try:
            for i, a in enumerate(self.agents):
                a.start(join=self.agents[0] if i else None)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for a in self.agents:
            a.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def catalog_for(ips: list[str], port: int = 10031, tag: str = "droonga") -> bytes:
    """A version 2 catalog with one replica per node (one slice each), Droonga-style."""
    replicas = [
        {"dimension": "_key", "slicer": "hash",
         "slices": [{"label": "slice000", "weight": 100,
                     "volume": {"address": f"{ip}:{port}/{tag}.000"}}]}
        for ip in ips
    ]
    doc = {"version": 2, "effectiveDate": "2014-02-28T00:00:00Z",
           "datasets": {"Default": {"nWorkers": 4, "plugins": ["groonga", "search", "crud"],
                                    "schema": {}, "replicas": replicas}}}
    return (json.dumps(doc, indent=2) + "\n").encode()
