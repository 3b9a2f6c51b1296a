"""Droonga 1.1's view of a Serf cluster: cluster id, ``cluster-state.json`` values, routing
rules and the user events / queries its handler acts on.

Pure and stdlib-only. :func:`cluster_state` runs on the handler's hot path, so nothing is
imported at module level but :mod:`.records`; what only a catalog change or a
``route`` needs (SHA-1, ``re``, ``json``, ``datetime``) is imported where it is used.

Every rule here was read off droonga-engine v1.1.1 (``lib/droonga/serf.rb``,
``engine_node.rb``, ``cluster.rb``, ``forward_buffer.rb``, ``catalog/*.rb``,
``serf/remote_command.rb``, ``command/serf_event_handler.rb``); where Droonga would raise
(and so do nothing, or crash the engine) the function here answers None or skips, never
raises. The places where this differs from Droonga on purpose are named in each docstring.
"""

from __future__ import annotations

from .records import record

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Mapping

#: Where a 1.1 engine reads the file, under its base directory (``Path.cluster_state``).
STATE_FILE = "state/cluster-state.json"

SERVICE_PROVIDER = "service-provider"
ABSORB_SOURCE = "absorb-source"
ABSORB_DESTINATION = "absorb-destination"
ROLES = (SERVICE_PROVIDER, ABSORB_SOURCE, ABSORB_DESTINATION)

# The Serf tags a 1.1 engine sets on its own agent (``serf/tag.rb``).
TAG_TYPE = "type"
TAG_ROLE = "role"
TAG_INTERNAL_NAME = "internal-name"
TAG_CLUSTER_ID = "cluster_id"
TAG_ACCEPT_NEWER_THAN = "accept-newer-than"
#: ``buffered-for-<node>``: set (to ``"true"``) by a sender while it holds messages for
#: ``<node>`` that it could not deliver yet, deleted once they are forwarded.
BUFFERED_PREFIX = "buffered-for-"

#: The tags a 1.1 engine sets on its agent besides ``buffered-for-<node>``, in the order
#: :func:`droonga_tags` gives them.
TAGS = (TAG_TYPE, TAG_ROLE, TAG_CLUSTER_ID, TAG_INTERNAL_NAME, TAG_ACCEPT_NEWER_THAN)


def droonga_tags(tags: dict | None) -> dict:
    """The tags of a member that matter to Droonga 1.1: :data:`TAGS` present, in that
    order, then its ``buffered-for-<node>`` tags sorted ({} for a member without any, as
    in a cluster that is no Droonga 1.1 one)."""
    if not tags:
        return {}
    out = {k: tags[k] for k in TAGS if k in tags}
    for k in sorted(k for k in tags if k.startswith(BUFFERED_PREFIX)):
        out[k] = tags[k]
    return out


def role_tag(tags: dict | None) -> str | None:
    """A member's ``role`` tag as given (None without one): what ``state`` and ``replay``
    show. Droonga reads a missing or unknown one as service-provider (:func:`normalize_role`)."""
    value = tags.get(TAG_ROLE) if tags else None
    return value if isinstance(value, str) else None


def node_roles(nodes: dict, members: dict | None) -> dict:
    """Each node's role: the :func:`role_tag` of the member its view shows (``nodes``:
    name -> a view with ``member``, e.g. the fold's NodeView; ``members``: name -> anything
    with ``tags``); None without a role tag or a member."""
    members = members or {}
    out = {}
    for name, view in nodes.items():
        m = members.get(view.member) if view.member is not None else None
        out[name] = role_tag(m.tags) if m is not None else None
    return out


#: Serf statuses as ``serf members`` prints them, plus ``reaped`` (the fold's word for a
#: member Serf has forgotten: ``serf members`` no longer lists it).
ALIVE = "alive"
REAPED = "reaped"

#: The member events Droonga's own handler rewrites the file on (``member-failed`` is not
#: among them: a failure reaches the file only with the next other member event).
DROONGA_REWRITES_ON = frozenset({"member-join", "member-leave", "member-update",
                                 "member-reap"})

#: User event / query names ``droonga-engine-serf-event-handler`` acts on. The 1.1.1 tools
#: send all of them as Serf *queries* (``Serf#send_query``); a user event of the same name
#: is handled the same way.
COMMANDS = frozenset({"change_role", "report_last_message_timestamp",
                      "accept_messages_newer_than", "join", "unjoin", "set_replicas",
                      "add_replicas", "remove_replicas"})


# -- the cluster id ------------------------------------------------------------------------


def cluster_id(doc: object) -> str | None:
    """The cluster id Droonga 1.1.1 computes for a parsed ``catalog.json``
    (``Catalog::Base#cluster_id``), or None where Droonga's loader would raise.

    Version 2: for each dataset the string ``"<name>-<node ids joined by ,>"`` (its nodes:
    every volume address under ``replicas``, nested volumes followed, each cut to
    ``host:port/tag`` with the port read as an integer, unique, sorted bytewise); the
    strings are sorted and joined by ``|``; the id is their SHA-1 in hex. No datasets at
    all is the SHA-1 of the empty string.

    Version 1: Droonga 1.1.1 means the same, but its v1 node walk matches a regexp against
    ``[range, partitions]`` pairs instead of strings, which never matches (Ruby < 3.2; it
    raises on 3.2+), so every dataset's node list comes out empty: the id is the SHA-1 of
    the sorted ``"<name>-"`` strings. That is what a 1.1.1 engine tags itself with, so it is
    what is answered here. The v1 validator (effective date, farms, zones) is not repeated.

    None: not an object, a version other than 1 or 2, or a structure Droonga's classes
    cannot walk (a dataset without ``replicas``, a volume with none of ``address``,
    ``slices``, ``replicas``, an address not ``host:port/tag[.name]``, slice weights that
    make its hash continuum raise).
    """
    if not isinstance(doc, dict):
        return None
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, (int, float)):
        return None
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict):
        return None
    parts: list[str] = []
    if version == 1:
        for name, dataset in datasets.items():
            if not _v1_walkable(dataset):
                return None
            parts.append(f"{name}-")
    elif version == 2:
        for name, dataset in datasets.items():
            if not isinstance(dataset, dict) or "replicas" not in dataset:
                return None
            nodes = _volume_nodes({"replicas": dataset["replicas"]})
            if nodes is None:
                return None
            parts.append(f"{name}-" + ",".join(sorted(set(nodes))))
    else:
        return None
    return _sha1_hex("|".join(sorted(parts)).encode("utf-8", "surrogatepass"))


def _sha1_hex(data: bytes) -> str:
    if TYPE_CHECKING:  # the builtin module has no stubs; hashlib's sha1 is the same call
        from hashlib import sha1
    else:
        try:  # the builtin module: hashlib's OpenSSL binding costs milliseconds to load
            from _sha1 import sha1
        except ImportError:  # pragma: no cover - CPython always has it
            from hashlib import sha1
    return sha1(data).hexdigest()


def _v1_walkable(dataset: object) -> bool:
    """Whether Droonga 1.1.1's v1 ``Dataset#all_nodes`` gets through ``dataset``."""
    if not isinstance(dataset, dict):
        return False
    n = dataset.get("number_of_partitions")
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return False  # Version1#prepare_data compares it with 2
    ring = dataset.get("ring")
    if not isinstance(ring, dict):
        return False
    return all(isinstance(part, dict) and isinstance(part.get("partitions"), dict)
               for part in ring.values())


#: Deeper nesting than this is refused (None) instead of walked: a real catalog nests once.
MAX_VOLUME_DEPTH = 32


def _volume_nodes(volume: object, depth: int = 0) -> list[str] | None:
    """The node ids under one raw volume (``Catalog::Volume.create``: ``address`` first,
    then ``slices``, then ``replicas``), or None where Droonga would raise."""
    if not isinstance(volume, dict) or depth > MAX_VOLUME_DEPTH:
        return None
    if "address" in volume:
        node = address_node(volume["address"])
        return None if node is None else [node]
    if "slices" in volume:
        slices = volume["slices"]
        if not isinstance(slices, list) or not all(isinstance(s, dict) for s in slices):
            return None
        if not _continuum_ok(volume.get("slicer"), slices):
            return None
        out: list[str] = []
        for s in slices:
            nodes = _volume_nodes(s.get("volume"), depth + 1)
            if nodes is None:
                return None
            out.extend(nodes)
        return out
    if "replicas" in volume:
        replicas = volume["replicas"]
        if not isinstance(replicas, list):
            return None
        out = []
        for r in replicas:
            nodes = _volume_nodes(r, depth + 1)
            if nodes is None:
                return None
            out.extend(nodes)
        return out
    return None


def _continuum_ok(slicer: object, slices: list) -> bool:
    """Whether ``SlicesVolume#compute_continuum`` (run for the default ``hash`` slicer when
    the volume is built) gets through: integer weights (``|| 1``), a non-zero total, or no
    slices at all. A float weight makes ``points.times`` raise, a zero total divides by 0."""
    if _or(slicer, "hash") != "hash" or not slices:
        return True  # another slicer builds no continuum
    weights = [_or(s.get("weight"), 1) for s in slices]
    ints = [w for w in weights if isinstance(w, int) and not isinstance(w, bool)]
    if len(ints) != len(weights):
        return False
    return sum(ints) != 0


def _or(value: object, default: object) -> object:
    """Ruby's ``value || default``: only nil and false give way (0 and "" do not)."""
    return default if value is None or value is False else value


#: Longer addresses and node names are refused (None): Droonga's pattern backtracks
#: quadratically on crafted text, and no real one comes near (Serf member names longer than
#: this are not folded either: ``events.MAX_NAME``).
MAX_ADDRESS = 1024

_ADDRESS = None


def address_node(address: object) -> str | None:
    """A volume address or node id -> its node id ``host:port/tag`` as Droonga's
    ``Address.parse(...).node`` makes it (the port as an integer: ``010031`` -> ``10031``),
    or None where that raises."""
    global _ADDRESS
    if not isinstance(address, str) or len(address) > MAX_ADDRESS:
        return None
    if _ADDRESS is None:
        import re

        # Droonga's own pattern: host greedy (may hold ':' and '/'), ASCII digits, a tag
        # without '.', an optional local name; '.' matches anything but a newline.
        _ADDRESS = re.compile(r"(.+):([0-9]+)/([^.]+)(?:\.(.+))?\Z")
    m = _ADDRESS.match(address)
    if m is None:
        return None
    host, port, tag = m.group(1), m.group(2), m.group(3)
    return f"{host}:{port.lstrip('0') or '0'}/{tag}"


_NODE_NAME = None


def parse_node_name(text: object) -> tuple[str, str, str] | None:
    """``host:port/tag`` -> ``(host, port, tag)`` as ``NodeName.parse`` reads it (no local
    name; port as an integer, kept as its decimal text), or None where that raises."""
    global _NODE_NAME
    if not isinstance(text, str) or len(text) > MAX_ADDRESS:
        return None
    if _NODE_NAME is None:
        import re

        _NODE_NAME = re.compile(r"(.+):([0-9]+)/([^.]+)\Z")
    m = _NODE_NAME.match(text)
    if m is None:
        return None
    return m.group(1), m.group(2).lstrip("0") or "0", m.group(3)


# -- cluster-state.json ----------------------------------------------------------------------


def node_info(status: str | None, tags: dict | None) -> dict:
    """One member's value in ``cluster-state.json``, keys in Droonga's order.

    ``live`` is Serf's ``status == "alive"``. ``status`` None (the fold heard only a
    ``member-update`` of it) counts as alive: Serf reports updates only of members it holds
    alive, and the fold reads "nothing heard" as live too. A missing tag is None (``null``);
    a tag value that is not text (never from Serf) is None as well, so rendering cannot fail.
    """
    get = tags.get if tags else {}.get
    return {
        "type": _text(get(TAG_TYPE)),
        "role": _text(get(TAG_ROLE)),
        "internal_name": _text(get(TAG_INTERNAL_NAME)),
        "accept_messages_newer_than": _text(get(TAG_ACCEPT_NEWER_THAN)),
        "live": status == ALIVE or status is None,
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def cluster_state(members: Mapping[str, tuple], own_cluster_id: str | None) -> dict:
    """The whole ``cluster-state.json`` as a dict (render it with
    :func:`membership_log.render.droonga11.render_cluster_state`): Droonga 1.1.1's
    ``Serf#current_cluster_state`` over the fold's member view.

    ``members``: a mapping member name -> ``(status, tags)`` (anything with those two
    fields first, e.g. ``(m.status, m.tags)`` of the fold's MemberState), ``status`` one of
    ``alive``/``failed``/``left``/``leaving``/``reaped`` or None.

    Kept: members whose ``cluster_id`` tag equals ``own_cluster_id`` (a member without the
    tag equals only None), whatever the catalog says of them, except ``reaped`` ones, which
    ``serf members`` no longer lists. Keys sorted (code point order = Ruby's byte order).
    ``have_unprocessed_messages`` is added, after ``live``, only to a kept member that some
    kept member's ``buffered-for-<name>`` tag names: true if any such tag is ``"true"``.
    Droonga raises (and writes nothing) when such a tag names a member it did not keep; here
    that tag is skipped.
    """
    nodes: dict[str, dict] = {}
    buffered: dict[str, bool] = {}
    for name, member in members.items():
        status, tags = member[0], member[1]
        if status == REAPED:
            continue
        tags = tags or {}
        if tags.get(TAG_CLUSTER_ID) != own_cluster_id:
            continue
        for key, value in tags.items():
            if key.startswith(BUFFERED_PREFIX):
                target = key[len(BUFFERED_PREFIX):]
                buffered[target] = buffered.get(target, False) or value == "true"
        nodes[name] = node_info(status, tags)
    for target, have in buffered.items():
        info = nodes.get(target)
        if info is not None:
            info["have_unprocessed_messages"] = have
    return {name: nodes[name] for name in sorted(nodes)}


# -- routing (engine_node.rb) ----------------------------------------------------------------


def normalize_role(role: object) -> str:
    """``NodeRole.normalize``: lower-cased; anything but the three roles (None included) is
    ``service-provider``."""
    r = role.lower() if isinstance(role, str) else ""
    return r if r in ROLES else SERVICE_PROVIDER


def _sender(sender_role: object) -> str:
    # NodeRole.mine lower-cases the sender's own role tag but does not validate it.
    return sender_role.lower() if isinstance(sender_role, str) else SERVICE_PROVIDER


def is_live(info: dict | None) -> bool:
    """``EngineNode#live?`` of a catalog node whose value in the file is ``info``.

    A node missing from the file (``info`` None) is NOT live: ``Cluster`` hands its engine
    node ``@state[name] || {}``, and ``{}["live"] == true`` is false. Only ``true`` is live.
    """
    return info is not None and info.get("live") is True


def node_role(info: dict | None) -> str:
    """``EngineNode#role``: the value's role, normalized (missing: ``service-provider``)."""
    return normalize_role(info.get("role") if info is not None else None)


def forwardable(info: dict | None, sender_role: str) -> bool:
    """A sender of ``sender_role`` may forward to the node: live, and of the same role."""
    return is_live(info) and node_role(info) == _sender(sender_role)


def readable(info: dict | None, sender_role: str, buffered: bool = False) -> bool:
    """Read steps may go to the node (``Cluster#readable_nodes``): forwardable, the sender's
    own buffer for it empty (``buffered``: the sender holds messages for it, engine-local
    state; the sender's ``buffered-for-<node>`` tag says the same), and, for a service
    provider, no member holding unprocessed messages for it (``have_unprocessed_messages``).
    """
    if not forwardable(info, sender_role) or buffered:
        return False
    if node_role(info) != SERVICE_PROVIDER:
        return True
    return not (info or {}).get("have_unprocessed_messages")


def writable(info: dict | None, sender_role: str) -> bool:
    """Write steps may be routed to the node (``Cluster#writable_nodes``). Liveness is not
    asked: a service-provider sender counts every catalog node writable; an absorb-source
    (absorb-destination) sender only nodes of its own role; any other sender role none."""
    sender = _sender(sender_role)
    if sender == SERVICE_PROVIDER:
        return True
    if sender in (ABSORB_SOURCE, ABSORB_DESTINATION):
        return node_role(info) == sender
    return False


def delivers_now(info: dict | None, sender_role: str) -> bool:
    """``EngineNode#really_writable?``: a write routed to the node is sent at once rather
    than buffered (and ``buffered-for-<node>`` set). Service provider -> service providers
    only; absorb-source -> anything but absorb-destination; absorb-destination -> any."""
    if not writable(info, sender_role):
        return False
    sender = _sender(sender_role)
    if sender == SERVICE_PROVIDER:
        return node_role(info) == SERVICE_PROVIDER
    if sender == ABSORB_SOURCE:
        return node_role(info) != ABSORB_DESTINATION
    return True


def accepts_buffered(boundary: str | None, message_date: str) -> bool | None:
    """Whether a buffered message dated ``message_date`` is still forwarded to a node whose
    ``accept_messages_newer_than`` is ``boundary`` (``ForwardBuffer#forward``): only if it is
    strictly newer (a message at the boundary is dropped). No boundary: every message.

    The boundary says nothing about routing (forwardable/readable/writable ignore it); it
    filters what the senders' buffers replay to a node that just absorbed a copy of the
    data. Droonga clears it in a sender after that sender forwards one message. None if
    either time is not ISO 8601 with a zone (Ruby's ``Time.parse`` would read a zoneless
    time in the engine's local zone, unknown here, and raises on an empty string).
    """
    if boundary is None:
        return True
    b, d = _instant(boundary), _instant(message_date)
    if b is None or d is None:
        return None
    return d > b


_ISO = None


def _instant(text: object) -> tuple[int, str] | None:
    """ISO 8601 date-time with a zone -> (UTC seconds, fraction digits without trailing
    zeros), which compare exactly at any precision (Ruby's Time keeps every digit)."""
    global _ISO
    if not isinstance(text, str):
        return None
    if _ISO is None:
        import re

        _ISO = re.compile(r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
                          r":([0-9]{2})(?:[.,]([0-9]+))?\s*(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))"
                          r"\s*\Z")
    m = _ISO.match(text)
    if m is None:
        return None
    import datetime

    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    try:
        day = datetime.date(y, mo, d).toordinal()
    except ValueError:
        return None
    if h > 23 or mi > 59 or s > 60:
        return None
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            offset = -offset
    seconds = day * 86400 + h * 3600 + mi * 60 + s - offset
    frac = (m.group(7) or "").rstrip("0")
    return seconds, frac


# -- Droonga's user events and queries -------------------------------------------------------

#: One user event or query as ``droonga-engine-serf-event-handler`` on ``own_name`` reads it.
#: ``known``: a command it handles; ``payload``: the JSON object on the payload's first line
#: (None if there is none: the handler then raises and does nothing); ``cluster_id``: the
#: payload's filter (None: for every cluster); ``for_cluster``: the filter is absent or
#: equals this node's cluster id; ``node``: the payload's ``node`` as given (None if absent);
#: ``target``: that node as ``host:port/tag`` (None if it is no node name); ``for_node``:
#: None without a node filter, else whether it names ``own_name``; ``process``: whether the
#: handler acts on it; ``fields``: the command's parsed parameters (below).
Command = record("Command", "name known payload cluster_id for_cluster node target "
                                "for_node process fields")


def parse_command(name: str, payload: str | None, own_name: str | None = None,
                  own_cluster_id: str | None = None) -> Command:
    """Read one user event / query the way Droonga 1.1.1's handler does. Never raises.

    The payload is read like ``JSON.parse($stdin.gets)``: its first line only, which must be
    a JSON object (the 1.1-era JSON parser accepts no bare scalars; an array makes the
    handler raise). ``process`` follows ``RemoteCommand::Base#should_process?``: the
    ``cluster_id`` filter (if any) must equal ``own_cluster_id``; a ``node`` filter (if
    present at all, even ``null``) must name ``own_name`` (host, integer port, tag); a
    command not in :data:`COMMANDS` is never processed. ``fields`` per command:

    - ``change_role``: ``role`` (normalized: anything unknown becomes service-provider)
    - ``accept_messages_newer_than``: ``timestamp``, the text set as the
      ``accept-newer-than`` tag (a missing timestamp sets it to ``""``), None if not text
    - ``join``: ``type``, ``dataset``, ``source`` (a node id or None), ``port``, ``tag``
      (from the payload, else the source's); processed only for ``type`` ``replica`` with
      a dataset, a source and a node
    - ``set_replicas``/``add_replicas``/``remove_replicas``/``unjoin``: ``dataset``,
      ``hosts`` (a tuple of text; a single text is one host; None if missing)
    """
    name = name if isinstance(name, str) else ""
    known = name in COMMANDS
    doc = _first_line_object(payload)
    if doc is None:
        return Command(name, known, None, None, False, None, None, None, False, {})
    cid = doc.get("cluster_id")
    for_cluster = cid is None or (isinstance(cid, str) and cid == own_cluster_id)
    node = doc.get("node")
    target_parts = parse_node_name(node)
    target = None if target_parts is None else "{}:{}/{}".format(*target_parts)
    for_node = None
    if "node" in doc:
        own = parse_node_name(own_name)
        for_node = own is not None and target_parts == own
    fields = _fields(name, doc, target)
    valid = fields.pop("_valid", True)
    process = known and for_cluster and for_node is not False and valid
    return Command(name, known, doc, cid, for_cluster, node, target, for_node, process, fields)


def _first_line_object(payload: str | None) -> dict | None:
    if not isinstance(payload, str):
        return None
    line = payload.split("\n", 1)[0]
    if not line.strip():
        return None
    import json

    def no_constant(word: str) -> object:  # Ruby's parser rejects NaN and Infinity
        raise ValueError(word)

    try:
        doc = json.loads(line, parse_constant=no_constant)
    except (ValueError, RecursionError, MemoryError):
        return None
    return doc if isinstance(doc, dict) else None


def _tag_value(value: object) -> str | None:
    """What ``serf tags -set name=#{value}`` sets for a JSON value (Ruby's ``to_s``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and -10**18 < value < 10**18:
        return str(value)
    return None  # a float, list or object: Ruby's to_s of it is not reproduced


def _fields(name: str, doc: dict, target: str | None) -> dict:
    if name == "change_role":
        return {"role": normalize_role(doc.get("role"))}
    if name == "accept_messages_newer_than":
        return {"timestamp": _tag_value(doc.get("timestamp"))}
    if name == "join":
        source = parse_node_name(doc.get("source"))
        dataset = doc.get("dataset")
        return {
            "type": doc.get("type"),
            "dataset": dataset,
            "source": None if source is None else "{}:{}/{}".format(*source),
            "port": _or(doc.get("port"), int(source[1]) if source and len(source[1]) < 19
                        else None),
            "tag": _or(doc.get("tag"), source[2] if source else None),
            "_valid": (doc.get("type") == "replica" and dataset is not None
                       and source is not None and target is not None),
        }
    if name in ("set_replicas", "add_replicas", "remove_replicas", "unjoin"):
        hosts = doc.get("hosts")
        if isinstance(hosts, str):
            hosts = (hosts,)
        elif isinstance(hosts, list) and all(isinstance(h, str) for h in hosts):
            hosts = tuple(hosts)
        else:
            hosts = None
        dataset = doc.get("dataset")
        return {"dataset": dataset, "hosts": hosts,
                "_valid": dataset is not None and hosts is not None}
    return {}
