"""Helpers for the hardening tests (tests/test_hardening_*.py): the handler run exactly as
Serf runs it (any bytes in its environment), one-line errors, and the store read back.

Those tests reproduce issue 11's findings end to end through the real handler and the real
CLI (subprocesses, real SQLite files, the real PostgreSQL server), as an operator or Serf
would meet them, one file per area; the pure-level halves are in test_hardening_pure.py.
Trials print their figures (run with -s to see them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import cli

from membership_log.core import codec
from membership_log.core import fold as project
from membership_log.stores.node import NODE, NodeStore

#: A member-join's stdin line for node1, as Serf writes it.
NODE1 = b"node1\t192.168.100.51\t\t\n"


def serf_env(observer: str | bytes = "node0", **variables) -> dict[bytes, bytes]:
    """The environment Serf gives a handler, as bytes (so any value, invalid UTF-8 included,
    reaches the process exactly): this process's own minus SERF_*, plus the variables."""
    env = {k: v for k, v in os.environb.items() if not k.startswith(b"SERF_")}

    def b(v):
        return v if isinstance(v, bytes) else str(v).encode()

    env[b"SERF_SELF_NAME"] = b(observer)
    env.update({b(k): b(v) for k, v in variables.items()})
    return env


def serf(membership: str, base, event: str | None, stdin: bytes = b"",
         observer: str | bytes = "node0", timeout: float = 60, preexec_fn=None,
         **variables) -> subprocess.CompletedProcess:
    """One ``membership handle`` run as Serf makes it."""
    if event is not None:
        variables["SERF_EVENT"] = event
    return subprocess.run([membership, "handle", "--base-dir", str(base)], input=stdin,
                          env=serf_env(observer, **variables), capture_output=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def live_query(membership: str, base, observer: str | bytes = "node0", ltime: int = 1):
    return serf(membership, base, "query", b"", observer, SERF_QUERY_NAME="membership-live",
                SERF_QUERY_LTIME=str(ltime))


def one_line(r: subprocess.CompletedProcess, code: int = 1) -> str:
    """Assert ``r`` failed with exactly one ``membership: ...`` line on stderr, nothing on
    stdout, no traceback; return the line."""
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, (r.returncode, r.stdout[-500:], err[-2000:])
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("membership: "), err
    assert r.stdout == b"", r.stdout[:500]
    return err


def verify_ok(membership: str, base) -> str:
    r = cli(membership, "verify", "--base-dir", base)
    assert r.returncode == 0 and b"FAILED" not in r.stdout, r.stdout + r.stderr
    return r.stdout.decode()


def head_state(base) -> project.State:
    """The fold's state as the store keeps it (the head snapshot), read as the handler does."""
    with NodeStore(str(Path(base) / "membership.db")) as store:
        snap = store.snapshot(NODE)
    state = codec.decode_state(snap[1], bytes(snap[2]))
    assert state is not None
    return state


def replay_json(membership: str, base) -> list[dict]:
    r = cli(membership, "replay", "--base-dir", base, "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def with_umask_0():
    os.umask(0)
