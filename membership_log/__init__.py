"""membership-log: a Serf event handler that gives the cluster a memory."""

from .version import __version__

__all__ = ["__version__"]
