"""The `parcours` command line: one module per command group."""

from streams.cli.main import main

__all__ = ["main"]
