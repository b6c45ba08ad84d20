"""The one exception sizing raises for bad input, carrying the option it is about."""

from __future__ import annotations


class SizingError(ValueError):
    """Bad input to sizing; ``field`` names the option or setting so a CLI or plan can point at it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
