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
