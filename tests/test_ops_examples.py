"""The example operations files: Prometheus rules and config (checked and unit-tested by the
real promtool) and the systemd units (systemd-analyze verify, or a parse without it)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
from realservers import require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RULES = EXAMPLES / "prometheus-rules.yml"

# promtool's rule unit test: synthetic series sampled each minute, alerts expected at given
# times. Labels as Prometheus adds them when scraping `membership serve`.
SCRAPED = 'job="membership",instance="node0:9137"'
OTHER = 'job="membership",instance="node1:9137"'
EXPECTED = 'job: membership, instance: "node0:9137"'  # the same, as a YAML flow mapping
RULE_TESTS = f"""
rule_files:
  - {RULES}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # node1 failed from 2m, as two observers' stores report it: one alert, not two.
      - series: 'membership_node_down_cause{{{SCRAPED},node="node1",cause="failed"}}'
        values: '_ _ 1 1 1'
      - series: 'membership_node_down_cause{{{OTHER},node="node1",cause="failed"}}'
        values: '_ _ 1 1 1'
      # node4 left at 1m: out, a warning.
      - series: 'membership_node_down_cause{{{SCRAPED},node="node4",cause="left"}}'
        values: '_ 1 1 1 1'
      - series: 'membership_node_incidents_total{{{SCRAPED},node="node2",cause="failed"}}'
        values: '0 1 1 2 2'
      - series: 'membership_node_incidents_total{{{SCRAPED},node="node2",cause="operator"}}'
        values: '0 0 0 1 1'
      - series: 'membership_node_flapping{{{SCRAPED},node="node3"}}'
        values: '0 0 1 1 1'
      # Heartbeats every 5 minutes until the one at 15m (900 s), then none; node1's stopped
      # long ago (a node gone for good: its last heartbeat stays in the log).
      - series: 'membership_observer_last_heartbeat_timestamp_seconds{{{SCRAPED},observer="node0"}}'
        values: '0x4 300x4 600x4 900x20'
      - series: 'membership_observer_last_heartbeat_timestamp_seconds{{{SCRAPED},observer="node1"}}'
        values: '0x35'
      - series: 'up{{{SCRAPED}}}'
        values: '1 1 0x10'
    alert_rule_test:
      # node1 dead from 2m: pending at 2m, firing once it has been dead for 1m.
      - eval_time: 2m
        alertname: MembershipNodeDead
        exp_alerts: []
      - eval_time: 3m
        alertname: MembershipNodeDead
        exp_alerts:
          - exp_labels: {{node: node1, cause: failed, severity: critical}}
            exp_annotations:
              summary: "node1 failed"
              description: >-
                node1 has been dead for more than a minute: Serf reported it failed. `membership
                audit --node node1` says since when and who saw it.
      - eval_time: 3m
        alertname: MembershipNodeOut
        exp_alerts:
          - exp_labels: {{node: node4, cause: left, severity: warning}}
            exp_annotations:
              summary: "node4 is out (left)"
              description: >-
                node4 has been out for more than a minute (left: a graceful leave or an
                operator's membership-down mark).
      # node2: a third incident (of any cause) within 10 minutes at 3m; node3 flags itself.
      - eval_time: 2m
        alertname: MembershipNodeFlapping
        exp_alerts:
          - exp_labels: {{{EXPECTED}, node: node3, severity: warning}}
            exp_annotations: &flap3
              summary: "node3 is flapping"
              description: >-
                node3 went down at least 3 times within 10 minutes (seen by node0:9137). Live sets
                that change this often make the engine reroute again and again; `membership audit
                --node node3` lists the incidents.
      - eval_time: 3m
        alertname: MembershipNodeFlapping
        exp_alerts:
          - exp_labels: {{{EXPECTED}, node: node2, severity: warning}}
            exp_annotations:
              summary: "node2 is flapping"
              description: >-
                node2 went down at least 3 times within 10 minutes (seen by node0:9137). Live sets
                that change this often make the engine reroute again and again; `membership audit
                --node node2` lists the incidents.
          - exp_labels: {{{EXPECTED}, node: node3, severity: warning}}
            exp_annotations: *flap3
      # The freshest heartbeat counts (node1's stale one pages nobody): the last at 15m,
      # silent "for over 15 minutes" only after 30m.
      - eval_time: 14m
        alertname: MembershipObserverSilent
        exp_alerts: []
      - eval_time: 30m
        alertname: MembershipObserverSilent
        exp_alerts: []
      - eval_time: 31m
        alertname: MembershipObserverSilent
        exp_alerts:
          - exp_labels: {{{EXPECTED}, severity: warning}}
            exp_annotations:
              summary: "the membership log on node0:9137 hears no heartbeat"
              description: >-
                The log on node0:9137 has recorded no membership-heartbeat for 16m 0s. Its Serf
                agent or its event handler may be down (membership changes it should see are
                lost), or no node's heartbeat timer runs; `membership doctor` on that node says
                which.
      # The scrape fails from 2m: firing after 5 minutes of it.
      - eval_time: 6m
        alertname: MembershipMetricsDown
        exp_alerts: []
      - eval_time: 7m
        alertname: MembershipMetricsDown
        exp_alerts:
          - exp_labels: {{{EXPECTED}, severity: warning}}
            exp_annotations:
              summary: "membership serve on node0:9137 does not answer"
              description: >-
                Prometheus has failed to scrape node0:9137 for 5 minutes, so the membership alerts
                above cannot fire for it.
"""


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([require("promtool"), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_rules_check():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


def test_rules_fire_as_documented(tmp_path):
    tests = tmp_path / "rules-test.yml"
    tests.write_text(RULE_TESTS)
    r = promtool("test", "rules", str(tests))
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_config_check():
    # Run from elsewhere: rule_files are relative to the config file, not the cwd.
    r = promtool("check", "config", str(EXAMPLES / "prometheus.yml"), cwd=Path("/"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout
    text = (EXAMPLES / "prometheus.yml").read_text()
    assert "scrape_interval: 15s" in text and '"127.0.0.1:9137"' in text


# The long-running services; membership-compact.service (a oneshot run by its timer) is not
# one of them.
UNITS = [EXAMPLES / "systemd" / f"membership-{name}.service" for name in ("alerts", "serve",
                                                                          "ship")]
REQUIRED = {"User", "Group", "ExecStart", "NoNewPrivileges", "ProtectSystem", "PrivateTmp",
            "Restart", "CapabilityBoundingSet"}
#: Who runs what (README "Deployment"): readers as a member of the store group, with a
#: read-only file system; writers as the store's owner (Serf's handler's user, root under
#: Debian's serf.service) without any capability, writing only the base dir.
READERS = {"membership-serve.service", "membership-ship.service"}


def test_the_units_exist():
    assert all(u.is_file() for u in UNITS)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_hardened_and_valid(unit, tmp_path):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert REQUIRED <= set(service), REQUIRED - set(service)
    assert service["Group"] == "membership"
    assert service["CapabilityBoundingSet"] == "", "no capability, root or not"
    if unit.name in READERS:
        assert service["User"] == "membership"
        assert "ReadWritePaths" not in service, "a reader writes nothing"
    else:
        assert service["User"] == "root", "a writer is the store's owner"
        assert service["ReadWritePaths"] == "/var/lib/droonga"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    assert service["Restart"] == "on-failure"
    command = service["ExecStart"].split()
    assert command[0].endswith("/membership") and "--base-dir" in command
    if unit.name == "membership-ship.service":
        assert command[1] == "ship" and "--follow" in command and "--to" in command
        target = command[command.index("--to") + 1]
        assert target.startswith("postgresql://") and ":" not in target[13:].split("@")[0]
    elif unit.name == "membership-alerts.service":
        assert command[1] == "alerts" and "--follow" in command and "--to" in command
    else:
        assert command[1] == "serve"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert "pip install membership-log" not in unit.read_text(), "README installs a checkout"
    verify(unit, tmp_path)


def verify(unit: Path, tmp_path: Path, *others: Path) -> None:
    """``systemd-analyze verify`` of ``unit`` (and ``others``, e.g. its timer) when systemd's
    tools are installed (they are not needed for anything else, so the parse above stands
    alone without them)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # verify insists that ExecStart's program exists: point it at a stand-in, nothing else
    # changes.
    program = tmp_path / "membership"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    copies = []
    for u in (unit, *others):
        copy = tmp_path / u.name
        copy.write_text(u.read_text().replace("/opt/membership-log/bin/membership ",
                                              f"{program} "))
        copies.append(str(copy))
    r = subprocess.run([analyze, "verify", "--man=no", *copies], capture_output=True,
                       text=True, timeout=60)
    # Unknown keys and bad values are only warnings ("..., ignoring"): any output fails.
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_the_daily_ship_and_compact_unit_and_its_timer(tmp_path):
    """membership-compact.service ships, then compacts behind --require-shipped, once a day
    (membership-compact.timer); both verify with systemd-analyze where it is installed."""
    service = EXAMPLES / "systemd" / "membership-compact.service"
    timer = EXAMPLES / "systemd" / "membership-compact.timer"
    text = service.read_text()
    commands = [line.split("=", 1)[1].split() for line in text.splitlines()
                if line.startswith("ExecStart=")]
    assert [c[1] for c in commands] == ["ship", "compact"], "ship first, then compact"
    compact = commands[1]
    assert "--require-shipped" in compact and "--before" in compact
    assert compact[compact.index("--require-shipped") + 1] == commands[0][
        commands[0].index("--to") + 1], "only what reached that same central store is dropped"
    assert "Type=oneshot" in text and "User=root" in text and "CapabilityBoundingSet=\n" in text
    assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(timer.read_text())
    assert parser["Timer"]["OnCalendar"] and parser["Timer"]["Persistent"] == "true"
    verify(service, tmp_path, timer)


def test_the_heartbeat_unit_and_its_timer(tmp_path):
    """membership-heartbeat.service sends one heartbeat through the local agent, as the
    membership user, touching no file; its timer runs it every few minutes, more often than
    MembershipObserverSilent waits (both verify with systemd-analyze where it is
    installed)."""
    service = EXAMPLES / "systemd" / "membership-heartbeat.service"
    timer = EXAMPLES / "systemd" / "membership-heartbeat.timer"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(service.read_text())
    unit = parser["Service"]
    assert unit["Type"] == "oneshot" and unit["User"] == "membership"
    assert "ReadWritePaths" not in unit and unit["CapabilityBoundingSet"] == ""
    assert unit["ExecStart"].split()[1:] == ["heartbeat", "--rpc-addr", "127.0.0.1:7373"]
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(timer.read_text())
    from membership_log.core.timespec import parse_duration

    every = parse_duration(parser["Timer"]["OnUnitActiveSec"])
    late = parse_duration(parser["Timer"]["RandomizedDelaySec"])
    silent = int(RULES.read_text().split("membership_observer_last_heartbeat_timestamp_seconds"
                                         ")")[1].split(">")[1].split()[0])
    # Two gaps of the longest kind (one run missed, the others as late as they can be) stay
    # below the rule's threshold: one missed run pages nobody.
    assert 2 * (every + late) < silent <= 3 * (every + late)
    verify(service, tmp_path, timer)


def test_the_head_publishing_unit_and_its_timer(tmp_path):
    """membership-head.service publishes this node's tree head through the local Serf agent
    (membership head --publish), every few minutes (membership-head.timer); both verify
    with systemd-analyze."""
    service = EXAMPLES / "systemd" / "membership-head.service"
    timer = EXAMPLES / "systemd" / "membership-head.timer"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(service.read_text())
    unit = parser["Service"]
    command = unit["ExecStart"].split()
    assert command[0].endswith("/membership") and command[1:2] == ["head"]
    assert "--publish" in command and "--base-dir" in command
    assert unit["Type"] == "oneshot" and unit["User"] not in ("", "root")
    assert unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"
    assert unit["Group"] == "membership" and "ReadWritePaths" not in unit, "a reader"
    assert "SERF_RPC_AUTH" not in unit["ExecStart"], "no credential on the command line"
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(timer.read_text())
    every = parser["Timer"]["OnUnitActiveSec"]
    assert every.endswith("min") and 1 <= int(every[:-3]) <= 10, "every few minutes"
    assert parser["Install"]["WantedBy"] == "timers.target"
    verify(service, tmp_path, timer)
