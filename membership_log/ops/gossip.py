"""Sending a Serf user event through the local agent (``serf event``), as ``membership head
--publish`` does.

Serf's own CLI does the talking: it reads the agent's RPC address from ``-rpc-addr`` or
Serf's ``SERF_RPC_ADDR`` (and the RPC auth key from ``SERF_RPC_AUTH``), so this module passes
the environment through and adds ``-rpc-addr`` only when one is given. Coalescing is off by
default: with it, Serf delivers only the user event of a name with the highest Lamport time
within its coalescing window (shared/reference/serf.md), so two nodes publishing their heads
at the same moment would lose one of them on every receiver.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..core.errors import MembershipError
from ..core.witness import USER_EVENT_LIMIT

#: What ``serf`` itself connects to without ``-rpc-addr`` or ``SERF_RPC_ADDR``.
DEFAULT_RPC = "127.0.0.1:7373"
TIMEOUT_S = 10.0


def send_user_event(name: str, payload: str, rpc_addr: str | None = None,
                    coalesce: bool = False, timeout: float = TIMEOUT_S) -> str:
    """Send the user event ``name`` with ``payload`` through the local Serf agent; what
    ``serf`` answered. One-line :class:`MembershipError` if serf is not on PATH, the event
    is over Serf's size limit, or the agent cannot be reached or refuses it."""
    size = len(name.encode()) + len(payload.encode("utf-8", "surrogateescape"))
    if size > USER_EVENT_LIMIT:
        raise MembershipError(f"the user event {name} would be {size} bytes, over Serf's "
                              f"limit of {USER_EVENT_LIMIT}")
    serf = shutil.which("serf")
    if serf is None:
        raise MembershipError(f"serf is not on PATH: {name} is sent through the local Serf "
                              f"agent with `serf event` (install Serf, e.g. apt-get install "
                              f"serf)")
    where = rpc_addr or os.environ.get("SERF_RPC_ADDR") or DEFAULT_RPC
    command = [serf, "event", f"-coalesce={'true' if coalesce else 'false'}"]
    if rpc_addr:
        command.append(f"-rpc-addr={rpc_addr}")
    command += [name, payload]
    try:
        r = subprocess.run(command, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MembershipError(f"the Serf agent at {where} did not take the event {name} within "
                              f"{timeout:g} s") from None
    except OSError as e:
        raise MembershipError(f"cannot run {serf}: {e.strerror or e}") from None
    said = " ".join((r.stderr or r.stdout).decode("utf-8", "replace").split())
    if r.returncode != 0:
        raise MembershipError(f"the Serf agent at {where} did not take the event {name}: "
                              f"{said[:200] or f'serf event exited {r.returncode}'}")
    return " ".join(r.stdout.decode("utf-8", "replace").split())
