"""Opening files that someone else may have planted: the catalog, lock files.

The handler runs as whatever user runs Serf (often root), in a base dir other people may
write to. Two habits keep a planted path from hurting it: read only regular files, and
never create a file through a symlink. Stdlib only and nothing heavy (no pathlib, json or
re): this module is on the handler's hot path.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def is_shared(st: os.stat_result) -> bool:
    """Whether a store (or spool) is group-readable: it has a store group
    (:mod:`membership_log.stores.access`)."""
    return bool(st.st_mode & stat.S_IRGRP)


def _kind(mode: int) -> str:
    """What a non-regular file is, for a one-line reason."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def read_regular(path: str, limit: int) -> tuple[bytes | None, str | None]:
    """The bytes of the regular file at ``path`` (symlinks followed): ``(data, None)``.

    ``(None, None)`` if it does not exist; ``(None, reason)`` (one line) if it cannot be used:
    not a regular file, larger than ``limit`` bytes, or unreadable. Never raises OSError.

    Why: a FIFO at ``catalog.json`` blocked the handler forever in ``open()``, and a symlink
    to ``/dev/zero`` grew its memory without bound. So the path is stat()ed first (a device is
    never even opened, since opening one can have effects), opened non-blocking, fstat()ed
    again on the open fd (the path may have been swapped in between), and at most
    ``limit + 1`` bytes are read (the file may grow after fstat).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{path!r} is {_kind(st.st_mode)}, not a regular file"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot open {path!r}: {_why(e)}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{path!r} is {_kind(st.st_mode)}, not a regular file"
        if st.st_size > limit:
            return None, f"{path!r} is larger than {limit} bytes ({st.st_size})"
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            return None, f"{path!r} is larger than {limit} bytes"
        return b"".join(chunks), None
    except OSError as e:
        return None, f"cannot read {path!r}: {_why(e)}"
    finally:
        os.close(fd)


def open_lock(path: str) -> int:
    """An fd to ``flock()`` for the lock file at ``path``, created 0600 if missing.

    Raises OSError (with a message naming the path and the problem) if the path is a symlink,
    not a regular file, has other hard links, or is not owned by the effective user.

    Why: lock files used to be opened through whatever sat at the path, so a symlink planted
    there made a root handler create files wherever it pointed; and a 0644 lock file let any
    local user flock() it and stall every handler run. ``O_NOFOLLOW`` refuses the symlink
    (no file is created at its target), the owner check refuses a file another user made, a
    hard-link check refuses someone else's file linked in, and a mode looser than 0600 is
    tightened. ``O_NONBLOCK`` keeps a FIFO at the path from blocking the open.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"lock file {path!r} is a symbolic link; refusing to "
                                   f"follow it") from None
        if e.errno == errno.EISDIR:
            raise OSError(e.errno, f"lock file {path!r} is a directory") from None
        raise OSError(e.errno, f"cannot open lock file {path!r}: {_why(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"lock file {path!r} is {_kind(st.st_mode)}, not a "
                                        f"regular file")
        if st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"lock file {path!r} is owned by uid {st.st_uid}, not "
                                       f"by this user (uid {os.geteuid()})")
        if st.st_nlink != 1:
            raise OSError(errno.EPERM, f"lock file {path!r} has {st.st_nlink} hard links; a "
                                       f"lock file must have exactly one")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_dir(path: str, mode: int = 0o755) -> None:
    """Make the directory ``path`` (one level: its parent must exist) with exactly ``mode``,
    whatever the umask, unless a directory is there already. OSError (naming the path) if
    something else is, or a symbolic link that neither this user nor root owns.

    Why: the handler, often root, writes ``<base-dir>/state/cluster-state.json`` for Droonga
    1.1 engines in a base dir other users may write to; a ``state`` link planted there
    would send its writes wherever the link points. The mode is set through a descriptor
    opened without following links, so a path swapped after ``mkdir`` is never chmod()ed.
    """
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, os.geteuid()):
                raise OSError(errno.EPERM, f"{path!r} is a symbolic link owned by uid "
                                           f"{st.st_uid}; refusing to write through it") from None
            st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            what = "a regular file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
            raise OSError(errno.ENOTDIR, f"{path!r} is {what}, not a directory") from None
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(directory: str) -> None:
    """Make a rename or unlink in ``directory`` durable (the one directory fsync)."""
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _sweep(directory: str, base: str) -> None:
    prefix = f".{base}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp") and len(name) == len(prefix) + 20:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def write_atomic(path: str, data: bytes, mode: int = 0o644, sweep: bool = False) -> bool:
    """Replace ``path`` with ``data`` atomically and durably; skip if it already holds them.

    Temporary file in the same directory (an unpredictable name, created exclusively, never
    through a symlink), fsync, ``os.replace``, fsync of the directory. Returns whether it
    wrote. Every rewrite makes every engine reload, hence the skip. ``sweep``: the caller
    is the only possible writer right now (it holds the store's write lock), so any
    temporary file of this path is a leftover of a writer killed mid-way: remove it.
    """
    if read_bytes(path) == data:
        return False
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if sweep:
        _sweep(directory, base)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    tmp = os.path.join(directory, f".{base}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)
    return True
