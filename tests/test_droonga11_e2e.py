"""Droonga 1.1 through the real handler, CLI and store: ``--live-format droonga-1.1``, roles
in ``state``, ``replay``, ``audit``, the timeline, ``route --role`` and the metrics; and real
Serf agents with Droonga's tags, each running ``membership handle --live-format
droonga-1.1``.

The expected files come from :func:`model_file`, written here from the SPEC text ("Droonga
1.1") and sharing no code with the package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import stat
import subprocess

import pytest
from conftest import invoke
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from membership_log.cli import app

pytestmark = pytest.mark.e2e

runner = CliRunner()

IPS = ["192.168.100.50", "192.168.100.51", "192.168.100.52"]
NODES = [f"{ip}:10031/droonga" for ip in IPS]
FORMAT = ["--live-format", "droonga-1.1"]


# -- the SPEC, written out plainly -------------------------------------------------------------


def model_cluster_id(catalog: dict) -> str:
    """SHA-1 hex of the sorted "<dataset>-<its sorted node ids joined by ,>" joined by "|"
    (v2 catalogs whose replicas hold slices of plain volumes, as the tests' do)."""
    parts = []
    for name, dataset in catalog["datasets"].items():
        ids = set()
        for replica in dataset["replicas"]:
            for sl in replica["slices"]:
                hostport, rest = sl["volume"]["address"].split("/", 1)
                ids.add(hostport + "/" + rest.split(".")[0])
        parts.append(name + "-" + ",".join(sorted(ids)))
    return hashlib.sha1("|".join(sorted(parts)).encode()).hexdigest()


def model_file(members: list[dict], cid: str) -> bytes:
    """SPEC "Droonga 1.1" over ``serf members``-like records {name, status, tags}: the
    members whose cluster_id tag is ``cid``, sorted; five values each (a missing tag null;
    live = status alive), plus have_unprocessed_messages for a member some kept member's
    buffered-for-<name> tag names (true if any says "true"); Ruby's pretty_generate (an
    empty object is "{\\n}"), then a newline."""
    kept = sorted((m for m in members if m["tags"].get("cluster_id") == cid),
                  key=lambda m: m["name"])
    out = {}
    for m in kept:
        t = m["tags"]
        out[m["name"]] = {"type": t.get("type"), "role": t.get("role"),
                          "internal_name": t.get("internal-name"),
                          "accept_messages_newer_than": t.get("accept-newer-than"),
                          "live": m["status"] == "alive"}
    for name, value in out.items():
        said = [m["tags"][f"buffered-for-{name}"] for m in kept
                if f"buffered-for-{name}" in m["tags"]]
        if said:
            value["have_unprocessed_messages"] = "true" in said
    if not out:
        return b"{\n}\n"
    return (json.dumps(out, indent=2, ensure_ascii=False) + "\n").encode()


def catalog_doc(ips=IPS) -> dict:
    return {"version": 2, "effectiveDate": "2014-02-28T00:00:00Z", "datasets": {"Default": {
        "nWorkers": 4, "plugins": ["groonga"], "schema": {}, "replicas": [
            {"dimension": "_key", "slicer": "hash", "slices": [
                {"label": "slice000", "weight": 50,
                 "volume": {"address": f"{ip}:10031/droonga.000"}}]} for ip in ips]}}}


CID = model_cluster_id(catalog_doc())


def line(name: str, address: str, tags: dict) -> bytes:
    """A member line as Serf writes it: name, address, role, tags k=v joined by ','."""
    tag_text = ",".join(f"{k}={v}" for k, v in tags.items())
    return f"{name}\t{address}\t{tags.get('role', '')}\t{tag_text}\n".encode()


def droonga_tags(i: int, cid: str = CID, **more) -> dict:
    return {"type": "engine", "role": "service-provider", "cluster_id": cid,
            "internal-name": f"{IPS[i % 3]}:2{i:04d}/droonga", **more}


@pytest.fixture
def d11(tmp_path, membership):
    """A base dir with the three-node catalog, and a handler run in droonga-1.1 format."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "catalog.json").write_text(json.dumps(catalog_doc(), indent=2))

    def handle(event, stdin=b"", extra=None, observer=NODES[0], args=()):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERF_")}
        env.update({"SERF_EVENT": event, "SERF_SELF_NAME": observer, **(extra or {})})
        r = subprocess.run([membership, "handle", "--base-dir", str(base), *FORMAT, *args],
                           input=stdin, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r

    handle.base = base
    handle.file = base / "state" / "cluster-state.json"
    return handle


# -- the format through the handler ------------------------------------------------------------


def test_default_path_directory_and_bytes(d11):
    base = d11.base
    r = invoke("init", "--base-dir", str(base), *FORMAT)
    assert "not written yet: no Serf member heard of yet" in r.output
    assert not (base / "state").exists()  # nothing to write: no file, no directory
    members = [line(NODES[i], IPS[i], droonga_tags(i)) for i in range(3)]
    old = os.umask(0o077)  # the directory is 0755 whatever the umask
    try:
        d11("member-join", b"".join(members))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(base / "state").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(d11.file).st_mode) == 0o644
    assert not (base / "live-nodes.json").exists()
    view = [{"name": NODES[i], "status": "alive", "tags": droonga_tags(i)} for i in range(3)]
    assert d11.file.read_bytes() == model_file(view, CID)
    assert json.loads(d11.file.read_bytes())[NODES[1]] == {
        "type": "engine", "role": "service-provider", "internal_name": f"{IPS[1]}:20001/droonga",
        "accept_messages_newer_than": None, "live": True}
    # A member-failed is "live": false at once (Droonga's own handler waits for the next
    # other member event).
    d11("member-failed", members[2])
    view[2]["status"] = "failed"
    assert d11.file.read_bytes() == model_file(view, CID)
    assert json.loads(d11.file.read_bytes())[NODES[2]]["live"] is False
    r = invoke("state", "--base-dir", str(base), *FORMAT, "--as-live-file")
    assert r.stdout_bytes == d11.file.read_bytes()
    assert "agrees with the log" in invoke("verify", "--base-dir", str(base), *FORMAT).output
    # The droonga format's path is untouched by the 1.1 one, and --live-file still wins.
    other = base / "elsewhere.json"
    d11("member-update", members[1], args=("--live-file", str(other)))
    assert other.read_bytes() == d11.file.read_bytes()


def test_an_unchanged_file_is_not_rewritten(d11):
    d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)))
    first = os.stat(d11.file)
    d11("user", b"deploy", {"SERF_USER_EVENT": "deploy", "SERF_USER_LTIME": "1"})
    d11("member-update", line(NODES[0], IPS[0], droonga_tags(0)))
    again = os.stat(d11.file)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_no_catalog_or_one_droonga_cannot_load_leaves_the_file_as_it_was(d11):
    base = d11.base
    d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)))
    good = d11.file.read_bytes()
    doc = catalog_doc()
    doc["version"] = 3  # the fold reads it (as version 2, with a warning); Droonga raises
    (base / "catalog.json").write_text(json.dumps(doc))
    d11("member-failed", line(NODES[0], IPS[0], droonga_tags(0)))
    assert d11.file.read_bytes() == good  # left as it was
    r = invoke("state", "--base-dir", str(base), *FORMAT, "--as-live-file", code=1)
    assert "no live file to print" in r.output and "no Droonga cluster id" in r.output
    r = invoke("verify", "--base-dir", str(base), *FORMAT)
    assert "left as it was, not checked" in r.output
    (base / "catalog.json").write_text(json.dumps(catalog_doc()))  # a good one again
    d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)))
    assert d11.file.read_bytes() == good
    # No catalog at all: no file.
    bare = base.parent / "bare"
    bare.mkdir()
    d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)), args=("--base-dir", str(bare)))
    assert not (bare / "state").exists()
    r = invoke("state", "--base-dir", str(bare), *FORMAT, "--as-live-file", code=1)
    assert "no catalog recorded" in r.output


def test_a_state_link_of_another_user_is_not_followed_ones_own_is(d11, tmp_path):
    """The handler often runs as root in a base dir others may write to: a ``state`` link
    that neither it nor root owns is refused (the event is still recorded); its own link,
    and a plain file in the way, are handled as such."""
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(target, d11.base / "state")
    other = 65534 if os.geteuid() == 0 else None
    if other is not None:
        os.lchown(d11.base / "state", other, other)
        r = d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)))
        assert b"symbolic link owned by uid 65534" in r.stderr
        assert list(target.iterdir()) == []
        assert "after event 2" in invoke("state", "--base-dir", str(d11.base)).output
        os.lchown(d11.base / "state", os.geteuid(), os.getegid())
    d11("member-join", line(NODES[0], IPS[0], droonga_tags(0)))
    assert (target / "cluster-state.json").read_bytes() == d11.file.read_bytes()
    os.unlink(d11.base / "state")
    (d11.base / "state").write_bytes(b"")
    r = d11("member-failed", line(NODES[0], IPS[0], droonga_tags(0)))
    assert b"is a regular file, not a directory" in r.stderr


def test_foreign_and_buffered_members(d11):
    """A member of another cluster is skipped, its buffered-for tag too; a kept member's
    buffered-for tag marks its target."""
    tags = [droonga_tags(0), droonga_tags(1, **{f"buffered-for-{NODES[0]}": "true"}),
            droonga_tags(2, cid="f" * 40, **{f"buffered-for-{NODES[1]}": "true"})]
    d11("member-join", b"".join(line(NODES[i], IPS[i], tags[i]) for i in range(3)))
    doc = json.loads(d11.file.read_bytes())
    assert list(doc) == NODES[:2]
    assert doc[NODES[0]]["have_unprocessed_messages"] is True
    assert "have_unprocessed_messages" not in doc[NODES[1]]
    view = [{"name": NODES[i], "status": "alive", "tags": tags[i]} for i in range(3)]
    assert d11.file.read_bytes() == model_file(view, CID)


# -- every event of random logs: the file, state --at @N, and the model agree -------------------


ROLES = ["service-provider", "absorb-source", "absorb-destination"]
NAMES = NODES + ["10.9.9.9:10031/droonga"]


def random_member(rng) -> tuple[str, str, dict]:
    i = rng.randrange(len(NAMES))
    name = NAMES[i]
    address = IPS[i] if i < 3 else "10.9.9.9"
    tags = {"type": "engine", "role": rng.choice(ROLES + [None]),
            "cluster_id": rng.choice([CID, CID, CID, "e" * 40, None]),
            "internal-name": rng.choice([None, f"{address}:20000/droonga"]),
            "accept-newer-than": rng.choice([None, None, "2015-04-09T06:04:18.123456Z"])}
    for other in rng.sample(NAMES, rng.randint(0, 2)):
        tags[f"buffered-for-{other}"] = rng.choice(["true", "false"])
    return name, address, {k: v for k, v in tags.items() if v is not None}


STATUS = {"member-join": "alive", "member-failed": "failed", "member-leave": "left",
          "member-reap": None}


@pytest.mark.parametrize("seed", [11, 12])
def test_every_event_of_a_random_log(d11, seed):
    """After every event: the file the handler wrote equals ``state --at @N --as-live-file``
    and the model's file over the members as the test itself tracks them (a reaped one is
    gone, as from ``serf members``; one only updated counts as alive); while no file is due
    (no member yet), there is none."""
    rng = random.Random(seed)
    members: dict[str, dict] = {}
    written = {}
    for n in range(28):
        kind = rng.choice(list(STATUS) + ["member-update", "member-update", "user"])
        if kind == "user":
            d11("user", b"deploy", {"SERF_USER_EVENT": "deploy", "SERF_USER_LTIME": str(n)})
        else:
            batch = [random_member(rng) for _ in range(rng.randint(1, 3))]
            d11(kind, b"".join(line(*m) for m in batch))
            for name, _, tags in batch:
                old = members.get(name)
                if kind == "member-update":
                    status = old["status"] if old else "alive"
                else:
                    status = STATUS[kind]
                members[name] = {"name": name, "status": status, "tags": tags}
        seq = n + 2  # the catalog is event 1
        listed = [m for m in members.values() if m["status"] is not None]
        expected = model_file(listed, CID) if members else None
        on_disk = d11.file.read_bytes() if d11.file.exists() else None
        assert on_disk == expected, f"after event {seq}"
        written[seq] = on_disk
    assert any(data is not None and data.count(b'"live"') >= 2 for data in written.values())
    for seq, data in written.items():
        r = runner.invoke(app, ["state", "--base-dir", str(d11.base), *FORMAT, "--at",
                                f"@{seq}", "--as-live-file"])
        if data is None:
            assert r.exit_code == 1 and "no Serf member heard of yet" in r.output
        else:
            assert r.exit_code == 0 and r.stdout_bytes == data, f"@{seq}"


# -- the same, on the fold driven directly (hypothesis) ------------------------------------------


member_st = st.tuples(st.sampled_from(NAMES), st.sampled_from(IPS + ["10.9.9.9"]),
                      st.dictionaries(
                          st.sampled_from(["type", "role", "internal-name", "cluster_id",
                                           "accept-newer-than", "misc"]
                                          + [f"buffered-for-{n}" for n in NAMES]),
                          st.sampled_from(["true", "false", CID, "x", "absorb-source", ""]),
                          max_size=6))
event_st = st.tuples(st.sampled_from(sorted(STATUS) + ["member-update"]),
                     st.lists(member_st, min_size=1, max_size=3))


@settings(max_examples=150, deadline=None)
@given(st.lists(event_st, max_size=25), st.sampled_from([CID, "x" * 40]))
def test_the_fold_gives_the_models_file_after_every_event(events, tag_cid):
    from samples import Log

    from membership_log.core import events as ev
    from membership_log.core import fold as project
    from membership_log.core.catalog import parse
    from membership_log.render.livefile import droonga11_file

    cat, _ = parse(json.dumps(catalog_doc()).encode())
    log = Log()
    state = project.State()
    state.apply(log.catalog(cat))
    for kind, ms in events:
        members = tuple(ev.Member(n, a, t.get("role", ""),
                                  {k: (tag_cid if v == CID else v) for k, v in t.items()})
                        for n, a, t in ms)
        state.apply(log.member(kind)._replace(members=members))
        view = [{"name": n, "status": "alive" if m.status is None else m.status,
                 "tags": m.tags} for n, m in state.members.items() if m.status != "reaped"]
        data, why = droonga11_file(state)
        assert data == model_file(view, CID) and why is None


# -- roles in state and replay -------------------------------------------------------------------


def _cluster_with_a_role_change(d11):
    """Three engines join; node 1 becomes an absorb-destination (serf tags -set) and back;
    node 2 buffers for node 1; Droonga's own commands arrive as a user event and a query."""
    tags = [droonga_tags(i) for i in range(3)]
    d11("member-join", b"".join(line(NODES[i], IPS[i], tags[i]) for i in range(3)))  # 2
    d11("member-update", line(NODES[1], IPS[1], dict(tags[1], role="absorb-destination")))
    d11("member-update", line(NODES[2], IPS[2], dict(
        tags[2], **{f"buffered-for-{NODES[1]}": "true"})))  # 4
    d11("user", json.dumps({"node": NODES[1], "role": "Service-Provider"}).encode(),
        {"SERF_USER_EVENT": "change_role", "SERF_USER_LTIME": "7"})  # 5
    d11("query", json.dumps({"cluster_id": "other", "node": NODES[0],
                             "timestamp": "2015-04-09T06:04:18Z"}).encode(),
        {"SERF_QUERY_NAME": "accept_messages_newer_than", "SERF_QUERY_LTIME": "8"})  # 6
    d11("query", json.dumps({"cluster_id": CID, "node": NODES[0],
                             "timestamp": "2015-04-09T06:04:18Z"}).encode(),
        {"SERF_QUERY_NAME": "accept_messages_newer_than", "SERF_QUERY_LTIME": "9"})  # 7
    d11("member-update", line(NODES[1], IPS[1], tags[1]))  # 8: back to service-provider
    return tags


def test_state_shows_each_nodes_role_and_droonga_tags(d11):
    tags = _cluster_with_a_role_change(d11)
    base = str(d11.base)
    doc = json.loads(invoke("state", "--base-dir", base, "--json", "--at", "@4").output)
    n1 = doc["nodes"][NODES[1]]
    assert n1["role"] == "absorb-destination" and n1["live"]
    assert n1["tags"] == {"type": "engine", "role": "absorb-destination", "cluster_id": CID,
                          "internal-name": tags[1]["internal-name"]}
    assert list(doc["nodes"][NODES[2]]["tags"])[-1] == f"buffered-for-{NODES[1]}"
    text = invoke("state", "--base-dir", base, "--at", "@4").output
    header = text.splitlines()[1].split()
    assert header[:5] == ["NODE", "LIVE", "SERF", "ROLE", "MARK"]
    rows = {r.split()[0]: r for r in text.splitlines()[2:]}
    assert rows[NODES[1]].split()[3] == "absorb-destination"
    assert f"buffering for {NODES[1]}" in rows[NODES[2]]
    now = json.loads(invoke("state", "--base-dir", base, "--json").output)
    assert now["nodes"][NODES[1]]["role"] == "service-provider"


def test_replay_lists_role_changes_and_droongas_commands(d11):
    _cluster_with_a_role_change(d11)
    base = str(d11.base)
    lines = [json.loads(x) for x in invoke("replay", "--base-dir", base, "--json")
             .output.splitlines()]
    by_seq = {x["seq"]: x for x in lines}
    assert by_seq[2]["roles"] == []  # first heard of: no change
    assert by_seq[3]["roles"] == [{"member": NODES[1], "from": "service-provider",
                                   "to": "absorb-destination"}]
    assert by_seq[3]["changes"] == []  # no liveness change
    assert by_seq[8]["roles"] == [{"member": NODES[1], "from": "absorb-destination",
                                   "to": "service-provider"}]
    assert by_seq[4]["roles"] == [] and by_seq[4]["droonga"] is None
    role = by_seq[5]["droonga"]
    assert role["command"] == "change_role" and role["target"] == NODES[1]
    assert role["payload"] == {"node": NODES[1], "role": "Service-Provider"}
    assert role["fields"] == {"role": "service-provider"} and role["for_cluster"]
    assert role["for_node"] is False and not role["acted_on"]  # the observer is node 0
    foreign, own = by_seq[6]["droonga"], by_seq[7]["droonga"]
    assert foreign["cluster_id"] == "other" and not foreign["for_cluster"]
    assert not foreign["acted_on"]
    assert own["for_cluster"] and own["for_node"] and own["acted_on"]
    assert own["fields"] == {"timestamp": "2015-04-09T06:04:18Z"} and own["target"] == NODES[0]
    # Recorded raw like every event: the export holds the payload byte for byte.
    exported = [json.loads(x) for x in invoke("export", "--base-dir", base).output.splitlines()]
    assert exported[4]["env"]["SERF_USER_EVENT"] == "change_role"
    assert base64.b64decode(exported[4]["stdin_b64"]) == json.dumps(
        {"node": NODES[1], "role": "Service-Provider"}).encode()
    text = invoke("replay", "--base-dir", base).output
    rows = {r.split()[0]: r for r in text.splitlines()[1:]}
    assert f"{NODES[1]} role service-provider -> absorb-destination" in rows["3"]
    assert f"change_role -> {NODES[1]} (role service-provider) [for another node]" in rows["5"]
    assert "[another cluster]" in rows["6"] and "[acted on]" in rows["7"]
    # --node finds the commands that name it, and the role changes.
    picked = invoke("replay", "--base-dir", base, "--json", "--node", NODES[1]).output
    seqs = {json.loads(x)["seq"] for x in picked.splitlines()}
    assert {2, 3, 5, 8} <= seqs and not seqs & {6, 7}


# -- roles over time: audit and the timeline -------------------------------------------------------

T0 = 1_790_000_000_000_000  # 2026-09-21, UTC microseconds


def export_line(at_us: int, event: str, stdin: bytes, observer=NODES[0], **env) -> dict:
    from membership_log.core.timespec import iso

    return {"seq": 0, "received": iso(at_us), "observer": observer, "source": "serf",
            "env": {"SERF_EVENT": event, "SERF_SELF_NAME": observer, **env},
            "stdin_b64": base64.b64encode(stdin).decode(), "hash": ""}


def long_droonga_log(seed: int, n: int, p_role: float = 0.004) -> list[dict]:
    """``n`` events a second apart: three engines join, then failures, rejoins and role
    changes (rare, as absorbs are) among heartbeats of user events."""
    from membership_log.core.timespec import iso

    rng = random.Random(seed)
    role = ["service-provider"] * 3
    out = [{"seq": 0, "received": iso(T0), "observer": NODES[0], "source": "catalog",
            "env": {}, "stdin_b64": base64.b64encode(json.dumps(catalog_doc()).encode())
            .decode(), "hash": ""},
           export_line(T0 + 1_000_000, "member-join",
                       b"".join(line(NODES[i], IPS[i], droonga_tags(i)) for i in range(3)))]
    for k in range(2, n):
        at = T0 + k * 1_000_000
        roll = rng.random()
        i = rng.randrange(3)
        if roll < p_role:
            role[i] = rng.choice(ROLES)
            out.append(export_line(at, "member-update", line(
                NODES[i], IPS[i], droonga_tags(i, role=role[i]))))
        elif roll < p_role + 0.2:
            kind = rng.choice(["member-failed", "member-join"])
            out.append(export_line(at, kind, line(NODES[i], IPS[i],
                                                  droonga_tags(i, role=role[i]))))
        else:
            out.append(export_line(at, "user", b"tick", SERF_USER_EVENT="tick",
                                   SERF_USER_LTIME=str(k)))
    return out


def expected_stretches(replayed: list[dict], start: dict, since: int, until: int) -> dict:
    """Role stretches written out from replay's role changes (Droonga 1.1 names members by
    node id, so a member's role is its node's)."""
    from membership_log.core.timespec import parse

    current = dict(start)
    began = dict.fromkeys(start, since)
    out = {n: [] for n in start}
    heard = set()
    for x in replayed:
        at = parse(x["at"], 0).us
        # A member first heard of gives its node a role; replay lists the changes after.
        firsts = [(m["name"], m["tags"].get("role")) for m in x["members"]
                  if m["name"] not in heard]
        heard.update(m["name"] for m in x["members"])
        if not since < at <= until:
            continue
        for node, role in firsts + [(c["member"], c["to"]) for c in x["roles"]]:
            if role == current[node]:
                continue
            if at > began[node]:
                out[node].append((began[node], at, current[node]))
            current[node], began[node] = role, at
    for node in out:
        out[node].append((began[node], until, current[node]))
    return out


def test_audit_role_stretches_equal_replays_role_changes_for_any_window(tmp_path):
    """A log of 1,500 events (checkpoints every 250) with a few role changes, loaded with
    import: for windows anywhere in it, audit's role stretches (found through the fold's role
    epoch at checkpoints) equal those written out from replay's role changes."""
    from membership_log.core.timespec import iso, parse

    base = tmp_path / "base"
    log = long_droonga_log(5, 1500)
    source = tmp_path / "log.jsonl"
    source.write_text("".join(json.dumps(x) + "\n" for x in log))
    invoke("import", "--base-dir", str(base), str(source))
    replayed = [json.loads(x) for x in invoke("replay", "--base-dir", str(base), "--json")
                .output.splitlines()]
    assert sum(len(x["roles"]) for x in replayed) >= 3
    rng = random.Random(6)
    windows = [(None, None), (T0 + 300_000_000, T0 + 900_000_000)]
    windows += [tuple(sorted(rng.sample(range(T0 + 2_000_000, T0 + 1_499_000_000,
                                              250_000), 2))) for _ in range(6)]
    for lo, hi in windows:
        args = ["audit", "--base-dir", str(base), "--json"]
        if lo is not None:
            args += ["--since", iso(lo), "--until", iso(hi)]
        else:
            args += ["--until", iso(T0 + 1_499_000_000)]
        doc = json.loads(invoke(*args).output)
        since, until = parse(doc["since"], 0).us, parse(doc["until"], 0).us
        at = json.loads(invoke("state", "--base-dir", str(base), "--json", "--at",
                               doc["since"]).output)
        start = {n: v["role"] for n, v in at["nodes"].items()}
        want = expected_stretches(replayed, start, since, until)
        got = {n: [(parse(r["from"], 0).us, parse(r["to"], 0).us, r["role"])
                   for r in v["roles"]] for n, v in doc["nodes"].items()}
        assert got == want, (lo, hi)


def test_timeline_shades_absorb_stretches(d11, tmp_path):
    _cluster_with_a_role_change(d11)
    out = tmp_path / "t.svg"
    invoke("timeline", "--base-dir", str(d11.base), "-o", str(out))
    svg = out.read_text()
    import xml.etree.ElementTree as ET

    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)
    rows = {g.get("data-node"): g for g in root.iterfind(".//s:g[@class='node-row']", ns)}
    shaded = rows[NODES[1]].findall("s:rect[@class='role']", ns)
    assert [r.get("data-role") for r in shaded] == ["absorb-destination"]
    assert "absorb-destination from" in shaded[0].find("s:title", ns).text
    assert not rows[NODES[0]].findall("s:rect[@class='role']", ns)
    assert "absorb-destination</text>" in svg  # the legend
    audit = json.loads(invoke("audit", "--base-dir", str(d11.base), "--json").output)
    assert [r["role"] for r in audit["nodes"][NODES[1]]["roles"]] == [
        "service-provider", "absorb-destination", "service-provider"]
    text = invoke("audit", "--base-dir", str(d11.base)).output
    assert "ROLE" in text and "absorb-destination" in text


# -- the metrics and the dashboard --------------------------------------------------------------


def test_metrics_expose_each_nodes_role(d11, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    tags = [droonga_tags(i) for i in range(2)]
    d11("member-join", b"".join(line(NODES[i], IPS[i], tags[i]) for i in range(2))
        + line("stranger", "10.9.9.9", {}))
    d11("member-update", line(NODES[1], IPS[1], dict(tags[1], role="Absorb-Destination")))

    def roles() -> dict:
        text = invoke("metrics", "--base-dir", str(d11.base)).output
        family = next(f for f in text_string_to_metric_families(text)
                      if f.name == "membership_node_role")
        return {(s.labels["node"], s.labels["role"]): s.value for s in family.samples}

    got = roles()
    # Droonga reads the tag case-insensitively; a node without a member (192.168.100.52)
    # or a member without a role tag has no series.
    assert got == {(NODES[0], "service-provider"): 1.0, (NODES[0], "absorb-source"): 0.0,
                   (NODES[0], "absorb-destination"): 0.0,
                   (NODES[1], "service-provider"): 0.0, (NODES[1], "absorb-source"): 0.0,
                   (NODES[1], "absorb-destination"): 1.0}
    d11("member-update", line(NODES[1], IPS[1], tags[1]))
    assert roles()[(NODES[1], "service-provider")] == 1.0


ROLE_ROWS = """Array.from(document.querySelectorAll('#nodes tbody tr')).map(tr => ({
  node: tr.dataset.node, role: tr.querySelector('td.role') ? tr.querySelector('td.role')
  .textContent : null, badge: tr.querySelector('td.role .badge') ? tr.querySelector(
  'td.role .badge').className : null}))"""


def test_dashboard_shows_roles_as_text(d11, membership, tmp_path):
    from opshelpers import Chromium, Serve, chromium_binary, wait_for

    hostile = '<img src=x onerror="window.__pwned=1">'
    tags = [droonga_tags(0), droonga_tags(1), droonga_tags(2, role=hostile)]
    d11("member-join", b"".join(line(NODES[i], IPS[i], tags[i]) for i in range(3))
        + line("constructor", "10.9.9.9", {"role": "__proto__"}))
    with Serve(membership, ["--base-dir", str(d11.base)], tmp_path) as serve, \
            Chromium(chromium_binary(), tmp_path / "profile") as browser:
        browser.goto(serve.url + "/")

        def rows() -> dict:
            return {r["node"]: r for r in browser.eval(ROLE_ROWS) if r["node"]}

        shown = wait_for("the nodes", lambda: len(r := rows()) == 4 and r)
        assert shown[NODES[0]]["role"] == "service-provider" and shown[NODES[0]]["badge"] is None
        assert shown[NODES[2]]["role"] == hostile  # text, not markup
        assert shown["constructor"]["role"] == "__proto__"
        d11("member-update", line(NODES[1], IPS[1], dict(tags[1], role="absorb-destination")))
        wait_for("the new role", lambda: rows()[NODES[1]]["role"] == "absorb-destination",
                 timeout=10)
        assert rows()[NODES[1]]["badge"] == "badge absorb-destination"
        assert browser.eval("typeof window.__pwned") == "undefined"
        assert browser.eval("document.querySelectorAll('#nodes img').length") == 0
        assert serve.stop() == 0


# -- route --role ----------------------------------------------------------------------------------


def model_rules(value: dict | None, sender: str) -> tuple[bool, bool, bool]:
    """SPEC / issue: forwardable = live and of the sender's role; readable = forwardable
    and, for a service provider, no unprocessed messages; writable = every node for a
    service-provider sender, those of its role for an absorb-* one. Missing: not live; no
    role: a service provider."""
    live = value is not None and value.get("live") is True
    role = (value or {}).get("role") or "service-provider"
    forward = live and role == sender
    read = forward and not (role == "service-provider"
                            and (value or {}).get("have_unprocessed_messages"))
    write = sender == "service-provider" or role == sender
    return forward, read, write


def test_route_by_role_follows_droonga_11s_rules(d11, tmp_path):
    _cluster_with_a_role_change(d11)
    base = str(d11.base)
    d11("member-failed", line(NODES[0], IPS[0], droonga_tags(0)))  # 9
    at4 = tmp_path / "at4.json"
    at4.write_bytes(invoke("state", "--base-dir", base, *FORMAT, "--at", "@4",
                           "--as-live-file").stdout_bytes)
    for path in (at4, d11.file):
        values = json.loads(path.read_bytes())
        for sender in ROLES:
            r = runner.invoke(app, ["route", "--base-dir", base, "--live-file", str(path),
                                    "--role", sender, "--json"])
            doc = json.loads(r.stdout)
            assert doc["role"] == sender
            routed = doc["datasets"]["Default"]
            rules = {n: model_rules(values.get(n), sender) for n in NODES}
            for n in NODES:
                got = routed["nodes"][n]
                assert (got["forwardable"], got["readable"], got["writable"]) == rules[n]
            assert routed["usable_replicas"] == [i for i in range(3) if rules[NODES[i]][1]]
            assert routed["writable_replicas"] == [i for i in range(3) if rules[NODES[i]][2]]
            assert r.exit_code == (0 if routed["usable_replicas"]
                                   and routed["writable_replicas"] else 1)
    # At @4 node 1 is being filled (absorb-destination) and has messages waiting for it:
    doc = json.loads(invoke("route", "--base-dir", base, "--live-file", str(at4), "--role",
                            "service-provider", "--json").stdout)["datasets"]["Default"]
    assert doc["usable_replicas"] == [0, 2] and doc["writable_replicas"] == [0, 1, 2]
    assert doc["nodes"][NODES[1]]["delivers_now"] is False  # buffered, not sent
    text = invoke("route", "--base-dir", base, "--live-file", str(at4), "--role",
                  "absorb-destination").output
    assert "sender role absorb-destination" in text
    assert "1 of 3 replica(s) readable, 1 writable" in text
    # The default path of the format, the plain route and a 1.0 file (no roles: every
    # live node a service provider) read the same way.
    plain = json.loads(invoke("route", "--base-dir", base, *FORMAT, "--json").stdout)
    assert plain["datasets"]["Default"]["usable_replicas"] == [1, 2]  # node 0 failed
    legacy = tmp_path / "live-nodes.json"
    legacy.write_text(json.dumps({NODES[1]: {"serfAddress": IPS[1]}}))
    doc = json.loads(invoke("route", "--base-dir", base, "--live-file", str(legacy), "--role",
                            "service-provider", "--json").stdout)
    assert doc["datasets"]["Default"]["usable_replicas"] == [1]
    assert doc["datasets"]["Default"]["writable_replicas"] == [0, 1, 2]
    assert invoke("route", "--base-dir", base, "--role", "boss", code=2).exit_code == 2


def test_engine_reads_the_droonga_11_file():
    from membership_log import engine

    data = model_file([{"name": NODES[0], "status": "alive", "tags": droonga_tags(0)},
                       {"name": NODES[1], "status": "failed", "tags": droonga_tags(1)}], CID)
    assert engine.parse_live(data) == {NODES[0]}
    assert engine.parse_state(data)[NODES[1]]["role"] == "service-provider"
    assert engine.parse_live(b"{\n}\n") == frozenset()
    assert engine.parse_state(b"{\n}\n") == {}
    assert engine.parse_state(b"[1]") is None


# -- real Serf: agents with Droonga's tags, each running the droonga-1.1 handler -----------------

SERF_FIRST_IP = 121  # 127.0.0.121-124: used by no other test
SETTLE = 25  # seconds any one change may take to reach every live agent's file


@pytest.mark.serf
@pytest.mark.timeout(150)
def test_real_serf_agents_write_the_file_droonga_11_reads(serf, membership, tmp_path):
    """Three engines named host:port/tag with Droonga's tags, each with ``membership handle
    --live-format droonga-1.1`` as its handler, and a fourth agent of another cluster
    (no handler). After each change, every running handler's file equals, byte for byte,
    the file the SPEC's rules give over that agent's own ``serf members -format json``."""
    from serfhelpers import TIMEOUT

    from membership_log.demo.localcluster import Agent, catalog_for, wait_until

    ips = [f"127.0.0.{SERF_FIRST_IP + i}" for i in range(4)]
    catalog = catalog_for(ips[:3])
    cid = model_cluster_id(json.loads(catalog))
    agents = []
    for i, ip in enumerate(ips):
        tags = {"type": "engine", "role": "service-provider",
                "cluster_id": cid if i < 3 else "f" * 40,
                "internal-name": f"{ip}:{20000 + i}/droonga"}
        agent = Agent(f"{ip}:10031/droonga", ip, tmp_path / f"a{i}", serf,
                      membership if i < 3 else None, tags=tags, live_format="droonga-1.1")
        if i < 3:
            agent.base_dir.mkdir(parents=True)
            (agent.base_dir / "catalog.json").write_bytes(catalog)
        agents.append(agent)
    engines, foreign = agents[:3], agents[3]
    names = [a.name for a in agents]

    def expected(agent) -> bytes:
        return model_file([{"name": m["name"], "status": m["status"], "tags": m["tags"]}
                           for m in agent.member_list()], cid)

    def on_disk(agent) -> bytes | None:
        try:
            return agent.live_file.read_bytes()
        except FileNotFoundError:
            return None

    def agrees(agent) -> bool:
        return on_disk(agent) == expected(agent)

    def settled(predicate, watching=engines) -> dict:
        """Every watched agent's file holds the change and equals the model's file over its
        own member list; the state all of them agree on."""
        for a in watching:
            assert wait_until(lambda a=a: (d := on_disk(a)) is not None
                              and predicate(json.loads(d)) and agrees(a), SETTLE), (
                a.name, on_disk(a), expected(a))
            assert on_disk(a) == expected(a)  # byte for byte
        return json.loads(on_disk(watching[0]))

    try:
        for i, a in enumerate(agents):
            a.start(join=agents[0] if i else None)
        # Joined: the three engines, the foreign agent skipped (listed by Serf all the same).
        state = settled(lambda s: len(s) == 3 and all(v["live"] for v in s.values()))
        assert list(state) == sorted(names[:3])
        assert state[names[1]]["internal_name"] == f"{ips[1]}:20001/droonga"
        assert wait_until(lambda: engines[0].members().get(names[3]) == "alive", TIMEOUT)
        assert not foreign.live_file.exists()

        # member-failed: "live": false at once (Droonga's own handler waits for the next
        # other member event).
        engines[2].pause()
        state = settled(lambda s: s[names[2]]["live"] is False, engines[:2])
        assert engines[0].members()[names[2]] == "failed"
        engines[2].resume()
        settled(lambda s: s[names[2]]["live"] is True)

        # A role change on one agent, and back.
        engines[1].set_tag("role", "absorb-destination")
        state = settled(lambda s: s[names[1]]["role"] == "absorb-destination")
        engines[1].set_tag("role", "service-provider")
        settled(lambda s: s[names[1]]["role"] == "service-provider")

        # A buffered-for tag on another: its target has unprocessed messages; the foreign
        # agent's counts for nothing.
        engines[2].set_tag(f"buffered-for-{names[1]}", "true")
        foreign.set_tag(f"buffered-for-{names[0]}", "true")
        state = settled(lambda s: s[names[1]].get("have_unprocessed_messages") is True)
        assert "have_unprocessed_messages" not in state[names[0]]
        assert wait_until(lambda: f"buffered-for-{names[0]}" in next(
            m for m in engines[0].member_list() if m["name"] == names[3])["tags"], TIMEOUT)
        settled(lambda s: "have_unprocessed_messages" not in s[names[0]])

        # The log has it all: state --at any event gives the file written after it.
        base = str(engines[0].base_dir)
        replayed = [json.loads(x) for x in invoke("replay", "--base-dir", base, "--json")
                    .output.splitlines()]
        assert [c["to"] for x in replayed for c in x["roles"]
                if c["member"] == names[1]] == ["absorb-destination", "service-provider"]
        assert [(x["event"], c["to"]) for x in replayed for c in x["changes"]
                if c["node"] == names[2] and c["from"] is not None] == [
            ("member-failed", "dead"), ("member-join", "live")]
        last = replayed[-1]["seq"]
        r = invoke("state", "--base-dir", base, *FORMAT, "--at", f"@{last}", "--as-live-file")
        assert r.stdout_bytes == on_disk(engines[0])
        assert "agrees with the log" in invoke("verify", "--base-dir", base, *FORMAT).output
    finally:
        for a in agents:
            a.stop()
    assert not any(a.running() for a in agents), "every agent the test started is stopped"
