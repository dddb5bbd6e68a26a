"""Keyword tables: what each keyword does and what follows it, and the common handlers.

A table maps the keywords of one level of the configuration to `Kw`s, as keepalived's
`install_keyword`/`install_sublevel` do. `stream.run` reads the statements with them, so the
tables decide which `}` closes which block, exactly as keepalived's reader does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import At, Config
from pylvs.keepalived.values import BadValue, Warned, need, read_bool

Handler = Callable[[Node, Any, "Ctx"], Any]
Close = Callable[[Node, Any, Any, "Ctx"], None]

# What follows a keyword besides its own line (`Kw.sub`):
VALUES = "values"  # a `{ ... }` of plain value lines ended by the first `}` (keepalived's alloc_value_block)
SKIP = "skip"  # an optional `{ ... }` skipped by counting braces (a keyword not active in the checker)


@dataclass
class Kw:
    """One keyword. Without `sub` it is a single line. With a table as `sub` it opens a block:
    `fn` returns the object the block's keywords fill in, and `close` runs at its `}`. With
    VALUES or SKIP, `fn` gets the block's lines as `node.children` (SKIP: nested by braces)."""

    fn: Handler
    sub: dict[str, Kw] | str | None = None
    close: Close | None = None
    max_args: int | None = None  # more words than this are reported as ignored (pylvs's own warning)


@dataclass
class Ctx:
    diags: Diagnostics
    config: Config = field(default_factory=Config)


def at(node: Node) -> At:
    return At(node.file, node.line)


def ignored(node: Node, target: Any, ctx: Ctx) -> None:
    """A keyword keepalived knows that has nothing to do with what pylvs builds."""


def report(exc: BadValue, node: Node, ctx: Ctx) -> None:
    for message in exc.messages:
        ctx.diags.error(message, node)


def accept(read: Callable[[], Any], node: Node, ctx: Ctx) -> Any:
    """What `read` returns; a value keepalived logs a complaint about and uses (Warned) is both."""
    try:
        return read()
    except Warned as warned:
        report(warned, node, ctx)
        return warned.value


def setter(attr: str, reader: Callable[[str], Any], max_args: int = 1, invalid: str | None = None) -> Kw:
    """A keyword that stores its one parameter, read by `reader`, into `attr`. `invalid`, with `{}`
    for the parameter, is the keyword's own message after the reader's when the value is bad."""
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        need(node, 1)
        try:
            value = accept(lambda: reader(node.args[0]), node, ctx)
        except BadValue as exc:
            raise exc.then(invalid.format(node.args[0])) if invalid else exc from None
        setattr(target, attr, value)
    return Kw(fn, max_args=max_args)


def flag(attr: str) -> Kw:
    """`keyword [<BOOL>]`."""
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        setattr(target, attr, read_bool(node))
    return Kw(fn, max_args=1)


def switch(attr: str) -> Kw:
    """A keyword without parameters that turns an option on."""
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        setattr(target, attr, True)
    return Kw(fn, max_args=0)


def text(s: str) -> str:
    return s
