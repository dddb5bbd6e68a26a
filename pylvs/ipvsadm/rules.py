"""ipvsadm rule files (what `ipvsadm -S` writes): their lines as tokens, and as one atomic batch.

`tokens` splits a line as ipvsadm's config_stream_read does: on blanks, dropping `ipvsadm` tokens
(and lvsadm's own name). It knows no comments: in `ipvsadm -R` a `#` line is a command line like any
other, and an error. `rules_to_requests` is the all-or-nothing reading of `lvsd --config` and
`lvsadm -R --atomic`: every line parsed first, empty and `#` lines skipped, errors with line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pylvs.ipvsadm.args import ParseError, parse_command

_TOKEN_SEP = re.compile(r"[ \t\r\n]+")
NOT_IN_RULES = {"help", "version", "list", "save", "get-laddr", "restore"}


class RuleError(Exception):
    def __init__(self, lineno: int, message: str, code: int):
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno
        self.code = code


def tokens(line: str) -> list[str]:
    return [t for t in _TOKEN_SEP.split(line) if t and t not in ("ipvsadm", "lvsadm")]


def rules_to_requests(lines: Iterable[str], prog: str = "lvsadm") -> tuple[list[dict[str, Any]], list[int]]:
    """The requests for a batch, and for each the number of the line it came from."""
    ops: list[dict[str, Any]] = []
    op_lines: list[int] = []
    for lineno, raw in enumerate(lines, 1):
        argv = tokens(raw)
        if not argv or argv[0].startswith("#"):
            continue
        try:
            cmd = parse_command(argv, prog, reading_stdin=True)
        except ParseError as err:
            raise RuleError(lineno, err.message, err.code) from None
        if cmd.name in NOT_IN_RULES:
            raise RuleError(lineno, f"the '{cmd.name}' command cannot be used with --restore", 2)
        ops.extend(cmd.requests)
        op_lines.extend([lineno] * len(cmd.requests))
    return ops, op_lines
