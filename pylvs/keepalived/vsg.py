"""virtual_server_group entries, read as keepalived 2.2.7 reads them (check_data.c alloc_vsg_entry).

    fwmark N [inet|inet6]
    IP [PORT]            IP/LEN [PORT]            IP-LAST [PORT]            IP-IP [PORT]

A range's LAST is the last octet (decimal) or, for IPv6, the last hextet (hex), and must be
greater than the start; a network's host bits must be zero. A port of zeros is no port.
"""

from __future__ import annotations

import ipaddress

from pylvs.keepalived.blocks import Ctx, accept, at, report
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import Config, GroupEntry, VirtualServerGroup
from pylvs.keepalived.values import UINT_MAX, BadValue, Warned, need, read_sockaddr, read_unsigned

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _fwmark(node: Node, group: str, ctx: Ctx) -> GroupEntry:
    need(node, 1)
    word = node.args[0]
    try:
        mark = accept(lambda: read_unsigned(word), node, ctx)
    except BadValue as exc:
        raise exc.then(f"({group}): fwmark '{word}' must be in [0, {UINT_MAX}] - ignoring") from None
    entry = GroupEntry(fwmark=mark, at=at(node))
    if len(node.args) > 1:
        family = node.args[1]
        if family not in ("inet", "inet6"):
            raise BadValue(f"({group}): fwmark '{mark}' family {family} unknown - ignoring")
        entry.family = 4 if family == "inet" else 6
    return entry


def _range_end(text: str, version: int, node: Node, ctx: Ctx) -> int | None:
    """inet_stor: the LAST of IP-LAST; None when keepalived drops the entry without more words."""
    tail = text.split("-", 1)[1]
    base, limit = (16, 0xFFFF) if version == 6 else (10, 255)
    digits = len(tail) - len(tail.lstrip("0123456789abcdefABCDEF" if base == 16 else "0123456789"))
    value = int(tail[:digits], base) if digits else 0
    if digits < len(tail):
        ctx.diags.error(f"WARNING - Virtual server group range '{text}' has extra characters at end "
                        f"'{tail[digits:]}'", node)
    elif value > limit:
        ctx.diags.error(f"Virtual server group range '{text}' end '{tail}' too large", node)
        return None
    return value


def entry(node: Node, group: str, ctx: Ctx) -> GroupEntry | None:
    """One line of the group; None when keepalived skips it (after saying why)."""
    if node.keyword == "fwmark":
        return _fwmark(node, group, ctx)
    text = node.keyword
    port = node.args[0] if node.args and node.args[0].strip("0") else None
    try:
        first, number = accept(lambda: read_sockaddr(text, port), node, ctx)
    except BadValue as exc:
        given = f"/port/{port}" if port else ""
        raise exc.then(f"Invalid virtual server group IP address {text} {given} - skipping") from None
    start = ipaddress.ip_address(first)
    if "/" in text:
        last = _network_end(text, start)
    elif "-" in text and ("." if start.version == 4 else ":") in text.split("-", 1)[1]:
        last = _full_range_end(text, port, start, node, ctx)
    elif "-" in text:
        end = _range_end(text, start.version, node, ctx)
        if end is None:
            return None
        mask = 0xFF if start.version == 4 else 0xFFFF
        if int(start) & mask >= end:
            raise BadValue(f"Address range end is not greater than address range start - {text} - skipping")
        last = ipaddress.ip_address((int(start) & ~mask) | end)
    else:
        last = start
    return GroupEntry(first=str(start), last=str(last), port=number, at=at(node))


def _network_end(text: str, start: Address) -> Address:
    bits = start.max_prefixlen
    length = text.split("/", 1)[1]
    if not length.isdigit() or not 0 < int(length) <= bits:
        raise BadValue(f"Invalid netmask - {text} - skipping")
    host = (1 << (bits - int(length))) - 1
    if int(start) & host:
        raise BadValue(f"Address mask bits not empty - {text} - skipping")
    return ipaddress.ip_address(int(start) | host)


def _full_range_end(text: str, port: str | None, start: Address, node: Node,
                    ctx: Ctx) -> Address:
    try:
        end, _ = read_sockaddr(text.split("-", 1)[1], port)
    except Warned as warned:
        end = warned.value[0]
    except BadValue:
        raise BadValue(f"Invalid range end {text} - skipping") from None
    last = ipaddress.ip_address(end)
    if last.version != start.version:
        raise BadValue(f"Range address families do not match {text} - skipping")
    if int(last) < int(start):
        raise BadValue(f"Address range end is less than address range start - {text} - skipping")
    return last


def virtual_server_group(node: Node, config: Config, ctx: Ctx) -> None:
    need(node, 1)
    group = VirtualServerGroup(node.args[0], at=at(node))
    for line in node.children or []:
        try:
            found = entry(line, group.name, ctx)
        except BadValue as exc:
            report(exc, line, ctx)
            continue
        if found is not None:
            group.entries.append(found)
    end = node.closing or node  # keepalived checks the group once it has read its `}`
    if not group.entries:
        ctx.diags.error(f"virtual server group {group.name} has no entries - removing", end)
        return
    families = {ipaddress.ip_address(e.first).version if e.first else e.family for e in group.entries}
    if families == {4, 6} and any(e.fwmark is not None and e.family is None for e in group.entries):
        ctx.diags.error(f"virtual server group {group.name} cannot have IPv4, IPv6 and fwmark without family - "
                        f"removing", end)
        return
    config.virtual_server_groups[group.name] = group
