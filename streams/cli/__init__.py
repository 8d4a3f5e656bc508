"""The ``eddy`` command-line tools: one module per command family, ``main`` the entry point."""

from streams.cli.main import app, main

__all__ = ["app", "main"]
