"""Where a raw event waits when the store cannot take it (unwritable, locked, wrong schema).

One file per event, named by receive time so a sorted listing is arrival order; written
atomically and durably. The next handler run that can write takes the files in, in order,
with their original receive times, and only then deletes them. The format is plain
length-prefixed fields, readable by any release.
"""

from __future__ import annotations

import os

MAGIC = b"membership-spool 1\n"
SUFFIX = ".event"


def _field(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b"\n"


def encode(item: tuple) -> bytes:
    received_us, observer, source, env_blob, stdin = item
    return MAGIC + b"".join(
        _field(part)
        for part in (
            str(received_us).encode(),
            observer.encode("utf-8", "surrogateescape"),
            source.encode("ascii"),
            env_blob,
            stdin,
        )
    )


def decode(data: bytes) -> tuple:
    if not data.startswith(MAGIC):
        raise ValueError("not a membership-log spool file")
    parts = []
    pos = len(MAGIC)
    for _ in range(5):
        colon = data.index(b":", pos)
        n = int(data[pos:colon])
        parts.append(data[colon + 1 : colon + 1 + n])
        pos = colon + 2 + n
    received, observer, source, env_blob, stdin = parts
    return (int(received), observer.decode("utf-8", "surrogateescape"), source.decode(), env_blob,
            stdin)


def put(directory: str, item: tuple) -> str:
    """Write ``item`` durably into the spool; returns its path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = f"{item[0]:020d}-{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}"
    tmp = os.path.join(directory, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, encode(item))
        os.fsync(fd)
    finally:
        os.close(fd)
    path = os.path.join(directory, name)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def pending(directory: str) -> list[tuple[str, tuple]]:
    """Spooled events in arrival order, as ``(path, item)``. Unreadable files are left alone
    for an operator, never deleted."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                out.append((path, decode(f.read())))
        except (OSError, ValueError):
            continue
    return out


def remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
