"""Helpers for the operations tests: long-running ``membership`` processes (``serve``,
``alerts --follow``) and headless Chromium driven through the DevTools protocol.

Every process started here is stopped by its pid (SIGTERM, then SIGKILL after 10 s) and
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0,
             interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def get(url: str, headers: dict[str, str] | None = None,
        timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """``GET url`` -> (status, headers, body), 4xx and 5xx included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Proc:
    """A long-running ``membership`` command, its output in files, stopped by pid."""

    def __init__(self, membership: str, args: list[str], workdir: Path, name: str) -> None:
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([membership, *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM by pid, SIGKILL after 10 s; the exit status (None if already reaped)."""
        proc = self.proc
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise AssertionError(f"{self.out.stem} ignored SIGTERM") from None
        return proc.returncode

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Serve(Proc):
    """``membership serve`` on a free 127.0.0.1 port (``--listen 127.0.0.1:0``; the port
    is read from the line it writes on stderr)."""

    def __init__(self, membership: str, store_args: list[str], workdir: Path,
                 extra: list[str] | None = None) -> None:
        super().__init__(membership, ["serve", *store_args, "--listen", "127.0.0.1:0",
                                      *(extra or [])], workdir, "serve")
        try:
            line = wait_for("membership serve to listen", self._listening, timeout=30)
        except AssertionError:
            self.stop()
            raise AssertionError(f"membership serve did not start:\n{self.stderr()}") from None
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"

    def _listening(self) -> str | None:
        assert self.proc.poll() is None, f"membership serve exited:\n{self.stderr()}"
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.stderr())
        return m.group(1) if m else None

    def get(self, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
        return get(self.url + path, **kw)

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)


_TRAMPOLINE = """import os, sys
a, b = int(sys.argv[1]), int(sys.argv[2])
os.dup2(a, 3)
os.dup2(b, 4)
os.close(a)
os.close(b)
os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_binary() -> str:
    """Debian's ``chromium``; a missing one fails under CI and skips elsewhere."""
    path = shutil.which("chromium")
    if path is None:
        from conftest import missing

        missing("chromium is not installed (apt-get install chromium)")
    assert path is not None
    return path


class Chromium:
    """Headless Chromium with the DevTools protocol over a pipe (``--remote-debugging-pipe``:
    commands on its fd 3, answers on fd 4, each a JSON text ending in a NUL byte), so no
    WebSocket client and no debugging port are needed. One page (target) per instance."""

    def __init__(self, binary: str, profile: Path, width: int = 1280,
                 height: int = 1000) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Far above 4, so that putting one on 3 or 4 cannot clobber the other.
        a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 20)
        b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 20)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"]
        self.log = profile.with_suffix(".log")
        with open(self.log, "wb") as log:
            # A small Python trampoline puts the pipes on fds 3 and 4, then becomes Chromium
            # (same pid). dash, Debian's /bin/sh, cannot redirect fds above 9.
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(a), str(b), *argv], pass_fds=(a, b),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(a)
        os.close(b)
        self._buf = b""
        self._id = 0
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget",
                                     {"targetId": target, "flatten": True})["sessionId"]
            self.page("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        """One DevTools command; its result (events in between are skipped)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                if time.monotonic() > deadline:
                    raise AssertionError(f"Chromium did not answer {method}")
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise AssertionError(f"Chromium closed the pipe:\n{self.log_tail()}")
                self._buf += chunk
            raw, _, self._buf = self._buf.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer["result"]

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, self.session)

    def goto(self, url: str) -> None:
        self.page("Page.navigate", {"url": url})

    def eval(self, expression: str) -> Any:
        """A JavaScript expression's value (awaited if it is a promise)."""
        r = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path) -> None:
        shot = self.page("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Browser.close, then stop by pid if it lingers."""
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=10)
        except (AssertionError, OSError):
            pass
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
