"""README's Python examples run as written, against a real store the handler filled."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_python_api_examples_run(handle, base, tmp_path):
    members = "".join(f"{ip}\t{ip}\t\t\n" for ip in ("192.168.100.50", "192.168.100.51",
                                                     "192.168.100.52"))
    # The seed's catalog names its nodes HOST:PORT/TAG; Serf's members are the hosts.
    assert handle("member-join", members.encode()).returncode == 0
    assert handle("member-failed", b"192.168.100.51\t192.168.100.51\t\t\n").returncode == 0
    history_block, engine_block = python_blocks("Python API")
    script = tmp_path / "example.py"
    # "..." in the engine block is where a program would do its work.
    script.write_text(history_block.replace("/var/lib/droonga", str(base)) + "\n"
                      + engine_block)
    r = subprocess.run([sys.executable, str(script)], cwd=base, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == str(["192.168.100.50:10031/droonga", "192.168.100.52:10031/droonga"])
    assert any(line.startswith("3 member-failed (Change(") for line in lines), r.stdout
    assert any(line.startswith('{"') for line in lines), r.stdout
    assert lines[-1] == "added () removed ('192.168.100.51:10031/droonga',)"  # the watcher
