"""Who may read a node store: the store group (``--store-group``), and what to say when a
user may not.

The permission model (SPEC "Deployment"): the store's writer (the user Serf runs the
handler as) owns the store, its ``-wal`` and ``-shm`` files and the spool. Without a store
group they are its alone (files 0600, directories 0700). With one, they belong to that
group and are group-readable (files 0640, directories 0750), so that readers (``serve``,
``ship``, ``doctor``) can run as a member of the group, with no write access to anything.

What a reader of a WAL-mode SQLite store needs, found by trying (SQLite 3.40, see
tests/test_deploy.py): read access to the database and to its ``-wal`` and ``-shm`` files,
which must exist. SQLite then maps the shared memory read-only (supported since 3.22). A
read-only open (``?mode=ro``) adds nothing to that, and cannot help when the files are
missing; ``immutable=1`` would read a live store without locks (torn reads while a handler
checkpoints); group write on ``-shm`` would let any reader corrupt the index the writer
trusts. The catch: SQLite deletes ``-wal`` and ``-shm`` when the last connection closes, and
a reader cannot create them again (no write access to the directory, by design). So every
writer puts them back, empty, when it closes a group-readable store
(:func:`keep_wal_files`); an empty WAL is the same as none.

Stdlib only, and nothing heavy at import (``pwd`` and ``grp`` load only to word an error):
:func:`keep_wal_files` runs on the handler's hot path for a shared store. Whether a store is
shared (:func:`~membership_log.stores.files.is_shared`) lives in ``files``: the handler asks
it of every store, and loads this module only for a shared one or to word an error.
"""

from __future__ import annotations

import os
import stat

from .files import is_shared

#: Modes with a store group, and without (as before there was one).
SHARED_FILE, SHARED_DIR = 0o640, 0o750
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
#: The files beside a WAL-mode database that its readers need.
WAL_SUFFIXES = ("-wal", "-shm")


def group_id(group: str) -> int:
    """The gid of ``group`` (a name or a number); a one-line error if there is none."""
    import grp

    from ..core.errors import MembershipError

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise MembershipError(f"--store-group {group!r}: no such group on this machine "
                              f"(create it: groupadd {group})") from None


def apply(path: str, gid: int | None, directory: bool = False) -> None:
    """Give ``path`` the model's mode and group: group-readable and owned by group ``gid``
    (0640 / 0750), or, without a gid, left as it is unless looser than owner-only (an
    existing share is not revoked behind the operator's back; anything for others is)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return  # never chmod through a planted symlink
    if gid is not None:
        if st.st_gid != gid:
            os.chown(path, -1, gid)
        mode = SHARED_DIR if directory else SHARED_FILE
    else:
        mode = stat.S_IMODE(st.st_mode) & (0o750 if directory else 0o640)
        mode |= PRIVATE_DIR if directory else PRIVATE_FILE
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def keep_wal_files(path: str, st: os.stat_result) -> None:
    """After the last close of a group-readable store: put back the empty ``-wal`` and
    ``-shm`` files SQLite deleted, with the database's owner, group and mode, so that its
    readers can open it (see the module's docstring). Created exclusively (a file that is
    there, made by a writer that opened meanwhile, is left alone) and never through a
    symlink. Never raises: the store is closed and whole by now."""
    mode = stat.S_IMODE(st.st_mode) & 0o660
    root = os.geteuid() == 0
    for suffix in WAL_SUFFIXES:
        try:
            fd = os.open(path + suffix, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode)
        except OSError:
            continue  # there already (a writer opened it meanwhile), or we may not
        try:
            # As SQLite does for the files it creates as root: the database's owner keeps
            # access; a non-root writer can give it the group if it is a member.
            os.fchown(fd, st.st_uid if root else -1, st.st_gid)
            os.fchmod(fd, mode)
        except OSError:
            pass
        finally:
            os.close(fd)


def share_store(path: str, gid: int | None) -> None:
    """Apply the model to a node store file and the files beside it, and make sure its
    readers find ``-wal`` and ``-shm`` (a store made before there was a group has none)."""
    apply(path, gid)
    for suffix in WAL_SUFFIXES:
        try:
            apply(path + suffix, gid)
        except FileNotFoundError:
            pass
    st = os.stat(path)
    if is_shared(st) and _in_wal_mode(path):
        keep_wal_files(path, st)


def _in_wal_mode(path: str) -> bool:
    """Whether the database header says WAL (file format versions 2 at bytes 18 and 19): a
    -wal file beside a rollback-journal database would switch it to WAL when opened."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def share_spool(directory: str, gid: int | None) -> None:
    """Apply the model to the spool, its ``unreadable/`` directory and the files in both
    (nothing if there is no spool yet)."""
    for d in (directory, os.path.join(directory, "unreadable")):
        try:
            apply(d, gid, directory=True)
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p) and not os.path.islink(p) and not name.startswith(".lock"):
                apply(p, gid)


# -- words for a refusal ----------------------------------------------------------------------


def user_label() -> str:
    """``user NAME (uid N)``: who this process is, for a refusal."""
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


def owner_of(st: os.stat_result) -> tuple[str, str]:
    """(owner, group) names of a file, numbers where the names are unknown."""
    import grp
    import pwd

    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def describe(st: os.stat_result) -> str:
    owner, group = owner_of(st)
    return f"owner {owner}, group {group}, mode {stat.S_IMODE(st.st_mode):04o}"


def _in_group(gid: int) -> bool:
    return gid == os.getegid() or gid in os.getgroups()


def _bits(st: os.stat_result, want: int) -> bool:
    """Whether the mode bits alone grant this process ``want`` (os.R_OK, W_OK, X_OK): the
    owner's, the group's or the others' bits, as the kernel picks them (root's privileges
    aside, so that an immutable file or a read-only mount is not called a permission
    problem)."""
    mode = st.st_mode
    shift = 6 if st.st_uid == os.geteuid() else 3 if _in_group(st.st_gid) else 0
    return (mode >> shift) & want == want


def _refused(path: str, want: int) -> os.stat_result | None:
    """The stat of ``path`` if this process may not ``want`` it because of its mode bits."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if os.access(path, want) or _bits(st, want):
        return None
    return st


def _chosen(st: os.stat_result) -> bool:
    """Whether a file's group looks chosen (a store group), not just its owner's own (root's,
    or the owner's primary group): only then is joining it the advice."""
    if st.st_gid == 0:
        return False
    try:
        import pwd

        return pwd.getpwuid(st.st_uid).pw_gid != st.st_gid
    except KeyError:
        return True


def _fix(path: str, st: os.stat_result, want: int, action: str) -> str:
    """What to change so that this user may ``want`` the file at ``path``."""
    owner, group = owner_of(st)
    me = _user_name()
    if want & os.W_OK:
        return (f"only its owner {owner} writes it: run this as {owner} (the user whose "
                f"handler writes the store)")
    bit = stat.S_IRGRP if want & os.R_OK else stat.S_IXGRP
    if st.st_mode & bit and not _in_group(st.st_gid) and _chosen(st):
        return f"add {me} to group {group} (usermod -aG {group} {me}), then start it again"
    if not want & os.R_OK:  # a directory on the way: not one --store-group makes
        return (f"chmod o+x {path}, or give it the store group: chgrp GROUP {path} && "
                f"chmod g+x {path}")
    if _in_group(st.st_gid):
        return (f"run the handler, init or db upgrade with --store-group {group} as {owner} "
                f"(or chmod g+r {path})")
    return (f"run the handler, init or db upgrade with --store-group GROUP (or "
            f"MEMBERSHIP_STORE_GROUP) as {owner}, and add {me} to GROUP (usermod -aG GROUP "
            f"{me})")


def denied(path: str, action: str = "read") -> str | None:
    """One line saying which file this user may not ``action`` ("read" or "write") for
    the store at ``path``, which user it is, and what to change; None when permissions are
    not what stands in the way."""
    me = user_label()
    head = f"cannot {action} store {path} as {me}"
    here = os.path.dirname(os.path.abspath(path))
    parts = here.split(os.sep)
    for i in range(1, len(parts) + 1):
        d = os.sep.join(parts[:i]) or os.sep
        st = _refused(d, os.X_OK)
        if st is not None:
            return (f"{head}: no search permission on the directory {d} ({describe(st)}): "
                    f"{_fix(d, st, os.X_OK, action)}")
    want = os.R_OK | (os.W_OK if action == "write" else 0)
    for p in (path, *(path + s for s in WAL_SUFFIXES)):
        st = _refused(p, want)
        if st is not None:
            verb = "write" if action == "write" and _bits(st, os.R_OK) else "read"
            return f"{head}: it may not {verb} {p} ({describe(st)}): {_fix(p, st, want, action)}"
    if action == "read" and not os.access(here, os.W_OK):
        missing = [path + s for s in WAL_SUFFIXES if not os.path.exists(path + s)]
        if missing and os.path.exists(path):
            try:
                st = os.stat(path)
            except OSError:
                return None
            owner, _ = owner_of(st)
            return (f"{head}: {' and '.join(missing)} are missing, and only the store's "
                    f"writer can create them in {here}: run membership init --store-group "
                    f"GROUP as {owner} (its writers keep them from then on)")
    return None
