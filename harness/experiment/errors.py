"""Errors the command line turns into a short message and exit code 2, before any work starts."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment file or command-line value; the message names the key and what is allowed."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")

    @property
    def problems(self) -> list[ConfigError]:
        """Each problem on its own (one, unless several were found at once)."""
        return [self]


class ConfigErrors(ConfigError):
    """Every problem validation found in one go, so a file is fixed in one round, not one per run."""

    def __init__(self, errors: list[ConfigError]) -> None:
        assert errors
        self.errors = errors
        ValueError.__init__(self, "\n".join(str(e) for e in errors))
        self.key, self.source = errors[0].key, errors[0].source

    @property
    def problems(self) -> list[ConfigError]:
        return list(self.errors)
