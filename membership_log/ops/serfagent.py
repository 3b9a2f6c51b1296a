"""Talking to the local Serf agent through its own CLI (``serf info``, ``members``,
``event``): what ``membership heartbeat``, ``head --publish`` and ``doctor`` need of it.

The ``serf`` command, not Serf's RPC protocol (msgpack over TCP, with its handshake and
auth): it is installed wherever an agent runs, and it reads ``SERF_RPC_ADDR`` and
``SERF_RPC_AUTH`` from the environment as operators already set them. The address is
passed as ``-rpc-addr`` only when the caller names one, so that Serf's own default and
environment apply otherwise (SPEC "Deployment").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from ..core.errors import MembershipError
from ..core.fold import HEARTBEAT
from ..core.witness import USER_EVENT_LIMIT

#: Serf's own default RPC address (``serf agent -rpc-addr``).
DEFAULT_RPC_ADDR = "127.0.0.1:7373"
#: Seconds one ``serf`` call may take (a stopped agent refuses at once; a paused one hangs).
TIMEOUT_S = 10.0


class SerfError(MembershipError):
    """The agent could not be asked (not installed, not reachable, an error)."""


class NotInstalled(SerfError):
    """No ``serf`` command on PATH."""


def rpc_address(rpc_addr: str | None) -> str:
    """The address a ``serf`` call goes to: the one given, else Serf's own environment
    variable, else its default."""
    return rpc_addr or os.environ.get("SERF_RPC_ADDR") or DEFAULT_RPC_ADDR


def serf_command() -> str:
    found = shutil.which("serf")
    if found is None:
        raise NotInstalled("serf is not installed (no serf command on PATH; on Debian: "
                           "apt-get install serf)")
    return found


def run(args: list[str], rpc_addr: str | None = None) -> str:
    """``serf ARGS [-rpc-addr ADDR]``'s standard output; a :class:`SerfError` naming the
    address and Serf's own words otherwise."""
    argv = [serf_command(), *args[:1], *([f"-rpc-addr={rpc_addr}"] if rpc_addr else []),
            *args[1:]]
    where = rpc_address(rpc_addr)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SerfError(f"the Serf agent at {where} did not answer `serf {args[0]}` within "
                        f"{TIMEOUT_S:g} s") from None
    except OSError as e:
        raise SerfError(f"cannot run serf: {e.strerror or e}") from None
    if r.returncode != 0:
        said = " ".join((r.stderr or r.stdout).split())[:300] or f"exit {r.returncode}"
        raise SerfError(f"serf {args[0]} (the agent at {where}) failed: {said}")
    return r.stdout


def info(rpc_addr: str | None = None) -> dict:
    """``serf info -format=json``: the agent's name, its event handlers, its counters."""
    try:
        doc = json.loads(run(["info", "-format=json"], rpc_addr))
    except ValueError:
        raise SerfError(f"serf info at {rpc_address(rpc_addr)} printed no JSON") from None
    return doc if isinstance(doc, dict) else {}


def agent_name(rpc_addr: str | None = None) -> str:
    """This node's name, as its agent knows it (``SERF_SELF_NAME`` of its handler)."""
    name = (info(rpc_addr).get("agent") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise SerfError(f"the Serf agent at {rpc_address(rpc_addr)} did not say its name")
    return name


def members(rpc_addr: str | None = None) -> list[dict]:
    """``serf members -format=json``: ``[{name, addr, status, tags, ...}]``."""
    try:
        doc = json.loads(run(["members", "-format=json"], rpc_addr))
    except ValueError:
        raise SerfError(f"serf members at {rpc_address(rpc_addr)} printed no JSON") from None
    found = doc.get("members") if isinstance(doc, dict) else None
    return [m for m in found or [] if isinstance(m, dict)]


def send_user_event(name: str, payload: str, rpc_addr: str | None = None) -> None:
    """``serf event -coalesce=false NAME PAYLOAD``: a :class:`SerfError` if it is over Serf's
    size limit or the agent does not take it.

    Coalescing is off: Serf delivers only the user event of a name with the highest Lamport
    time within its coalescing window (shared/reference/serf.md), so heartbeats or heads
    that several nodes send at about the same moment would otherwise reach every handler as
    one."""
    size = len(name.encode()) + len(payload.encode("utf-8", "surrogateescape"))
    if size > USER_EVENT_LIMIT:
        raise SerfError(f"the user event {name} would be {size} bytes, over Serf's limit of "
                        f"{USER_EVENT_LIMIT}")
    run(["event", "-coalesce=false", name, payload], rpc_addr)


def send_heartbeat(rpc_addr: str | None = None, name: str | None = None) -> str:
    """Send the user event ``membership-heartbeat`` with this node's name as its payload;
    returns the name."""
    sender = name or agent_name(rpc_addr)
    send_user_event(HEARTBEAT, sender, rpc_addr)
    return sender
