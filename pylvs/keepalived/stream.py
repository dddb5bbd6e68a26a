"""keepalived's statement reader (lib/parser.c `process_stream`): lines -> handler calls.

keepalived does not pair braces first. A `{` opens a block only after a keyword whose table gives
it one; any `}` ends the block being read. So, as keepalived 2.2.7 does:

* an unknown keyword is logged (`Unknown keyword 'x'`) and so is its `{` (`Unexpected '{' -
  ignoring`); the lines of its block are read as keywords of the enclosing block, and its `}`
  ends the enclosing block: what follows lands one level up;
* a `}` at the top level is an unknown keyword, after `Extra '}' found` when no `{` is open;
* a block keyword not followed by `{` is logged (`Missing '{' at beginning of configuration
  block`) and its block is read all the same;
* a block whose header is bad is skipped by counting braces, as are the blocks of keywords the
  checker process does not handle (VRRP, BFD; `SKIP`);
* blocks still open at the end of the file are closed, with `There are N missing '}'s or extra
  '{'s`.
"""

from __future__ import annotations

from typing import Any

from pylvs.keepalived.blocks import SKIP, VALUES, Ctx, Kw, report
from pylvs.keepalived.lexer import Line, Node
from pylvs.keepalived.values import BadValue

OPEN, CLOSE = "{", "}"


class _Reader:
    def __init__(self, lines: list[Line], ctx: Ctx):
        self.lines = lines
        self.pos = 0
        self.depth = 0  # braces open, counted on every line read (keepalived's block_depth)
        self.ctx = ctx

    def peek(self) -> Line | None:
        return self.lines[self.pos] if self.pos < len(self.lines) else None

    def next(self) -> Line | None:
        ln = self.peek()
        if ln is None:
            return None
        self.pos += 1
        if ln.words == [OPEN]:
            self.depth += 1
        elif ln.words == [CLOSE]:
            self.depth -= 1
            if self.depth < 0:
                self.ctx.diags.error("Extra '}' found", ln)
                self.depth = 0
        return ln

    def block(self, table: dict[str, Kw], target: Any, level: int, need_open: bool) -> None:
        """Read keywords of `table` up to the `}` that ends this level (or the end of input)."""
        while (ln := self.next()) is not None:
            word = ln.words[0]
            if need_open:
                need_open = False
                if word == OPEN:
                    continue
                self.ctx.diags.error("Missing '{' at beginning of configuration block", ln)
            elif word == OPEN:
                self.ctx.diags.error("Unexpected '{' - ignoring", ln)
                continue
            if word == CLOSE and level > 0:
                return
            kw = table.get(word)
            if kw is None:
                self.ctx.diags.warn(f"Unknown keyword '{word}'", ln)
                continue
            self.keyword(kw, Node(word, ln.words[1:], ln.file, ln.line), target, level)

    def keyword(self, kw: Kw, node: Node, target: Any, level: int) -> None:
        if kw.max_args is not None and len(node.args) > kw.max_args:
            extra = " ".join(node.args[kw.max_args:])
            self.ctx.diags.warn(f"pylvs: extra parameters ignored after '{node.keyword}': {extra}", node)
        if kw.sub == VALUES:
            node.children = self.values(node)
            node.closing = self.lines[self.pos - 1]
        elif kw.sub == SKIP:
            node.inner = self.skip()
            node.children = None if node.inner is None else nest(node.inner)
            node.closing = self.lines[self.pos - 1]
        if not isinstance(kw.sub, dict):
            self.call(kw.fn, node, target)
            return
        try:
            child = kw.fn(node, target, self.ctx)
        except BadValue as exc:
            report(exc, node, self.ctx)
            self.skip()
            return
        self.block(kw.sub, child, level + 1, need_open=True)
        if kw.close is not None:
            end = self.lines[self.pos - 1]  # the `}` (or the last line): where keepalived reports from
            self.call(kw.close, Node(node.keyword, node.args, end.file, end.line), target, child)

    def call(self, fn: Any, node: Node, *args: Any) -> None:
        try:
            fn(node, *args, self.ctx)
        except BadValue as exc:
            report(exc, node, self.ctx)

    def values(self, node: Node) -> list[Node]:
        """A block of value lines: everything up to the first `}`, each line one value."""
        values: list[Node] = []
        first = True
        while (ln := self.next()) is not None:
            if first:
                first = False
                if ln.words == [OPEN]:
                    continue
                self.ctx.diags.warn(f"'{{' missing from beginning of block {node.keyword}")
            if ln.words[-1] == CLOSE:
                break
            values.append(Node(ln.words[0], ln.words[1:], ln.file, ln.line))
        return values

    def skip(self) -> list[Line] | None:
        """Skip a `{ ... }` that follows, counting braces; the lines inside."""
        ln = self.peek()
        if ln is None or ln.words[0] != OPEN:
            return None
        self.next()
        count = 1
        inside: list[Line] = []
        while count and (ln := self.next()) is not None:
            for word in ln.words:
                count += (word == OPEN) - (word == CLOSE)
                if not count:
                    break
            if count:
                inside.append(ln)
        return inside


def nest(lines: list[Line]) -> list[Node]:
    """Statements nested by braces alone: a `{` belongs to the statement just before it."""
    root: list[Node] = []
    stack: list[list[Node]] = []
    level = root
    for ln in lines:
        if ln.words == [OPEN] and level:
            owner = level[-1]
            owner.children = owner.children or []
            stack.append(level)
            level = owner.children
        elif ln.words == [CLOSE] and stack:
            level = stack.pop()
        elif ln.words not in ([OPEN], [CLOSE]):
            level.append(Node(ln.words[0], ln.words[1:], ln.file, ln.line))
    return root


def run(lines: list[Line], table: dict[str, Kw], target: Any, ctx: Ctx) -> None:
    """Read a whole configuration with its top-level table."""
    reader = _Reader(lines, ctx)
    reader.block(table, target, 0, need_open=False)
    if reader.depth > 0:
        ctx.diags.error(f"There are {reader.depth} missing '}}'s or extra '{{'s")


def read_inner(node: Node, table: dict[str, Kw], target: Any, ctx: Ctx) -> None:
    """Read a skipped block's lines with `table`, as another keepalived process does (its parent
    reads global_defs, which the checker process skips): up to the `}` that ends the block for
    that reader; what it would read after that is the other process's business."""
    reader = _Reader(node.inner or [], ctx)
    reader.depth = 1
    reader.block(table, target, 1, need_open=False)


def dispatch(nodes: list[Node], table: dict[str, Kw], target: Any, ctx: Ctx) -> None:
    """Read a skipped block's statements (nested by `nest`) with `table`, as the keepalived process
    that owns the block reads it (the VRRP process for vrrp_instance): an unknown keyword is logged."""
    for node in nodes:
        kw = table.get(node.keyword)
        if kw is None:
            ctx.diags.warn(f"Unknown keyword '{node.keyword}'", node)
            continue
        try:
            kw.fn(node, target, ctx)
        except BadValue as exc:
            report(exc, node, ctx)
