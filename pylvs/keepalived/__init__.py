"""keepalived-compatible configuration: parse keepalived.conf into a typed model and validate it.

    config = load("/etc/keepalived/keepalived.conf")   # ConfigError if unusable
    for warning in config.warnings: ...                 # "(file:line) Unknown keyword 'x'"

`pylvs.keepalived.translate` turns a model into lvsd control requests; `pylvs.health` runs its
checkers.
"""

from __future__ import annotations

from pylvs.keepalived.errors import ConfigError, Diagnostic, Diagnostics
from pylvs.keepalived.lexer import read_text_lines
from pylvs.keepalived.model import Config
from pylvs.keepalived.parser import parse_file, parse_lines
from pylvs.keepalived.validate import validate


def load(path: str, config_id: str | None = None, echo: bool = True) -> Config:
    """Read, parse and validate a configuration file with its includes."""
    diags = Diagnostics(echo=echo)
    return validate(parse_file(path, diags, config_id), diags)


def loads(text: str, name: str = "keepalived.conf", base: str = ".", config_id: str | None = None,
          echo: bool = True) -> Config:
    """As `load`, for configuration text in memory."""
    diags = Diagnostics(echo=echo)
    config = parse_lines(read_text_lines(text, name, diags, base, config_id), diags)
    config.files = [name]
    return validate(config, diags)


__all__ = ["Config", "ConfigError", "Diagnostic", "Diagnostics", "load", "loads", "validate"]
