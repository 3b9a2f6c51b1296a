"""Operations figures: scrape time on a long log, the handler while being scraped, alert
passes, and the latency from the handler to Alertmanager.

- scrape, in-process: ``GET /metrics`` through ``membership serve``'s own request code
  (:class:`membership_log.ops.serve.Api`: open the store, compute, render, close), on a node
  store of 1,000,000 synthetic events (target < 100 ms); the other API routes beside it;
- scrape over HTTP: the same through a real ``membership serve`` process;
- the handler (``membership handle``, a whole process) on that store, idle and while
  ``serve`` is scraped ten times a second: serving must not slow it;
- ``membership alerts`` passes over that store's incidents (Alertmanager stubbed out): the
  first one (everything) and a steady one (nothing new);
- handler -> Alertmanager: a real ``alerts --follow`` and the real Alertmanager (Debian's
  ``prometheus-alertmanager``); from the handler's exit until ``GET /api/v2/alerts`` lists
  the alert, at ``--interval`` 1 (the default) and 0.2.

    .venv/bin/python benchmarks/ops.py                    # 1,000,000 events (~30 s to build)
    .venv/bin/python benchmarks/ops.py --base-dir DIR     # reuse a store built before:
        python -m membership_log.demo.synthetic --base-dir DIR --events 1000000 --flap-rate 0.05
    .venv/bin/python benchmarks/ops.py --quick            # 20,000 events, fewer rounds (CI)

The handler rounds append events to the store they run on (member-update events).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from membership_log import settings
from membership_log.demo.localcluster import membership_command
from membership_log.demo.synthetic import make_store
from membership_log.history import api as history
from membership_log.ops import alerts
from membership_log.ops.serve import Api
from membership_log.stores.protocol import NODE

ROWS: list[dict] = []


def row(section: str, figure: str, value: float, unit: str, target: float | None = None,
        verdict: bool = True) -> None:
    met = None if target is None or not verdict else value < target
    ROWS.append({"section": section, "figure": figure, "value": round(value, 3), "unit": unit,
                 "target": target, "met": met})


def ms(samples: list[float]) -> tuple[float, float, float]:
    s = sorted(samples)
    return statistics.median(s), s[max(0, int(len(s) * 0.95) - 1)], s[-1]


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise SystemExit("timed out")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # by pid
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- scrapes ---------------------------------------------------------------------------------


def scrapes(s: settings.Settings, n: int, rounds: int, full: bool) -> None:
    api = Api(s.db_url)
    assert api.respond("/metrics").status == 200  # warm: imports, page cache
    samples = timed(lambda: api.respond("/metrics"), rounds)
    med, p95, _ = ms(samples)
    row("scrape (in-process)", f"GET /metrics, median of {rounds}", med, "ms", 100, full)
    row("scrape (in-process)", "GET /metrics, p95", p95, "ms", 100, full)
    row("scrape (in-process)", "GET /metrics, fastest", min(samples), "ms")
    with history.open_store(s.db_url) as store:
        snap_ms = ms(timed(lambda: history.metrics(store), rounds))[0]
    row("scrape (in-process)", "of which history.metrics (store open)", snap_ms, "ms")
    for path in ("/api/heads", "/api/state", f"/api/state?at=%40{n // 2}"):
        row("API (in-process)", f"GET {path}, median",
            ms(timed(lambda p=path: api.respond(p), rounds))[0], "ms")


def http_scrapes(s: settings.Settings, rounds: int, work: Path) -> str:
    """Start a real `membership serve`; return its URL (left running for the handler test)."""
    port = free_port()
    err = open(work / "serve.err", "wb")  # noqa: SIM115 -- closed with the process
    proc = subprocess.Popen([membership_command(), "serve", "--base-dir", s.base_dir,
                             "--listen", f"127.0.0.1:{port}"], stderr=err,
                            stdout=subprocess.DEVNULL)
    PROCS.append(proc)
    url = f"http://127.0.0.1:{port}"

    def scrape():
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            r.read()

    wait(lambda: _answers(url), 30, 0.05)
    scrape()
    med, p95, _ = ms(timed(scrape, rounds))
    row("scrape (HTTP)", f"GET /metrics of membership serve, median of {rounds}", med, "ms")
    row("scrape (HTTP)", "p95", p95, "ms")
    return url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/heads", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


PROCS: list[subprocess.Popen] = []


def handler_rounds(s: settings.Settings, serve_url: str, rounds: int) -> None:
    """The handler, a whole process, idle and while serve is scraped 10 times a second, in
    alternating rounds so that the machine's drift hits both alike."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    env.update({"SERF_EVENT": "member-update", "SERF_SELF_NAME": "node0"})
    argv = [membership_command(), "handle", "--base-dir", s.base_dir]

    def handle() -> float:
        t = time.perf_counter()
        r = subprocess.run(argv, input=b"node1\t192.168.0.2\t\tbench=1\n", env=env,
                           capture_output=True)
        assert r.returncode == 0, r.stderr
        return (time.perf_counter() - t) * 1000

    handle()
    scraping, done = threading.Event(), threading.Event()
    count = [0]

    def scraper():
        while not done.is_set():
            if scraping.is_set():
                with urllib.request.urlopen(serve_url + "/metrics", timeout=10) as r:
                    r.read()
                count[0] += 1
            done.wait(0.1)

    t = threading.Thread(target=scraper)
    t.start()
    idle, busy = [], []
    try:
        for _ in range(rounds):
            idle.append(handle())
            scraping.set()
            time.sleep(0.15)  # a scrape in flight when the handler starts
            busy.append(handle())
            scraping.clear()
    finally:
        done.set()
        t.join()
    row("handler", f"membership handle, idle, median of {rounds}", ms(idle)[0], "ms")
    row("handler", f"while serve is scraped 10/s ({count[0]} scrapes), median", ms(busy)[0],
        "ms")


# -- alerts ----------------------------------------------------------------------------------


def alert_passes(s: settings.Settings) -> None:
    posted = [0]

    def post(url, batch):
        posted[0] += len(batch)

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "membership.db"
        shutil.copy(s.sqlite_path, copy)  # the delivery rows must not stay in the store
        sender = alerts.Sender(f"sqlite:///{copy}", "http://am.invalid:9093", post=post)
        t = time.perf_counter()
        sender.run_pass()
        first = (time.perf_counter() - t) * 1000
        steady = ms(timed(sender.run_pass, 5))[0]
    row("alerts", f"first pass: {posted[0]:,} incidents posted (stub), read+plan+record",
        first, "ms")
    row("alerts", "a pass with nothing new (median of 5)", steady, "ms")


AM_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


def alert_latency(rounds: int, work: Path) -> None:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        print("no Alertmanager installed: latency not measured", file=sys.stderr)
        return
    (work / "am").mkdir()
    (work / "am" / "am.yml").write_text(AM_CONFIG)
    port = free_port()
    am = subprocess.Popen([binary, f"--config.file={work / 'am' / 'am.yml'}",
                           f"--storage.path={work / 'am' / 'data'}",
                           f"--web.listen-address=127.0.0.1:{port}",
                           "--cluster.listen-address=", "--log.level=warn"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(am)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait(ready, 60, 0.1)

    def listed() -> set[str]:
        with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as r:
            return {a["labels"]["node"] for a in json.load(r)}

    membership = membership_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERF_", "MEMBERSHIP_"))}
    env["SERF_SELF_NAME"] = "node0"
    for interval in (1.0, 0.2):
        base = work / f"latency-{interval}"
        base.mkdir()
        subprocess.run([membership, "handle", "--base-dir", str(base)], input=b"",
                       env={**env, "SERF_EVENT": "member-update"}, check=True,
                       capture_output=True)  # the store exists before alerts starts
        proc = subprocess.Popen([membership, "alerts", "--base-dir", str(base), "--to", url,
                                 "--follow", "--interval", str(interval)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.append(proc)
        took = []
        rng = random.Random(interval)
        for i in range(rounds):
            time.sleep(rng.uniform(0, interval))  # events arrive at any phase of the loop
            name = f"bench-{interval}-{i}"
            line = f"{name}\t10.0.{i // 250}.{i % 250 + 1}\t\t\n".encode()
            for event in ("member-join", "member-failed"):
                subprocess.run([membership, "handle", "--base-dir", str(base)], input=line,
                               env={**env, "SERF_EVENT": event}, check=True,
                               capture_output=True)
            t = time.perf_counter()
            wait(lambda n=name: n in listed(), 30)
            took.append((time.perf_counter() - t) * 1000)
        stop(proc)
        med, _, top = ms(took)
        row("handler -> Alertmanager", f"alerts --follow --interval {interval:g}: median of "
            f"{rounds}", med, "ms")
        row("handler -> Alertmanager", f"--interval {interval:g}: max", top, "ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, few rounds")
    parser.add_argument("--base-dir", help="reuse this synthetic node store")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    n = args.events or (20_000 if args.quick else 1_000_000)
    rounds = 10 if args.quick else 50
    work = Path(tempfile.mkdtemp(prefix="ops-bench-"))
    try:
        if args.base_dir and os.path.exists(os.path.join(args.base_dir, "membership.db")):
            s = settings.resolve(args.base_dir)
            with history.open_store(s.db_url) as store:
                n = store.head_seq(NODE)
        else:
            t = time.perf_counter()
            s = make_store(args.base_dir or str(work / "store"), "node0", n, flap_rate=0.05)
            print(f"built {n:,} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        with history.open_store(s.db_url) as store:
            kept = len(store.incidents(NODE))
        row("store", "events", n, "events")
        row("store", "incidents", kept, "incidents")
        full = n >= 1_000_000
        scrapes(s, n, rounds, full)
        url = http_scrapes(s, rounds, work)
        handler_rounds(s, url, 5 if args.quick else 20)
        alert_passes(s)
        alert_latency(3 if args.quick else 10, work)
    finally:
        for proc in PROCS:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"events": n, "rows": ROWS}))
        return 0
    width = max(len(r["figure"]) for r in ROWS)
    section = None
    for r in ROWS:
        if r["section"] != section:
            section = r["section"]
            print(f"\n{section}")
        verdict = "" if r["met"] is None else ("  ok" if r["met"] else "  MISSED")
        target = f"  (target < {r['target']:g} {r['unit']})" if r["target"] else ""
        print(f"  {r['figure']:<{width}}  {r['value']:>10,.1f} {r['unit']}{target}{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
