"""Diagnostics of a keepalived configuration: fatal `ConfigError` and the non-fatal messages.

keepalived logs most configuration problems and carries on; only a few stop it. Both kinds carry
the file and line, and print as keepalived prints them: `(file:line) message`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("pylvs.keepalived")


def where(file: str | None, line: int | None) -> str:
    if file and line:
        return f"({file}:{line}) "
    if line:
        return f"(Line {line}) "
    return ""


class ConfigError(Exception):
    """A configuration that cannot be used at all (keepalived would exit or misread it)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(f"{where(file, line)}{message}")
        self.message = message
        self.file = file
        self.line = line


@dataclass(frozen=True)
class Diagnostic:
    """A logged, non-fatal problem; `level` is "warning" or "error" (the keyword was ignored)."""

    message: str
    file: str | None = None
    line: int | None = None
    level: str = "warning"

    def __str__(self) -> str:
        return f"{where(self.file, self.line)}{self.message}"


@dataclass
class Diagnostics:
    """Collects diagnostics in order and mirrors each to the `pylvs.keepalived` logger."""

    items: list[Diagnostic] = field(default_factory=list)
    echo: bool = True

    def add(self, message: str, file: str | None = None, line: int | None = None, level: str = "warning") -> None:
        diag = Diagnostic(message, file, line, level)
        self.items.append(diag)
        if self.echo:
            log.log(logging.ERROR if level == "error" else logging.WARNING, "%s", diag)

    def warn(self, message: str, at: object = None) -> None:
        self.add(message, getattr(at, "file", None), getattr(at, "line", None), "warning")

    def error(self, message: str, at: object = None) -> None:
        self.add(message, getattr(at, "file", None), getattr(at, "line", None), "error")

    def messages(self) -> list[str]:
        return [d.message for d in self.items]
