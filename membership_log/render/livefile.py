"""The live-node file Droonga's engine reads, rendered and written.

:func:`render` is pure and deterministic: equal live sets give equal bytes, identical to
``json.dumps(obj, indent=2, sort_keys=True) + "\\n"`` (a test holds it to that). It is written
by hand because importing ``json`` costs the handler about 9 ms (README, "Performance").

:func:`write_atomic` never leaves a moment without a complete file: Droonga's loader reads a
missing or half file as "no node is live", i.e. a cluster outage.
"""

from __future__ import annotations

import os

from ..core import fold as project

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}


def json_string(s: str) -> str:
    """A JSON string literal, ASCII-only, escaped exactly as ``json.dumps`` does."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(f"\\u{0xD800 | (o >> 10):04x}\\u{0xDC00 | (o & 0x3FF):04x}")
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def _nested(key: str, values: dict[str, str]) -> bytes:
    """``{node: {key: value}}`` laid out as ``json.dumps(indent=2, sort_keys=True)`` does;
    ``values`` holds each node's value already as JSON text."""
    if not values:
        return b"{}\n"
    items = [f'  {json_string(node)}: {{\n    "{key}": {values[node]}\n  }}'
             for node in sorted(values)]
    return ("{\n" + ",\n".join(items) + "\n}\n").encode("ascii")


def render(live: dict[str, str]) -> bytes:
    """The live file (SPEC "The live file"): live node -> ``{"serfAddress": address}``."""
    return _nested("serfAddress", {node: json_string(a) for node, a in live.items()})


def render_cluster_state(nodes: dict[str, bool]) -> bytes:
    """Later Droonga releases' ``cluster-state.json``: every node, ``{"live": bool}``."""
    return _nested("live", {node: "true" if live else "false" for node, live in nodes.items()})


def render_view(nodes: dict, fmt: str = "droonga") -> bytes:
    """The live file for a view (node -> NodeView), in ``fmt`` (``droonga`` or
    ``cluster-state``)."""
    if fmt == "cluster-state":
        return render_cluster_state({n.name: n.live for n in nodes.values() if n.in_catalog})
    return render(project.live_of(nodes))


def render_state(state: project.State, fmt: str = "droonga") -> bytes:
    """The live file for a fold's state."""
    return render_view(project.view(state), fmt)


def render_compact(value: object) -> str:
    """Compact JSON (``separators=(",", ":")``) for str, int, bool, None, list and dict."""
    if isinstance(value, str):
        return json_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(
            json_string(k) + ":" + render_compact(v) for k, v in value.items()
        ) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def read(path: str) -> bytes | None:
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
    if read(path) == data:
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
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return True
