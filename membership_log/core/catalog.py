"""Droonga's catalog.json: which engine nodes make up the cluster.

Pure: bytes in, a :data:`Catalog` and warnings out; never raises, for any bytes. The catalog
file is operator input read by a root-run handler, so hostile or broken content (nesting a
thousand levels deep, a port of five thousand digits) must become a warning, not a crash that
would stop every later event from being recorded. The handler parses a catalog only when its
bytes changed, so ``json`` is imported lazily, off the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

from .records import record

#: An engine node: ``id`` is ``host:port/tag`` (e.g. ``192.168.100.50:10031/droonga``).
Node = record("Node", "id host port tag")

#: ``nodes``: every node the catalog names, sorted by id, each once. ``cluster_id``: the id
#: Droonga 1.1 computes for it (:func:`membership_log.core.droonga.cluster_id`, read once
#: here, at parse time), None where Droonga cannot load it: a 1.1 engine tags its Serf agent
#: with it, and the droonga-1.1 live file keeps only the members carrying it.
Catalog = record("Catalog", "version nodes cluster_id", defaults=(None,))

#: A slice of a replica: its volume ``address`` and ``node`` id, or (a volume that holds
#: ``replicas`` again) ``replicas``: a tuple of nested replicas, each a tuple of slices.
Slice = record("Slice", "label address node replicas")

#: A dataset: ``replicas`` is a tuple of replicas, each a tuple of :data:`Slice`.
Dataset = record("Dataset", "name replicas")

_EXPECTED = "<host:port/tag.name>"

#: A catalog file larger than this is not read (a real one is a few KB; /dev/zero at its path
#: would be endless). Whoever reads the file (the handler, ``init``, ``doctor``) passes this.
CATALOG_LIMIT = 16 * 1024 * 1024

#: How deep replicas may nest inside volumes (and v1 ``zones`` inside lists). Real catalogs
#: nest once or twice; a fixed bound keeps our own walk far from Python's recursion limit.
MAX_DEPTH = 32

#: A port is a TCP port: at most 5 ASCII digits, at most 65535. Checking the length before
#: ``int()`` also keeps a 5000-digit "port" from tripping Python's int-conversion limit.
MAX_PORT = 65535

#: At most this many warnings are kept; the rest are counted in one last line, so a catalog
#: with a million bad addresses cannot flood stderr or the replay output.
MAX_WARNINGS = 50

_TOO_DEEP = f"catalog: replicas or zones nested deeper than {MAX_DEPTH} levels were skipped"


def _show(value: object, limit: int = 80) -> str:
    """A short ``repr`` for a warning that cannot raise or grow without bound.

    ``repr`` of a deeply nested list raises RecursionError and ``repr`` of a huge int raises
    ValueError, so containers are named by type and long text is cut.
    """
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if -10**limit < value < 10**limit else "a very large number"
    return f"a JSON {'object' if isinstance(value, dict) else type(value).__name__}"


def _warn_once(warnings: list[str], text: str) -> None:
    if text not in warnings:
        warnings.append(text)


def _cap(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return warnings[:MAX_WARNINGS] + [f"(+{len(warnings) - MAX_WARNINGS} more catalog warnings)"]


def parse_node_id(text: object) -> Node | None:
    """``host:port/tag`` or a volume address ``host:port/tag.name`` -> its :data:`Node`.

    None for anything else, including a port that is not 1-5 ASCII digits up to 65535.
    """
    if not isinstance(text, str):
        return None
    hostport, slash, rest = text.partition("/")
    host, colon, port = hostport.rpartition(":")
    tag = rest.split(".", 1)[0]
    if not (slash and colon and host and tag and port.isascii() and port.isdigit()):
        return None
    if len(port) > 5 or int(port) > MAX_PORT:
        return None
    if any(c.isspace() for c in text):
        return None
    return Node(f"{host}:{port}/{tag}", host, int(port), tag)


def _slice_addresses(replicas: tuple) -> Iterator[str]:
    """Every volume address under parsed replicas, following nested replicas, in order.

    An explicit stack instead of recursion: no depth of nesting can raise RecursionError.
    """
    stack = [_slices_of(replicas)]
    while stack:
        sl = next(stack[-1], None)
        if sl is None:
            stack.pop()
            continue
        if sl.address is not None:
            yield sl.address
        if sl.replicas:
            stack.append(_slices_of(sl.replicas))


def _slices_of(replicas: tuple) -> Iterator:
    """The slices of every replica in ``replicas``, in order (one level, no recursion)."""
    return (sl for replica in replicas for sl in replica)


_END = object()


def _v1_addresses(zones: object, warnings: list[str] | None = None) -> list[object]:
    """v1 ``zones``: node ids, possibly in nested lists (at most :data:`MAX_DEPTH` deep).

    Iterative, with one warning for whatever lies deeper, so no nesting raises RecursionError.
    """
    out: list[object] = []
    stack: list[tuple[Iterator[object], int]] = []
    if not isinstance(zones, list):
        return [zones]
    stack.append((iter(zones), 1))
    while stack:
        it, depth = stack[-1]
        z = next(it, _END)
        if z is _END:
            stack.pop()
        elif not isinstance(z, list):
            out.append(z)
        elif depth >= MAX_DEPTH:
            if warnings is not None:
                _warn_once(warnings, _TOO_DEEP)
        else:
            stack.append((iter(z), depth + 1))
    return out


def _load(data: bytes) -> tuple[object, str | None]:
    """``json.loads`` that never raises: (document, None) or (None, the reason).

    The C decoder raises RecursionError for deep nesting (``[`` * 5000) and can raise
    MemoryError; both are the catalog's fault, not ours, so they become a reason too.
    """
    import json  # only when a catalog changed: json costs ~9 ms of import

    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None, "catalog is not bytes"
    try:
        return json.loads(bytes(data).decode("utf-8")), None
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"catalog is not valid JSON: {_show(str(e), 200)}"
    except RecursionError:
        return None, "catalog is not usable JSON: nested too deeply"
    except MemoryError:
        return None, "catalog is not usable JSON: too large to parse"


def parse(data: bytes) -> tuple[Catalog | None, list[str]]:
    """Parse catalog bytes. ``None`` (with the reason in warnings) if it names no usable node.

    Never raises: a catalog is recorded before it is parsed, and a parse error must not stop
    the handler from recording Serf's events.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None, ["catalog is not bytes"]
    if not bytes(data).strip():
        return None, ["catalog file missing, unreadable or empty; the last good catalog stays "
                      "in force"]
    doc, reason = _load(data)
    if reason is not None:
        return None, [reason]
    if not isinstance(doc, dict):
        return None, ["catalog is not a JSON object"]
    warnings: list[str] = []
    version = doc.get("version")
    datasets = doc.get("datasets")
    if version == 1 or (version is None and "zones" in doc):
        addresses = _v1_addresses(doc.get("zones", []), warnings)
    elif isinstance(datasets, dict):
        if version != 2:
            warnings.append(f"catalog version {_show(version)} is not 2; read as version 2")
        addresses = []
        for name, dataset in sorted(datasets.items()):
            if not isinstance(dataset, dict):
                warnings.append(f"catalog: dataset {_show(name)} is not an object")
                continue
            addresses.extend(_slice_addresses(_replicas(dataset.get("replicas", []), warnings)))
    else:
        return None, [f"catalog version {_show(version)} has neither datasets nor zones"]

    nodes: dict[str, Node] = {}
    for address in addresses:
        node = parse_node_id(address)
        if node is None:
            warnings.append(f"catalog: volume address must be {_EXPECTED}: {_show(address)}")
            continue
        nodes.setdefault(node.id, node)
    if not nodes:
        return None, _cap(warnings + ["catalog names no node"])
    from .droonga import cluster_id

    return (Catalog(_scalar(version), tuple(nodes[k] for k in sorted(nodes)), cluster_id(doc)),
            _cap(warnings))


def _scalar(version: object) -> object:
    """The catalog's ``version`` as kept in a :data:`Catalog`: a JSON scalar as is, anything
    else (a list nested 900 deep, a 4000-digit number) as its short description, so that
    code that prints, compares or marshals catalogs never meets a hostile value."""
    if version is None or isinstance(version, (bool, float)):
        return version
    if isinstance(version, int) and -2**63 <= version < 2**63:
        return version
    if isinstance(version, str) and len(version) <= 80:
        return version
    return _show(version)


def _label(sl: object, i: int) -> str:
    if not isinstance(sl, dict):
        return str(i)
    label = sl.get("label", f"slice{i:03d}")
    return label if isinstance(label, str) else _show(label)


def _replicas(replicas: object, warnings: list[str], depth: int = 1) -> tuple:
    """Parsed replicas; volumes holding replicas again are followed :data:`MAX_DEPTH` deep."""
    if not isinstance(replicas, list):
        warnings.append(f"catalog: replicas must be a list, got {type(replicas).__name__}")
        return ()
    if depth > MAX_DEPTH:
        _warn_once(warnings, _TOO_DEEP)
        return ()
    out = []
    for replica in replicas:
        slices = replica.get("slices") if isinstance(replica, dict) else None
        if not isinstance(slices, list):
            warnings.append("catalog: a replica without a list of slices was skipped")
            continue
        parsed = []
        for i, sl in enumerate(slices):
            volume = sl.get("volume") if isinstance(sl, dict) else None
            label = _label(sl, i)
            if not isinstance(volume, dict):
                warnings.append("catalog: a slice without a volume was skipped")
                continue
            if "replicas" in volume:
                nested = _replicas(volume["replicas"], warnings, depth + 1)
                parsed.append(Slice(label, None, None, nested))
                continue
            address = volume.get("address")
            node = parse_node_id(address)
            if node is None:
                warnings.append(f"catalog: volume address must be {_EXPECTED}: {_show(address)}")
                continue
            parsed.append(Slice(label, address, node.id, ()))
        out.append(tuple(parsed))
    return tuple(out)


def parse_datasets(data: bytes) -> tuple[list, list[str]]:
    """The datasets of a version 2 catalog, with their replicas and slices (for routing).

    Never raises (``membership route`` reads operator files): an unusable catalog gives no
    datasets and the reason.
    """
    doc, reason = _load(data)
    if reason is not None:
        return [], [reason]
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    if (not isinstance(doc, dict) or not isinstance(datasets, dict)
            or doc.get("version") == 1):
        return [], ["catalog has no version 2 datasets to route"]
    warnings: list[str] = []
    out = []
    for name, dataset in sorted(datasets.items()):
        if isinstance(dataset, dict):
            out.append(Dataset(name, _replicas(dataset.get("replicas", []), warnings)))
    return out, _cap(warnings)
