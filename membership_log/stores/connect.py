"""Connections to a database server: a SQLAlchemy engine for a store URL, its failures as one
line with the password masked.

Every network store (the central store, and ``ship``'s, ``compact --require-shipped``'s and
``doctor``'s looks at it) is reached through :func:`engine_for`, so the driver choice, the
timeouts and the error wording live in one place. SQLAlchemy is imported only here and in
the central store, never on the handler's path.
"""

from __future__ import annotations

from ..core.errors import BadURL, StoreError
from ..core.redact import first_line, mask_url

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true (SQLAlchemy loads lazily)
if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: Seconds to wait for a database server to accept a connection: one that accepts TCP but
#: never answers (a hung server, a black-holed route) must not hang ``ship --follow`` in
#: silence.
CONNECT_TIMEOUT_S = 10
#: Seconds any one statement may run on the server before it is cancelled (and the
#: transaction rolled back): a server that stops answering mid-transaction is an outage,
#: reported, not a hang.
STATEMENT_TIMEOUT_S = 120


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy alone would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_for(url: str) -> Engine:
    """A SQLAlchemy engine; every failure to make one is one line, password masked.

    On PostgreSQL the connection carries a connect timeout, TCP keepalives (a peer that
    vanished is noticed within about a minute) and a statement timeout.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    args: dict = {}
    target = driver_url(url)
    if target.startswith("postgresql+psycopg://"):
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 30,
                "keepalives_interval": 10, "keepalives_count": 3,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
    try:
        return create_engine(target, connect_args=args)
    except NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        raise BadURL(f"{mask_url(url)}: unknown database kind {scheme!r} (use sqlite:/// "
                         f"or postgresql://)") from None
    except ImportError as e:
        raise StoreError(f"{mask_url(url)}: its database driver is not installed "
                         f"({e.name or e})") from None
    except (ArgumentError, SQLAlchemyError, ValueError, TypeError) as e:
        raise BadURL(f"cannot use store URL {mask_url(url)}: "
                         f"{first_line(e, url)}") from None
