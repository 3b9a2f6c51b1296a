"""Terminal, table and timeline spoofing: a member name cannot forge a row, and the
timeline is well-formed XML (never an empty file) whatever the names.

One area of issue 11's findings, end to end (tests/hardeninghelpers.py says how)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest
from conftest import cli
from hardeninghelpers import (
    NODE1,
    one_line,
    replay_json,
    serf,
)
from samples import CATALOG_V2

pytestmark = pytest.mark.e2e

# == 11. Terminal and table spoofing ============================================================
# Before: a member named with ESC and CR (as a real Serf node can be) forged a row in
# `state`, `replay` and `audit`; an ESC in a name made the SVG timeline invalid XML, and a
# lone surrogate in a catalog id crashed `timeline`, leaving an empty file.

EVIL = b"evil\x1b[2K\r127.0.0.201:10031/droonga  live  alive"
EVIL2 = b"evil2\\n127.0.0.202:10031/droonga  live  alive"  # Serf escapes a newline as \n


def test_a_member_name_cannot_forge_a_table_row(membership, base):
    (base / "catalog.json").unlink()  # members are the nodes
    joined = EVIL + b"\t127.0.0.9\t\t\n" + EVIL2 + b"\t127.0.0.10\t\t\nok\t127.0.0.11\t\t\n"
    assert serf(membership, base, "member-join", joined).returncode == 0
    assert serf(membership, base, "member-failed", EVIL + b"\t127.0.0.9\t\t\n" + EVIL2
                + b"\t127.0.0.10\t\t\n").returncode == 0
    assert serf(membership, base, "member-update", b"ok\t127.0.0.11\t\tnote=" + EVIL[4:]
                + b"\n").returncode == 0
    nodes = json.loads(cli(membership, "state", "--base-dir", base, "--json").stdout)["nodes"]
    assert len(nodes) == 3
    events = len(replay_json(membership, base))
    doc = json.loads(cli(membership, "audit", "--base-dir", base, "--json").stdout)
    incidents = sum(len(n["incidents"]) for n in doc["nodes"].values())
    expected_lines = {"state": 2 + len(nodes), "replay": 1 + events,
                      "audit": 2 + len(doc["nodes"]) + 2 + incidents + 2}
    for command, lines in expected_lines.items():
        r = cli(membership, command, "--base-dir", base)
        assert r.returncode == 0 and r.stderr == b""
        assert b"\x1b" not in r.stdout and b"\r" not in r.stdout, (command, r.stdout)
        text = r.stdout.decode()
        assert text.count("\n") == lines, (command, text)
        for line in text.splitlines():
            assert not line.startswith(("127.0.0.20", "evil2\n")), (command, line)
        assert "evil\\x1b[2K\\r127.0.0.201" in text and "evil2\\n127.0.0.202" in text


def test_the_timeline_is_well_formed_xml_and_never_an_empty_file(membership, base, tmp_path):
    cat = json.loads(json.dumps(CATALOG_V2))
    cat["datasets"]["Default"]["replicas"].append({"slices": [{"volume": {
        "address": "192.168.100.53\ud800:10031/droonga.000"}}]})  # a lone surrogate
    (base / "catalog.json").write_text(json.dumps(cat))  # ASCII: "\ud800" as a JSON escape
    assert serf(membership, base, "member-join", EVIL + b"\t127.0.0.9\t\t\n").returncode == 0
    assert serf(membership, base, "member-failed", EVIL + b"\t127.0.0.9\t\t\n").returncode == 0
    assert serf(membership, base, "member-failed", NODE1).returncode == 0
    # Invalid UTF-8 in an address: recorded, reported, the last good catalog kept.
    raw_cat = json.dumps(cat).encode().replace(b"192.168.100.50", b"192.168.100.50\xff")
    (base / "catalog.json").write_bytes(raw_cat)
    r = serf(membership, base, "member-join", NODE1)
    assert r.returncode == 0 and b"not valid JSON" in r.stderr
    for suffix in ("svg", "html"):
        out = tmp_path / f"t.{suffix}"
        r = cli(membership, "timeline", "--base-dir", base, "-o", out)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        data = out.read_bytes()
        data.decode("utf-8")
        assert b"\x1b" not in data
        if suffix == "svg":
            root = ET.fromstring(data)
            text = "".join(root.itertext())
            assert "evil\\x1b[2K\\r127.0.0.201" in text and "\\ud800" in text
    # A failure never leaves an empty (or half) file, nor clobbers an old one.
    out = tmp_path / "t.svg"
    before = out.read_bytes()
    bad = tmp_path / "garbage"
    bad.mkdir()
    (bad / "membership.db").write_bytes(os.urandom(4096))
    one_line(cli(membership, "timeline", "--base-dir", bad, "-o", out))
    assert out.read_bytes() == before
    fresh = tmp_path / "none.svg"
    one_line(cli(membership, "timeline", "--base-dir", bad, "-o", fresh))
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]
