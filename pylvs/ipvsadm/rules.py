"""ipvsadm rule files (what `ipvsadm -S` writes) turned into control requests.

Used by `lvsadm -R` and by `lvsd --config`, so that both read rules the same way: tokens split on
blanks, `ipvsadm`/`lvsadm` tokens dropped, empty and `#` lines skipped (ipvsadm.c restore_table).
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


def rules_to_requests(lines: Iterable[str], prog: str = "lvsadm") -> tuple[list[dict[str, Any]], list[int]]:
    """The requests for a batch, and for each the number of the line it came from."""
    ops: list[dict[str, Any]] = []
    op_lines: list[int] = []
    for lineno, raw in enumerate(lines, 1):
        tokens = [t for t in _TOKEN_SEP.split(raw) if t and t not in ("ipvsadm", "lvsadm")]
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            cmd = parse_command(tokens, prog, reading_stdin=True)
        except ParseError as err:
            raise RuleError(lineno, err.message, err.code) from None
        if cmd.name in NOT_IN_RULES:
            raise RuleError(lineno, f"the '{cmd.name}' command cannot be used with --restore", 2)
        ops.extend(cmd.requests)
        op_lines.extend([lineno] * len(cmd.requests))
    return ops, op_lines
