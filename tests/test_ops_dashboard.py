"""The dashboard in a real browser: headless Chromium (Debian's package, driven through the
DevTools protocol on a pipe) loads ``membership serve``'s page, shows the nodes, and shows a
failure the real handler records within 2 s, without a reload; hostile node names stay text;
the time control shows the state at a chosen moment.

``python tests/test_ops_dashboard.py docs/dashboard.png`` makes the README's screenshot from
a demo log (an hour of history imported with backdated times, then live handler events).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opshelpers import Chromium, Serve, chromium_binary, wait_for
from samples import CATALOG_V2, NODES

pytestmark = pytest.mark.e2e

N0, N1, N2 = NODES
JOIN = b"node1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n"
NODE1 = b"node1\t192.168.100.51\t\t\n"
HOSTILE_LINE = b"evil\x1b[31m<script>window.__pwned=1</script>\\nline\t10.9.9.9\t\t\n"
HOSTILE = "evil\x1b[31m<script>window.__pwned=1</script>\nline"
SHOWN = "evil\\x1b[31m<script>window.__pwned=1</script>\\nline"  # as the page must show it

ROWS = """Array.from(document.querySelectorAll('#nodes tbody tr')).map(tr => ({
  node: tr.dataset.node, dead: tr.classList.contains('dead'),
  name: tr.cells[0] && tr.cells[0].firstChild ? tr.cells[0].firstChild.textContent : null,
  status: tr.cells[1] ? tr.cells[1].textContent : null}))"""


def rows(browser: Chromium) -> dict[str, dict]:
    return {r["node"]: r for r in browser.eval(ROWS) if r["node"] is not None}


def test_dashboard_shows_a_change_within_2s_without_a_reload(membership, handle, base,
                                                            tmp_path):
    binary = chromium_binary()
    handle("member-join", JOIN)
    handle("member-join", HOSTILE_LINE)
    with Serve(membership, ["--base-dir", str(base)], tmp_path) as serve, \
            Chromium(binary, tmp_path / "profile") as browser:
        browser.goto(serve.url + "/")
        shown = wait_for("the nodes", lambda: len(r := rows(browser)) == 4 and r, timeout=30)
        assert set(shown) == {N0, N1, N2, HOSTILE}
        assert not shown[N1]["dead"] and shown[N1]["status"] == "live"
        wait_for("the timeline picture",
                 lambda: browser.eval("document.getElementById('timeline').naturalWidth > 0"))
        browser.eval("window.__marker = 42")

        handle("member-failed", NODE1)
        t0 = time.monotonic()
        wait_for("node1 dead on the page", lambda: rows(browser)[N1]["dead"], timeout=10,
                 interval=0.02)
        took = time.monotonic() - t0
        assert took < 2.0, f"the page showed the failure after {took:.2f} s"
        assert browser.eval("window.__marker") == 42  # the same page: no reload
        assert browser.eval("performance.getEntriesByType('navigation').length") == 1
        assert rows(browser)[N1]["status"] == "dead"
        wait_for("the incident listed", lambda: browser.eval(
            "document.querySelector('#incidents tbody').textContent").count("still down") == 1)
        print(f"handler -> dashboard: {took:.2f} s")

        # Hostile names are text, shown escaped as the CLI shows them; nothing ran.
        assert rows(browser)[HOSTILE]["name"] == SHOWN
        assert browser.eval("document.scripts.length") == 1
        assert browser.eval("typeof window.__pwned") == "undefined"
        assert browser.eval("document.querySelectorAll('#nodes script, #nodes img').length") == 0

        # The time control: the moment just before the failure shows node1 live again.
        doc = serve.json(f"/api/audit?node={N1.replace('/', '%2F')}")
        down_ms = doc["nodes"][N1]["incidents"][0]["down_at"][:23]
        before = browser.eval(f"new Date(Date.parse({json.dumps(down_ms + 'Z')}) - 1)"
                              ".toISOString().slice(0, 23)")
        browser.eval(f"(() => {{ const m = document.getElementById('moment'); "
                     f"m.value = {json.dumps(before)}; "
                     f"m.dispatchEvent(new Event('change')); }})()")
        wait_for("the state before the failure", lambda: not rows(browser)[N1]["dead"])
        assert browser.eval("document.getElementById('moment-label').textContent") == \
            f"at {before.replace('T', ' ')} UTC"
        browser.eval("document.getElementById('now').click()")
        wait_for("back to now", lambda: rows(browser)[N1]["dead"])

        shot = tmp_path / "dashboard.png"
        browser.screenshot(shot)
        assert serve.stop() == 0
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = {c for _, c in img.getcolors(maxcolors=1_000_000)}
    assert len(colors) > 10, "the screenshot is blank"
    assert (0xD6, 0x45, 0x41) in colors and (0x3C, 0x9D, 0x5D) in colors  # dead and live


# -- the README's screenshot --------------------------------------------------------------------


def demo_log(catalog: bytes, now_us: int) -> list[dict]:
    """An hour of a three-node cluster's log, as `membership export` lines: node1 fails
    twice and comes back, an operator takes node2 out for maintenance."""
    def line(minutes_ago: float, event: str, stdin: bytes, **env: str) -> dict:
        at = now_us - int(minutes_ago * 60e6)
        from membership_log.core.timespec import iso

        return {"seq": 0, "received": iso(at), "observer": "node0", "source": "serf",
                "env": {"SERF_EVENT": event, "SERF_SELF_NAME": "node0", **env},
                "stdin_b64": base64.b64encode(stdin).decode(), "hash": ""}

    from membership_log.core.timespec import iso

    members = b"node0\t192.168.100.50\t\t\n" + JOIN
    return [
        {"seq": 0, "received": iso(now_us - 58 * 60_000_000), "observer": "node0",
         "source": "catalog", "env": {}, "stdin_b64": base64.b64encode(catalog).decode(),
         "hash": ""},
        line(57.5, "member-join", members),
        line(41, "member-failed", NODE1),
        line(39.2, "member-join", NODE1),
        line(27, "user", b"192.168.100.52:10031/droonga\n", SERF_USER_EVENT="membership-down",
             SERF_USER_LTIME="4"),
        line(18, "user", b"192.168.100.52:10031/droonga\n", SERF_USER_EVENT="membership-up",
             SERF_USER_LTIME="5"),
        line(9, "member-failed", NODE1),
        line(8.7, "member-join", NODE1),
    ]


def make_screenshot(out: Path) -> None:
    import subprocess
    import tempfile

    from samples import CATALOG_V2

    from membership_log.demo.localcluster import membership_command

    membership = membership_command()
    work = Path(tempfile.mkdtemp(prefix="dashboard-"))
    base = work / "base"
    base.mkdir()
    catalog = json.dumps(CATALOG_V2, indent=2).encode()
    (base / "catalog.json").write_bytes(catalog)
    export = "\n".join(json.dumps(x) for x in demo_log(catalog, time.time_ns() // 1000))
    subprocess.run([membership, "import", "--base-dir", str(base)], input=export.encode(),
                   check=True, capture_output=True)
    env = {"SERF_EVENT": "member-failed", "SERF_SELF_NAME": "node0"}
    subprocess.run([membership, "handle", "--base-dir", str(base)], input=NODE1, check=True,
                   env={**os.environ, **env})
    with Serve(membership, ["--base-dir", str(base)], work) as serve, \
            Chromium(chromium_binary(), work / "profile", width=1200, height=1000) as browser:
        browser.goto(serve.url + "/")
        wait_for("the page", lambda: len(rows(browser)) == 3 and browser.eval(
            "document.getElementById('timeline').naturalWidth > 0"), timeout=30)
        time.sleep(1)
        browser.screenshot(out)
        serve.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "dashboard.png"))


# -- freshness: stale data looks stale ------------------------------------------------------


FRESHNESS = """Array.from(document.querySelectorAll('#freshness tbody tr')).map(tr =>
  Array.from(tr.cells).map(td => td.textContent))"""


def test_a_silent_observer_is_shown_stale_in_words_and_down_since(membership, tmp_path):
    """A log whose last event is 27 minutes old: the header and the observers table say
    STALE in words (and red); the cluster table says since when a node is down, and for
    how long; /api/heads carries each log's head and each observer's latest event."""
    from membership_log.core.timespec import iso

    now = int(time.time() * 1e6)
    catalog = json.dumps(CATALOG_V2).encode()
    lines = demo_log(catalog, now - 27 * 60 * 1_000_000)
    lines.append({**lines[-1], "received": iso(now - 27 * 60 * 1_000_000),
                  "env": {**lines[-1]["env"], "SERF_EVENT": "member-failed"}})
    base = tmp_path / "quiet"
    r = subprocess.run([membership, "import", "--base-dir", str(base), "-"],
                       input="".join(json.dumps(x) + "\n" for x in lines).encode(),
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    with Serve(membership, ["--base-dir", str(base), "--stale-after", "15m"], tmp_path) as serve, \
            Chromium(chromium_binary(), tmp_path / "profile") as browser:
        heads = serve.json("/api/heads")
        assert heads["stale_after_s"] == 900.0 and set(heads["observers"]) == {"node0"}
        assert heads["logs"][""]["head"] == len(lines)
        browser.goto(serve.url + "/")
        table = wait_for("the observers table", lambda: browser.eval(FRESHNESS) or None)
        (name, latest, age, status, head), = table
        assert name == "node0" and status.startswith("STALE: nothing heard for 2")
        assert head == f"event {len(lines)}"
        wait_for("the header says stale", lambda: "STALE data: node0 silent for" in
                 browser.eval("document.getElementById('status-text').textContent"))
        assert browser.eval("document.getElementById('status').className") == "error"
        cells = wait_for("a dead node's down-since", lambda: [
            c for c in browser.eval("""Array.from(document.querySelectorAll('#nodes tbody tr.dead'))
              .map(tr => Array.from(tr.cells).map(td => td.textContent))""") if c[2]] or None)
        down_since, lasted = cells[0][2], cells[0][3]
        assert down_since[:4] == iso(now)[:4] and lasted.endswith(("m", "s", "h"))
        assert serve.stop() == 0
