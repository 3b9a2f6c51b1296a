"""Records: the classes ``collections.namedtuple`` makes, made without its ``eval``.

Every record of the package (a raw event, a member, a change, an incident...) is a tuple
with named fields. ``namedtuple`` compiles a ``__new__`` from source text for each class,
and that compile is most of its cost: making the 17 records a member event loads this way
took 4.4 M of the handler's 69 M instructions off (callgrind), 0.6 ms of a ~24 ms event
(README, "Performance"). :func:`record` renames the parameters of a precompiled
``__new__`` of the right arity instead, so a record is built and read exactly as fast as a
namedtuple's (the same ``tuple.__new__`` call, the same C field getters) and behaves like
one: positional and keyword arguments, defaults, ``_fields``, ``_replace``, ``_asdict``,
``_make``, pickling, equality and hashing as tuples.

The type checker sees ``collections.namedtuple`` itself (below), so it knows every field.
"""

from __future__ import annotations

import sys
from _collections import _tuplegetter  # type: ignore[import-not-found]  # namedtuple's, in C
from keyword import iskeyword  # loaded already: collections imports it

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_tuple_new = tuple.__new__


# One precompiled __new__ per arity; record() renames their parameters to the fields'.
# mypy: disable-error-code="no-untyped-def"
def _n1(_cls, a): return _tuple_new(_cls, (a,))  # noqa: E704
def _n2(_cls, a, b): return _tuple_new(_cls, (a, b))  # noqa: E704
def _n3(_cls, a, b, c): return _tuple_new(_cls, (a, b, c))  # noqa: E704
def _n4(_cls, a, b, c, d): return _tuple_new(_cls, (a, b, c, d))  # noqa: E704
def _n5(_cls, a, b, c, d, e): return _tuple_new(_cls, (a, b, c, d, e))  # noqa: E704
def _n6(_cls, a, b, c, d, e, f): return _tuple_new(_cls, (a, b, c, d, e, f))  # noqa: E704
def _n7(_cls, a, b, c, d, e, f, g): return _tuple_new(_cls, (a, b, c, d, e, f, g))  # noqa: E704
def _n8(_cls, a, b, c, d, e, f, g, h): return _tuple_new(_cls, (a, b, c, d, e, f, g, h))  # noqa: E704
def _n9(_cls, a, b, c, d, e, f, g, h, i): return _tuple_new(_cls, (a, b, c, d, e, f, g, h, i))  # noqa: E704,E501
def _n10(_cls, a, b, c, d, e, f, g, h, i, j): return _tuple_new(_cls, (a, b, c, d, e, f, g, h, i, j))  # noqa: E704,E501


_function: Any = type(_n1)
_NEW: tuple[Any, ...] = (None, _n1, _n2, _n3, _n4, _n5, _n6, _n7, _n8, _n9, _n10)


class Record(tuple):
    """What every record shares: namedtuple's methods, written once."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _field_defaults: dict[str, Any] = {}

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Any:
        result = _tuple_new(cls, iterable)
        if len(result) != len(cls._fields):
            raise TypeError(f"expected {len(cls._fields)} arguments, got {len(result)}")
        return result

    def _replace(self, **changes: Any) -> Any:
        result = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise TypeError(f"got unexpected field names: {list(changes)!r}")
        return result

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        pairs = ", ".join(f"{name}={value!r}"
                          for name, value in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({pairs})"

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)


def _record(typename: str, field_names: str, *, defaults: Iterable[Any] | None = None) -> type:
    fields = tuple(field_names.replace(",", " ").split())
    if not 0 < len(fields) < len(_NEW):
        raise ValueError(f"a record has 1 to {len(_NEW) - 1} fields, not {len(fields)}")
    # namedtuple's rules: a field renamed into __new__ must not shadow the name its body
    # reads (_tuple_new) or its class parameter (_cls), nor be repeated or a keyword
    for name in fields:
        if not name.isidentifier() or name.startswith("_") or iskeyword(name):
            raise ValueError(f"{typename}: {name!r} cannot name a field")
    if len(set(fields)) != len(fields):
        raise ValueError(f"{typename}: a field is named twice in {field_names!r}")
    template = _NEW[len(fields)]
    new = _function(template.__code__.replace(co_varnames=("_cls", *fields)),
                         template.__globals__, "__new__")
    given = tuple(defaults) if defaults is not None else ()
    if given:
        new.__defaults__ = given
    new.__qualname__ = f"{typename}.__new__"
    namespace: dict[str, Any] = {
        "__slots__": (), "__doc__": f"{typename}({', '.join(fields)})",
        "__match_args__": fields, "_fields": fields, "__new__": new,
        "_field_defaults": dict(zip(fields[len(fields) - len(given):], given, strict=True)),
    }
    for index, name in enumerate(fields):
        namespace[name] = _tuplegetter(index, f"Alias for field number {index}")
    cls = type(typename, (Record,), namespace)
    # as namedtuple does: the caller's module, so that pickle finds the class
    cls.__module__ = sys._getframe(1).f_globals.get("__name__", "__main__")
    return cls


if TYPE_CHECKING:
    from collections import namedtuple as record
else:
    record = _record
