"""Where a raw event waits when the store cannot take it (unwritable, locked, wrong schema).

One file per event, named by receive time so a sorted listing is arrival order; written
atomically and durably. The next handler run that can write takes the files in, in order,
with their original receive times, and only then deletes them. The format is plain
length-prefixed fields, readable by any release.

A file that cannot be read or decoded is never deleted (it may be the only copy of an
event) and must not be retried forever in silence: :func:`unreadable` names such files and
:func:`quarantine` moves them into ``<spool>/unreadable/`` for an operator.
"""

from __future__ import annotations

import errno
import os
import stat

from . import files

MAGIC = b"membership-spool 1\n"
SUFFIX = ".event"
#: Subdirectory of the spool holding files that could not be taken in.
UNREADABLE = "unreadable"

_FIELDS = 5
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR}
_MAX_LEN_DIGITS = 19  # a field length, and received_us, fit a signed 64-bit integer


def _field(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b"\n"


def encode(item: tuple) -> bytes:
    """``(received_us, observer, source, env_blob, stdin)`` -> the spool file's bytes."""
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


def _digits(text: bytes, what: str) -> int:
    """Plain ASCII digits only: ``int()`` would also take ``+5``, `` 5``, ``1_0`` and
    5000-digit numbers (which raise their own error), none of which :func:`encode` writes."""
    if not (0 < len(text) <= _MAX_LEN_DIGITS and text.isdigit()):
        raise ValueError(f"spool file: bad {what} {text[:24]!r}")
    return int(text)


def decode(data: bytes) -> tuple:
    """Inverse of :func:`encode`. Only ValueError, for any bytes: each field must be exactly
    as :func:`encode` writes it (length, ``:``, bytes, newline) and nothing may follow the
    last, so a truncated or edited file is refused rather than taken in half-read."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(MAGIC):
        raise ValueError("not a membership-log spool file")
    data = bytes(data)
    parts = []
    pos = len(MAGIC)
    for i in range(_FIELDS):
        colon = data.find(b":", pos, pos + _MAX_LEN_DIGITS + 1)
        if colon < 0:
            raise ValueError(f"spool file: field {i + 1} has no length")
        n = _digits(data[pos:colon], "field length")
        end = colon + 1 + n
        if data[end : end + 1] != b"\n":
            raise ValueError(f"spool file: field {i + 1} is truncated or has no newline")
        parts.append(data[colon + 1 : end])
        pos = end + 1
    if pos != len(data):
        raise ValueError("spool file: bytes after the last field")
    received, observer, source, env_blob, stdin = parts
    negative = received.startswith(b"-")
    received_us = _digits(received[1:] if negative else received, "receive time")
    try:
        source_text = source.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("spool file: source is not ASCII") from None
    return (-received_us if negative else received_us,
            observer.decode("utf-8", "surrogateescape"), source_text, env_blob, stdin)


def put(directory: str, item: tuple, gid: int | None = None) -> str:
    """Write ``item`` durably into the spool; returns its path.

    The spool is created 0700 (it holds raw events), or 0750 and owned by group ``gid``
    (``--store-group``); a file is 0600, or 0640 with the spool's group when the spool is
    group-readable. The file is created ``O_EXCL`` and ``O_NOFOLLOW`` under a random
    temporary name and renamed into place, so no symlink planted in the spool is ever
    written through.
    """
    _make_dir(directory, gid)
    shared = _shared_gid(directory)
    name = f"{item[0]:020d}-{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}"
    tmp = os.path.join(directory, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        if shared is not None:
            os.fchown(fd, -1, shared)
            os.fchmod(fd, 0o640)
        data = memoryview(encode(item))
        while data:  # os.write may write less than asked (a full disk, a signal)
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    path = os.path.join(directory, name)
    os.replace(tmp, path)  # rename() replaces a symlink at ``path``, never follows it
    files.fsync_dir(directory)
    return path


def _make_dir(directory: str, gid: int | None) -> None:
    """Create a spool directory: 0700, or 0750 owned by group ``gid``, whatever the umask
    (one that exists is left as it is: ``init --store-group`` changes it)."""
    os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)  # the base dir, if new
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return
    if gid is not None:
        os.chown(directory, -1, gid)
        os.chmod(directory, 0o750)


def _shared_gid(directory: str) -> int | None:
    """The spool's group if the spool is group-readable (its files then are too)."""
    st = os.stat(directory)
    return st.st_gid if st.st_mode & stat.S_IRGRP else None


def _read(path: str) -> tuple:
    """Decode one spool file; OSError or ValueError if it cannot be taken in.

    ``O_NOFOLLOW`` and the regular-file check: a symlink or FIFO in the spool is not an event
    (reading through a symlink would let whoever planted it record any file into the log).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return decode(b"".join(chunks))


def _scan(directory: str) -> tuple[list[tuple[str, tuple]], list[str]]:
    """``(good files with their items, unreadable paths)``, each in arrival order."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    good, bad = [], []
    for name in names:
        path = os.path.join(directory, name)
        try:
            good.append((path, _read(path)))
        except FileNotFoundError:
            continue  # taken in and removed by another run meanwhile
        except OSError as e:
            # Out of fds or memory says nothing about the file: try it again next run.
            if e.errno not in _TRANSIENT:
                bad.append(path)
        except ValueError:
            bad.append(path)
    return good, bad


def scan(directory: str) -> tuple[list[tuple[str, tuple]], list[str]]:
    """``(pending, unreadable)``: the spooled events in arrival order as ``(path, item)``,
    and the paths of files that cannot be read or decoded (never deleted), each file read
    once."""
    return _scan(directory)


def unreadable(directory: str) -> list[str]:
    """Paths of the spool's ``*.event`` files that cannot be read or decoded, in order.

    :func:`scan` sets them apart, so without this nobody would learn they exist.
    """
    return _scan(directory)[1]


def waiting(directory: str) -> int | None:
    """How many event files wait in the spool (not reading them: a cheap count for the
    metrics); 0 without a spool, None if it cannot be listed."""
    try:
        return sum(1 for n in os.listdir(directory) if n.endswith(SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except OSError:
        return None


def quarantine(directory: str, paths: list[str]) -> list[str]:
    """Move spool files into ``<directory>/unreadable/`` (created 0700, or 0750 with the
    spool's group when the spool is group-readable); return the new paths.

    Kept for an operator, never deleted, and no longer retried. Only files directly in
    ``directory`` are moved (a rename, so the bytes are untouched); an existing file of the
    same name there is never replaced. Both directories are fsynced so the move is durable.
    """
    target = os.path.join(directory, UNREADABLE)
    _make_dir(target, _shared_gid(directory))
    st = os.lstat(target)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{target!r} is not a directory; spool files not quarantined")
    here = os.path.realpath(directory)
    moved = []
    for path in paths:
        name = os.path.basename(path)
        if os.path.realpath(os.path.dirname(path) or ".") != here or not name:
            continue
        dest = os.path.join(target, name)
        n = 0
        while os.path.lexists(dest):
            n += 1
            dest = os.path.join(target, f"{name}.{n}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            continue
        moved.append(dest)
    if moved:
        files.fsync_dir(target)
        files.fsync_dir(directory)
    return moved


def remove(paths: list[str]) -> None:
    """Delete spool files once their events are committed (missing ones are fine)."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
