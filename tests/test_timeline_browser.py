"""The timeline renders in a real browser: headless Chromium (Debian's package) draws it,
the screenshot is not blank, and every node row is there."""

import shutil
import subprocess

import pytest
from PIL import Image
from samples import NODES
from typer.testing import CliRunner

from membership_log.cli import app
from membership_log.render.timeline import COLORS

pytestmark = pytest.mark.e2e

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium():
    from conftest import missing

    path = shutil.which("chromium")
    if path is None:
        missing("chromium is not installed (apt-get install chromium)")
    return path


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def test_timeline_renders_in_headless_chromium(chromium, handle, base, tmp_path):
    handle("member-join", b"node1\t192.168.100.51\t\t\nnode2\t192.168.100.52\t\t\n")
    handle("member-failed", b"node1\t192.168.100.51\t\t\n")
    handle("member-join", b"node1\t192.168.100.51\t\t\n")
    handle("member-leave", b"node2\t192.168.100.52\t\t\n")
    page = tmp_path / "timeline.html"
    r = CliRunner().invoke(app, ["timeline", "--base-dir", str(base), "-o", str(page)])
    assert r.exit_code == 0, r.output
    profile = tmp_path / "profile"
    url = page.as_uri()
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="node-row"') == 3
    for node in NODES:
        assert f'data-node="{node}"' in dom.stdout
    shot = tmp_path / "shot.png"
    run = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                          f"--screenshot={shot}", "--window-size=1120,300", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1_000_000)
    assert len(colors) > 10, "the screenshot is blank"
    counts = {c: n for n, c in colors}
    live = counts.get(_rgb(COLORS["live"]), 0)
    assert live > 3 * 600 * 10, "three live bands are drawn"
    assert counts.get(_rgb(COLORS["left"]), 0) > 100, "the leave incident is drawn"
    assert counts.get(_rgb(COLORS["failed"]), 0) > 0, "the failure is marked"
