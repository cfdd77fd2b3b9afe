"""The engine's own errors: a leaf module that imports nothing of the project, so every layer can raise them.

Each is a one-line, user-facing refusal: the CLI prints it with exit status 2 and the pages show it; neither
prints a traceback for them.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value was refused; ``field`` names it so forms and the CLI can point at it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class GenotypeError(ValueError):
    """A genotype string or JSON document was malformed; the message says where."""


class Cancelled(Exception):
    """Raised inside the engine when the reporter says the run should stop."""


__all__ = ["Cancelled", "ConfigError", "GenotypeError"]
