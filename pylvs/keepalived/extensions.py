"""Keywords pylvs accepts that keepalived 2.2.7 does not know: DPVS's extensions (FULLNAT and its
local addresses, SYN proxy, address groups) and a few from later keepalived versions.

keepalived 2.2.7 rejects `FNAT` (and uses NAT) and reports the others as unknown keywords. Each
use is warned about, naming the extension, so that an operator moving a file between the two
knows what will differ.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pylvs.keepalived.blocks import Ctx, Kw
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import Forwarding


def dpvs_keyword(kw: Kw) -> Kw:
    """The same keyword, warning at each use that stock keepalived does not know it."""
    def fn(node: Node, target: Any, ctx: Ctx) -> Any:
        ctx.diags.warn(f"pylvs: DPVS extension '{node.keyword}' accepted (keepalived 2.2.7 does not know it)", node)
        return kw.fn(node, target, ctx)
    return replace(kw, fn=fn)


def later_keyword(kw: Kw, version: str) -> Kw:
    """A keyword of keepalived `version` and later, warned about at each use."""
    def fn(node: Node, target: Any, ctx: Ctx) -> Any:
        ctx.diags.warn(f"pylvs: '{node.keyword}' accepted (a keepalived {version} keyword, not 2.2.7's)",
                       node)
        return kw.fn(node, target, ctx)
    return replace(kw, fn=fn)


def dpvs_method(node: Node, fwd: Forwarding, ctx: Ctx, fallback: str) -> None:
    """Warn when a forwarding method is DPVS's FULLNAT; `fallback` is what stock keepalived uses."""
    if fwd.method == "FNAT":
        ctx.diags.warn(f"pylvs: DPVS extension '{node.keyword} {node.args[0]}' accepted (stock keepalived rejects "
                       f"it and uses {fallback})", node)
