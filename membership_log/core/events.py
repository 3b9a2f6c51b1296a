"""What a raw event means: Serf's handler contract, parsed into plain records.

Pure and total: :func:`parse` never raises. Whatever Serf (or anything else) handed the
handler becomes an :data:`Event`; what cannot be understood becomes kind ``unknown`` plus a
warning, and is folded as nothing. The contract is Serf's ``cmd/serf/command/agent/invoke.go``
(see ``shared/reference/serf.md``).
"""

from __future__ import annotations

from . import catalog as _catalog
from .raw import SOURCE_ANCHOR, SOURCE_CATALOG, RawEvent
from .records import record

#: A member line: ``name<TAB>address<TAB>role<TAB>tags``; ``tags`` is a dict.
Member = record("Member", "name address role tags")

#: A parsed event. ``kind`` is a member event name, ``user``, ``query``, ``catalog`` or
#: ``unknown``; ``name`` the user event or query name; ``ltime`` its Lamport time (int or
#: None); ``members`` a tuple of :data:`Member`; ``payload`` text or None; ``catalog`` the
#: parsed :data:`~membership_log.core.catalog.Catalog` of a catalog event (None if unusable);
#: ``warnings`` a tuple of one-line strings.
Event = record(
    "Event", "seq at observer kind name ltime members payload catalog warnings"
)

MEMBER_JOIN = "member-join"
MEMBER_LEAVE = "member-leave"
MEMBER_FAILED = "member-failed"
MEMBER_UPDATE = "member-update"
MEMBER_REAP = "member-reap"
USER = "user"
QUERY = "query"
CATALOG = "catalog"
#: The record of a retention anchor (``membership compact``): kept in the log, folded as
#: nothing.
ANCHOR = "anchor"
#: The Serf user event a node's published tree head travels as (SPEC "Witnessed history";
#: its payload: :mod:`membership_log.core.witness`).
HEAD_EVENT = "membership-head"
UNKNOWN = "unknown"

MEMBER_KINDS = frozenset({MEMBER_JOIN, MEMBER_LEAVE, MEMBER_FAILED, MEMBER_UPDATE, MEMBER_REAP})
SERF_KINDS = MEMBER_KINDS | {USER, QUERY}

_EVENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz-")


def clean_event_name(value: str) -> str:
    """``member-failed.`` (as the seed's notes show it) -> ``member-failed``."""
    if value in SERF_KINDS:  # the usual case, once per event of a long replay
        return value
    return "".join(c for c in value.strip().lower() if c in _EVENT_CHARS).strip("-")


def _text(data: bytes, what: str, warnings: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        warnings.append(f"{what} is not valid UTF-8 (byte {e.start}); undecodable bytes replaced")
        return data.decode("utf-8", "replace")


def _unescape(field: str) -> str:
    # Serf escapes only tab and newline in member fields (invoke.go eventClean).
    return field.replace("\\t", "\t").replace("\\n", "\n") if "\\" in field else field


def parse_tags(text: str) -> dict[str, str]:
    """``k=v,k=v`` (Serf writes them in random order) -> dict."""
    tags: dict[str, str] = {}
    if text:
        for item in text.split(","):
            if item:
                k, _, v = item.partition("=")
                tags[_unescape(k)] = _unescape(v)
    return tags


#: Member lines one event may carry; Serf coalesces a cluster's joins into one event, so this
#: is far above any real cluster, and well below what keeps a handler run fast.
MAX_EVENT_MEMBERS = 20_000
#: A member name longer than this is not a Serf node name; the line is skipped.
MAX_NAME = 1_024

_HEX = frozenset("0123456789abcdefABCDEF:.")


_ADDRESSES: dict[str, bool] = {}


def is_address(text: str) -> bool:
    """Whether ``text`` is an IP address as Serf prints one (``net.IP.String()``): dotted
    IPv4, or IPv6 in hex groups. Random bytes almost never pass, so garbage stdin does not
    become members. A cluster has few addresses: answers are cached."""
    known = _ADDRESSES.get(text)
    if known is not None:
        return known
    ok = _is_address(text)
    if len(_ADDRESSES) > 65_536:
        _ADDRESSES.clear()
    _ADDRESSES[text] = ok
    return ok


def _is_address(text: str) -> bool:
    if ":" in text:
        return 2 <= len(text) <= 45 and all(c in _HEX for c in text)
    parts = text.split(".")
    return len(parts) == 4 and all(
        0 < len(p) <= 3 and p.isascii() and p.isdigit() and int(p) <= 255 for p in parts)


def parse_members(text: str, warnings: list[str]) -> tuple:
    """Member lines from a member event's stdin. Malformed lines are skipped with a warning.

    Real Serf separates fields with tabs; a line without tabs (as the seed's wiki prints it,
    ``node1 192.168.100.51``) is split on white space instead. A line whose address is not an
    IP address is malformed: Serf always gives one.
    """
    members = []
    skipped = 0
    untabbed = 0
    lines = text.split("\n")
    if len(lines) > MAX_EVENT_MEMBERS + 1:
        warnings.append(f"{len(lines)} member lines (at most {MAX_EVENT_MEMBERS}); folded as "
                        f"nothing")
        return ()
    for line in lines:
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if "\t" in line:
            fields = line.split("\t")
        else:
            fields = line.split()
            untabbed += 1
        name = _unescape(fields[0])
        address = fields[1] if len(fields) > 1 else ""
        if (not name or len(fields) > 4 or len(name) > MAX_NAME or "\0" in name
                or not is_address(address)):
            skipped += 1
            continue
        role = _unescape(fields[2]) if len(fields) > 2 else ""
        tags = parse_tags(fields[3]) if len(fields) > 3 else {}
        members.append(Member(name, address, role, tags))
    if untabbed:
        warnings.append(f"{untabbed} member line(s) not tab-separated; split on white space")
    if skipped:
        warnings.append(f"{skipped} malformed member line(s) skipped")
    elif not members:
        warnings.append("member event lists no member")
    return tuple(members)


def _ltime(env: dict[str, str], var: str, warnings: list[str]) -> int | None:
    value = env.get(var)
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    warnings.append(f"{var} is not a number: {value[:40]!r}")
    return None


def _payload(stdin: bytes, warnings: list[str]) -> str:
    text = _text(stdin, "payload", warnings)
    # Serf appends a newline to a payload that lacks one; take it back off.
    return text[:-1] if text.endswith("\n") else text


def parse(raw: RawEvent) -> Event:
    """Interpret one raw event. Never raises."""
    warnings: list[str] = []
    env = raw.env
    common = (raw.seq, raw.received_us, raw.observer)
    if raw.source == SOURCE_CATALOG:
        cat, cat_warnings = _catalog.parse(raw.stdin)
        return Event(*common, CATALOG, None, None, (), None, cat, tuple(cat_warnings))
    if raw.source == SOURCE_ANCHOR:
        return Event(*common, ANCHOR, None, None, (), None, None, ())

    given = env.get("SERF_EVENT")
    if given is None:
        return Event(*common, UNKNOWN, None, None, (), None, None, ("SERF_EVENT is not set",))
    kind = clean_event_name(given)
    if kind != given:
        warnings.append(f"SERF_EVENT {given[:40]!r} read as {kind!r}")
    if kind in MEMBER_KINDS:
        members = parse_members(_text(raw.stdin, "member list", warnings), warnings)
        return Event(*common, kind, None, None, members, None, None, tuple(warnings))
    if kind == USER:
        name = env.get("SERF_USER_EVENT", "")
        ltime = _ltime(env, "SERF_USER_LTIME", warnings)
        payload = _payload(raw.stdin, warnings)
        return Event(*common, USER, name, ltime, (), payload, None, tuple(warnings))
    if kind == QUERY:
        name = env.get("SERF_QUERY_NAME", "")
        ltime = _ltime(env, "SERF_QUERY_LTIME", warnings)
        payload = _payload(raw.stdin, warnings)
        return Event(*common, QUERY, name, ltime, (), payload, None, tuple(warnings))
    warnings.append(f"unknown SERF_EVENT {given[:40]!r}; recorded, not interpreted")
    return Event(*common, UNKNOWN, None, None, (), None, None, tuple(warnings))
