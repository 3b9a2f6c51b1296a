"""The errors membership-log raises; the CLI prints them as one line."""


class MembershipError(Exception):
    """Any failure an operator should see as one clear line."""


class StoreError(MembershipError):
    """The store cannot be opened, read or written."""


class SchemaMismatch(StoreError):
    """The store's schema is not the one this release writes (older: upgrade; newer: ours is
    the older release)."""


class NotInitialised(StoreError):
    """The store file exists but holds no tables yet (set-up was interrupted)."""


class UsageError(MembershipError):
    """A command asked for something that cannot be asked (``--since`` after ``--until``, a
    URL that is no URL): the CLI exits 2, as for any usage error (SPEC "Safety")."""


class BadURL(UsageError, StoreError):
    """A store or Alertmanager URL that can never work (malformed, an unknown kind of
    database): a usage error (exit 2), never an outage to retry."""
