"""The ``membership`` command's entry point.

``membership handle`` goes straight to the stdlib-only handler; every other command (and
``handle --help``) loads the Typer CLI. Serf runs the handler for every event, so keeping
Typer's ~50 ms and SQLAlchemy's ~190 ms of imports off that path is the point.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "handle" and not {"--help", "-h"} & set(args[1:]):
        import gc
        import os

        # One event, then os._exit: the cyclic collector has nothing to free that matters in
        # so short a life, and its passes over the objects the imports make cost 1.2-1.7 ms
        # of a 1-member event's ~30 (paired medians of 150 runs with and without, 2026-12-03).
        collecting = gc.isenabled()
        gc.disable()
        from .handler import main as handle

        try:
            status = handle(args[1:])
        finally:
            if argv is not None and collecting:  # in-process (tests): leave it as it was
                gc.enable()
        if argv is not None:  # called in-process (tests): return like any function
            return status
        # Everything is durable (committed, fsynced, closed) by now. Skipping interpreter
        # teardown, which only frees memory, saves the serial Serf queue ~2 ms per event.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(status)
    from .cli import run

    return run(args)
