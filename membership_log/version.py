"""Release and schema identifiers, importable at no cost."""

__version__ = "0.1.0"

#: The Alembic head this release reads and writes. A test checks it equals the migrations'
#: head; the handler's fast path refuses (and spools for) a store at any other revision.
SCHEMA_REVISION = "0006"
