"""The history layer: the fold driver, the library API, and what keeps a store whole.

``from membership_log import history`` gives the API (:mod:`membership_log.history.api`:
``history.state_at``, ``history.audit`` ...), loaded on first use, so that the handler,
which imports only the driver, pays nothing for it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (no `typing` here)
if TYPE_CHECKING:
    from typing import Any

_MODULES = frozenset({"api", "bulk", "driver", "integrity", "parallel", "publish",
                      "retention", "setup", "transfer"})


def __getattr__(name: str) -> Any:
    # A submodule not imported yet (``from .history import setup`` asks for it first) or a
    # private name is not the API's.
    if name in _MODULES or name.startswith("_"):
        raise AttributeError(name)
    import importlib

    api = importlib.import_module(__name__ + ".api")
    try:
        return getattr(api, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
