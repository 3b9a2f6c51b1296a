"""Droonga 1.1's ``cluster-state.json``, byte for byte as Droonga writes it.

Droonga writes ``JSON.pretty_generate(state)`` and ``puts`` adds a newline. Ruby's layout is
not ``json.dumps``'s, so this is a renderer of its own rather than
:mod:`membership_log.render.livefile`'s (which is held to ``json.dumps`` and escapes to ASCII):

- non-ASCII text is written raw as UTF-8; only ``"``, ``\\`` and the control characters
  below U+0020 are escaped (``\\b \\f \\n \\r \\t``, the rest as ``\\u00xx``, lower-case hex);
  ``/``, DEL and U+2028/U+2029 stay as they are;
- an empty object is ``{`` newline, the indent of its depth, ``}`` (``"{\\n}"`` at the top):
  the json gem of Droonga 1.1's era (1.8) and every release before 2.8 (Ruby <= 3.3) does
  this; json 2.8 (Ruby 3.4) writes ``{}``. An empty array likewise is ``[\\n\\n]``;
- otherwise two spaces of indent and ``"key": value``, as ``json.dumps(indent=2)``.

Ruby's generator raises on text that is not UTF-8. Lone surrogates (text that came from
undecodable bytes) are written as U+FFFD instead, as Go's JSON encoder in ``serf members``
(where Droonga reads its member list) replaces such bytes. Pure, no imports: it runs in
the handler's hot path.
"""

from __future__ import annotations

#: What Ruby's generator escapes: ``"``, ``\\`` and U+0000..U+001F.
_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
                 0x22: '\\"', 0x5C: "\\\\"})
_NEEDS_ESCAPE = frozenset(chr(i) for i in _ESCAPES)


def ruby_string(s: str) -> str:
    """A JSON string literal as Ruby's generator writes it (non-ASCII left raw)."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'  # the usual case: a node id, a role, a timestamp
    if not _NEEDS_ESCAPE.isdisjoint(s):
        s = s.translate(_ESCAPES)
    return '"' + s + '"'


def pretty_generate(value: object, depth: int = 0) -> str:
    """``JSON.pretty_generate(value)`` for dicts (text keys), lists, text, int, bool and None.

    Raises TypeError for anything else (a float: Ruby's float text is not Python's).
    """
    if isinstance(value, str):
        return ruby_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    inner = "  " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{\n" + "  " * depth + "}"
        items = [inner + ruby_string(k) + ": " + pretty_generate(v, depth + 1)
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[\n\n" + "  " * depth + "]"
        items = [inner + pretty_generate(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    raise TypeError(f"cannot render {type(value).__name__} as Droonga's JSON")


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates only: everything else is encodable
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c
                       for c in text).encode("utf-8")


def render_cluster_state(state: dict) -> bytes:
    """The file's bytes: ``JSON.pretty_generate(state) + "\\n"`` for the dict
    :func:`membership_log.core.droonga.cluster_state` gives (member name -> value)."""
    return _encode(pretty_generate(state) + "\n")
