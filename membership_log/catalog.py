"""Droonga's catalog.json: which engine nodes make up the cluster.

Pure: bytes in, a :data:`Catalog` and warnings out; never raises. The handler parses a
catalog only when its bytes changed, so ``json`` is imported lazily, off the hot path.
"""

from __future__ import annotations

from collections import namedtuple

#: An engine node: ``id`` is ``host:port/tag`` (e.g. ``192.168.100.50:10031/droonga``).
Node = namedtuple("Node", "id host port tag")

#: ``nodes``: every node the catalog names, sorted by id, each once.
Catalog = namedtuple("Catalog", "version nodes")

#: A slice of a replica: its volume ``address`` and ``node`` id, or (a volume that holds
#: ``replicas`` again) ``replicas``: a tuple of nested replicas, each a tuple of slices.
Slice = namedtuple("Slice", "label address node replicas")

#: A dataset: ``replicas`` is a tuple of replicas, each a tuple of :data:`Slice`.
Dataset = namedtuple("Dataset", "name replicas")

_EXPECTED = "<host:port/tag.name>"


def parse_node_id(text: object) -> Node | None:
    """``host:port/tag`` or a volume address ``host:port/tag.name`` -> its :data:`Node`."""
    if not isinstance(text, str):
        return None
    hostport, slash, rest = text.partition("/")
    host, colon, port = hostport.rpartition(":")
    tag = rest.split(".", 1)[0]
    if not (slash and colon and host and tag and port.isdigit() and port.isascii()):
        return None
    if any(c.isspace() for c in text):
        return None
    return Node(f"{host}:{port}/{tag}", host, int(port), tag)


def _slice_addresses(replicas: tuple):
    """Every volume address under parsed replicas, following nested replicas."""
    for replica in replicas:
        for sl in replica:
            if sl.address is not None:
                yield sl.address
            yield from _slice_addresses(sl.replicas)


def _v1_addresses(zones: object):
    """v1 ``zones``: node ids, possibly in nested lists."""
    if isinstance(zones, list):
        for z in zones:
            yield from _v1_addresses(z)
    else:
        yield zones


def parse(data: bytes) -> tuple[Catalog | None, list[str]]:
    """Parse catalog bytes. ``None`` (with the reason in warnings) if it names no usable node."""
    if not data.strip():
        return None, ["catalog file missing, unreadable or empty; the last good catalog stays "
                      "in force"]
    import json  # only when a catalog changed: json costs ~9 ms of import

    warnings: list[str] = []
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, [f"catalog is not valid JSON: {e}"]
    if not isinstance(doc, dict):
        return None, ["catalog is not a JSON object"]
    version = doc.get("version")
    datasets = doc.get("datasets")
    if version == 1 or (version is None and "zones" in doc):
        addresses = list(_v1_addresses(doc.get("zones", [])))
    elif isinstance(datasets, dict):
        if version != 2:
            warnings.append(f"catalog version {version!r} is not 2; read as version 2")
        addresses = []
        for name, dataset in sorted(datasets.items()):
            if not isinstance(dataset, dict):
                warnings.append(f"catalog: dataset {name!r} is not an object")
                continue
            addresses.extend(_slice_addresses(_replicas(dataset.get("replicas", []), warnings)))
    else:
        return None, [f"catalog version {version!r} has neither datasets nor zones"]

    nodes: dict[str, Node] = {}
    for address in addresses:
        node = parse_node_id(address)
        if node is None:
            warnings.append(f"catalog: volume address must be {_EXPECTED}: {address!r}")
            continue
        nodes.setdefault(node.id, node)
    if not nodes:
        return None, warnings + ["catalog names no node"]
    return Catalog(version, tuple(nodes[k] for k in sorted(nodes))), warnings


def _replicas(replicas: object, warnings: list[str]) -> tuple:
    if not isinstance(replicas, list):
        warnings.append(f"catalog: replicas must be a list, got {type(replicas).__name__}")
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
            label = str(sl.get("label", f"slice{i:03d}")) if isinstance(sl, dict) else str(i)
            if not isinstance(volume, dict):
                warnings.append("catalog: a slice without a volume was skipped")
                continue
            if "replicas" in volume:
                parsed.append(Slice(label, None, None, _replicas(volume["replicas"], warnings)))
                continue
            node = parse_node_id(volume.get("address"))
            if node is None:
                warnings.append(f"catalog: volume address must be {_EXPECTED}: "
                                f"{volume.get('address')!r}")
                continue
            parsed.append(Slice(label, volume["address"], node.id, ()))
        out.append(tuple(parsed))
    return tuple(out)


def parse_datasets(data: bytes) -> tuple[list, list[str]]:
    """The datasets of a version 2 catalog, with their replicas and slices (for routing).
    Never raises: an unusable catalog gives no datasets and the reason."""
    import json

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return [], [f"catalog is not valid JSON: {e}"]
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(datasets, dict) or doc.get("version") == 1:
        return [], ["catalog has no version 2 datasets to route"]
    warnings: list[str] = []
    out = []
    for name, dataset in sorted(datasets.items()):
        if isinstance(dataset, dict):
            out.append(Dataset(name, _replicas(dataset.get("replicas", []), warnings)))
    return out, warnings
