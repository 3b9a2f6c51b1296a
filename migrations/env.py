"""Alembic environment: run migrations on a connection handed over by membership-log.

`membership init` / `membership db upgrade` pass an open connection in
``config.attributes["connection"]`` (Alembic cookbook, "Sharing a Connection"); run by hand,
the URL comes from ``-x db=URL`` or alembic.ini.
"""

from alembic import context
from sqlalchemy import create_engine

from membership_log.stores.schema import metadata

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("db") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
