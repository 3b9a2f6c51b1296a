"""Types as a habit: mypy, with the pyproject's configuration, is clean on membership_log/.

Run as the venv's own mypy (``sys.executable -m mypy``) from the repository root, so that it
reads ``[tool.mypy]`` there and checks exactly what ``files`` names. Its cache stays in
``.mypy_cache`` (ignored by git): a second run re-checks only what changed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"


def test_package_ships_py_typed() -> None:
    # PEP 561: without the marker, a user's type checker ignores the package's annotations.
    assert (ROOT / "membership_log" / "py.typed").is_file()
    assert '"membership_log" = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()
