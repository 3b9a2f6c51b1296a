"""Secrets: a password in a URL is never shown, SERF_RPC_AUTH is never stored,
exported or spooled.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import cli
from hardeninghelpers import (
    NODE1,
    one_line,
    serf,
    serf_env,
)
from test_reliability import ReadOnly

pytestmark = pytest.mark.e2e

# == 9. Passwords never echoed ==================================================================
# Before: the URL, password included, went into the error line of every command.

SECRET = b"s3cretPW"
BAD_URLS = [
    "postgresql://u:s3cretPW@127.0.0.1:notaport/db",
    "foo://u:s3cretPW@h/db",
    "mysql://u:s3cretPW@h/db",
    "postgresql://u:s3cretPW@127.0.0.1:1/db",
    "postgresql://u@127.0.0.1:1/db?password=s3cretPW",
    "postgresql://nobody:s3cretPW@127.0.0.1:5432/nosuchdb",
    "postgresql://u:s3cret%50W@127.0.0.1:notaport/db",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_password_in_a_url_is_never_shown(membership, handle, base, url):
    assert handle("member-join", NODE1).returncode == 0
    commands = [["state", "--db", url], ["db", "upgrade", "--db", url], ["init", "--db", url],
                ["ship", "--base-dir", base, "--to", url],
                ["compact", "--base-dir", base, "--before", "now", "--require-shipped", url]]
    if "notaport" in url or url.startswith(("foo:", "mysql:")):
        # A URL that can never work is refused at once, not retried as an outage forever.
        commands.append(["ship", "--base-dir", base, "--follow", "--to", url])
    # A URL that can never work (malformed, an unknown kind) is a usage error: exit 2.
    code = 2 if "notaport" in url or url.startswith("foo:") else 1
    for command in commands:
        r = cli(membership, *command, timeout=30)
        one_line(r, code)
        assert SECRET not in r.stdout + r.stderr, (command, r.stderr)
    r = subprocess.run([membership, "handle", "--base-dir", str(base), "--db", url], input=NODE1,
                       env=serf_env(SERF_EVENT="member-join"), capture_output=True, timeout=60)
    assert SECRET not in r.stdout + r.stderr and r.stderr.count(b"\n") == 1, r.stderr
    for path in base.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes(), path


# == 10. Nothing secret is stored, and every store is 0600 =====================================
# Before: SERF_RPC_AUTH (the serf CLI's RPC token) was recorded, exported and shipped; a store
# made by `db upgrade --db NEWPATH` was 0644.

def test_serf_rpc_auth_is_never_stored_exported_or_spooled(membership, base, tmp_path):
    secret = {"SERF_RPC_AUTH": "topsecret", "SERF_RPC_ADDR": "127.0.0.1:7373"}
    assert serf(membership, base, "member-join", NODE1, **secret).returncode == 0
    r = serf(membership, base, "query", b"", SERF_QUERY_NAME="membership-live",
             SERF_QUERY_LTIME="1", **secret)
    assert r.returncode == 0 and b"topsecret" not in r.stdout
    with ReadOnly(base / "membership.db"):  # spooled, then taken in
        r = serf(membership, base, "member-failed", NODE1, **secret)
        assert b"spooled" in r.stderr
        for f in (base / "spool").glob("*.event"):
            assert b"topsecret" not in f.read_bytes() and b"SERF_RPC" not in f.read_bytes()
    assert serf(membership, base, "member-update", NODE1, **secret).returncode == 0
    for f in base.glob("membership.db*"):
        assert b"topsecret" not in f.read_bytes() and b"SERF_RPC_" not in f.read_bytes(), f
    export = cli(membership, "export", "--base-dir", base)
    assert export.returncode == 0 and len(export.stdout.splitlines()) == 5
    assert b"topsecret" not in export.stdout and b"SERF_RPC" not in export.stdout
