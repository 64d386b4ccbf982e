"""Errors the command line turns into a short message and exit code 2, before any work starts."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment file or command-line value; the message names the key and what is allowed."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")
