"""Keyword tables: how a block's statements are dispatched to handlers, and common handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import At, Config
from pylvs.keepalived.values import BadValue, need, read_bool

Handler = Callable[[Node, Any, "Ctx"], None]


@dataclass
class Kw:
    fn: Handler
    block: bool | None = False  # the keyword opens a { } block (None: with or without one)
    max_args: int | None = None  # more words than this are reported as ignored


@dataclass
class Ctx:
    diags: Diagnostics
    config: Config = field(default_factory=Config)


def at(node: Node) -> At:
    return At(node.file, node.line)


def run_block(nodes: list[Node], table: dict[str, Kw], target: Any, ctx: Ctx,
              ignore: Callable[[str], bool] | None = None) -> None:
    """Dispatch each statement of a block to its handler; report what keepalived would report."""
    for node in nodes:
        kw = table.get(node.keyword)
        if kw is None:
            if not (ignore and ignore(node.keyword)):
                ctx.diags.warn(f"Unknown keyword '{node.keyword}'", node)
            continue
        if kw.block is True and node.children is None:
            ctx.diags.error(f"Missing '{{' at beginning of configuration block '{node.keyword}' - ignoring", node)
            continue
        if kw.block is False and node.children is not None:
            ctx.diags.warn(f"Unexpected '{{' after '{node.keyword}' - ignoring the block", node)
        if kw.max_args is not None and len(node.args) > kw.max_args:
            extra = " ".join(node.args[kw.max_args:])
            ctx.diags.warn(f"WARNING - extra parameters ignored after '{node.keyword}': {extra}", node)
        try:
            kw.fn(node, target, ctx)
        except BadValue as exc:
            ctx.diags.error(str(exc), node)


def setter(attr: str, reader: Callable[[str], Any], max_args: int = 1) -> Kw:
    """A keyword that stores its one parameter, read by `reader`, into `attr`."""
    def fn(node: Node, target: Any, ctx: Ctx) -> None:
        need(node, 1)
        setattr(target, attr, reader(node.args[0]))
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
