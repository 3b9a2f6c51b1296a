"""A non-editable install works from any directory: the migrations ship inside the wheel."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from membership_log.version import SCHEMA_REVISION

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("membership_log-*.whl")
    return found


def test_wheel_ships_migrations_and_the_launcher(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "membership_log/migrations/env.py" in names
    assert "membership_log/migrations/script.py.mako" in names
    assert any(n.startswith("membership_log/migrations/versions/0001") for n in names)
    assert any(n.endswith(".data/scripts/membership") for n in names)


def test_installed_copy_runs_from_outside_the_repo(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies come from the test environment (appended after the venv's own packages,
    # so the wheel's copy of membership_log wins); the package itself only from the wheel.
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--ignore-installed", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    membership = venv / "bin" / "membership"
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([py, "-c", "import membership_log; print(membership_log.__file__)"],
                           capture_output=True, text=True, cwd=work, check=True).stdout
    assert where.startswith(str(venv)), where

    def run(*args, **kw):
        r = subprocess.run([membership, *args], capture_output=True, text=True, cwd=work, **kw)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert f"at schema {SCHEMA_REVISION}" in run("init")
    env = {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "n0", "PATH": "/usr/bin:/bin"}
    run("handle", input="n1\t10.0.0.1\t\t\n", env=env)
    assert '"n1"' in (work / "live-nodes.json").read_text()
    assert "member-join" in run("replay")
    other = str(tmp_path / "other.db")
    assert f"schema {SCHEMA_REVISION}" in run("db", "upgrade", "--db", other) + \
        run("db", "upgrade", "--db", other)
    # A handler run on a base dir with no store sets it up with the shipped migrations.
    fresh = tmp_path / "fresh"
    run("handle", "--base-dir", str(fresh), input="n1\t10.0.0.1\t\t\n", env=env)
    assert (fresh / "membership.db").exists()
