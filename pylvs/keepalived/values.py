"""Readers for keepalived parameter types, with keepalived's wording when a value is bad.

A bad value raises `BadValue`; the parser logs it and ignores the keyword, as keepalived does.
A missing parameter is fatal (keepalived exits), so `need` raises `ConfigError`.
"""

from __future__ import annotations

import ipaddress
import re

from pylvs.keepalived.errors import ConfigError
from pylvs.keepalived.lexer import WHITE, Node, split_command
from pylvs.keepalived.model import Script

UINT_MAX = 2**32 - 1
TIMER_MAXIMUM = 2**64 - 2  # microseconds (keepalived's TIMER_MAXIMUM, ULONG_MAX - 1)


class BadValue(ValueError):
    """A rejected value. `messages` are what keepalived logs for it, in order: usually the number
    reader's complaint, then the keyword's own (`then`)."""

    def __init__(self, *messages: str):
        super().__init__(messages[-1] if messages else "")
        self.messages = messages

    def then(self, message: str) -> BadValue:
        return BadValue(*self.messages, message)


def need(node: Node, count: int) -> None:
    """Fail like keepalived's null_strvec when fewer than `count` parameters follow the keyword."""
    if len(node.args) < count:
        pos = len(node.args) + 2
        raise ConfigError(f"*** Configuration line starting `{node.keyword}` is missing a parameter after keyword "
                          f"`{node.words[-1]}` at word position {pos}", node.file, node.line)


_SIGNED = re.compile(r"([+-]?[0-9]+)?")
_UNSIGNED = re.compile(r"(\+?[0-9]+)?")


def _integer(text: str) -> int | None:
    """What strtol/strtoul make of a whole word: leading C white space, ASCII digits (an empty
    word is 0, as strtol leaves nothing unread); None if anything is left over."""
    body = text.lstrip(WHITE)
    if not _SIGNED.fullmatch(body):
        return None
    return int(body, 10) if body else 0


def read_int(text: str, lo: int = -(2**31), hi: int = 2**31 - 1) -> int:
    """keepalived's read_int: a signed integer in [lo, hi], with its messages."""
    value = _integer(text)
    if value is None:
        raise BadValue(f"invalid number '{text}'")
    if not -(2**31) <= value <= 2**31 - 1:
        raise BadValue(f"number '{text}' outside integer range")
    if not lo <= value <= hi:
        raise BadValue(f"number '{text}' outside range [{lo}, {hi}]")
    return value


def read_unsigned(text: str, lo: int = 0, hi: int = UINT_MAX) -> int:
    """keepalived's read_unsigned: an unsigned integer in [lo, hi], with its messages."""
    body = text.lstrip(WHITE)
    if body.startswith("-"):
        raise BadValue(f"negative number '{text}'")
    if not _UNSIGNED.fullmatch(body):
        raise BadValue(f"invalid number '{text}'")
    value = int(body, 10) if body else 0
    if value > UINT_MAX:
        raise BadValue(f"number '{text}' outside unsigned integer range")
    if not lo <= value <= hi:
        raise BadValue(f"number '{text}' outside range [{lo}, {hi}]")
    return value


def read_file_weight(node: Node, what: str) -> tuple[int, bool]:
    """`weight N [reverse]` of FILE_CHECK and track_file: the weight and whether it is reversed."""
    need(node, 1)
    weight = read_int(node.args[0], -(2**31) + 1, 2**31 - 1)
    if len(node.args) > 1 and node.args[1] != "reverse":
        raise BadValue(f"{what} unknown weight option {node.args[1]}")
    return weight, len(node.args) > 1


def read_timer(text: str, lo: int = 0, hi: int = TIMER_MAXIMUM) -> float:
    """keepalived's read_timer: seconds with up to 6 decimals (more are rounded), between lo and
    hi microseconds; returns seconds."""
    if text.startswith("-"):
        raise BadValue(f"negative number '{text}'")
    whole, _, fraction = text.partition(".")
    round_up = len(fraction) > 6 and fraction[6] >= "5"
    digits = (whole + fraction[:6].ljust(6, "0")).lstrip(WHITE)
    if not _UNSIGNED.fullmatch(digits):
        raise BadValue(f"invalid number '{text}'")
    value = int(digits, 10) + round_up
    if value > 2**64 - 1:
        raise BadValue(f"number '{text}' outside unsigned decimal range")
    if not lo <= value <= hi:
        raise BadValue(f"number '{text}' outside range [{_micro(lo)}, {_micro(hi)}]")
    return value / 1_000_000


def _micro(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


_TRUE = ("true", "on", "yes")
_FALSE = ("false", "off", "no")


def read_bool(node: Node, what: str | None = None) -> bool:
    """`keyword [<BOOL>]`: no parameter means true."""
    if not node.args:
        return True
    word = node.args[0]
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise BadValue(f"Invalid {what or node.keyword} parameter {word}")


def read_ip(text: str, what: str = "address") -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise BadValue(f"Invalid {what} '{text}'") from None


def read_port(text: str, what: str = "port") -> int:
    value = _integer(text)
    if value is None or not 0 <= value <= 65535:
        raise BadValue(f"Invalid {what} '{text}'")
    return value


def read_sockaddr(ip: str, port: str | None) -> tuple[str, int | None]:
    """keepalived's inet_stosockaddr: an address (from a '-' or '/' on, the word is ignored) and
    a port 1..65535; a port of zeros is no port (None). A bad port raises the number's complaint,
    a bad address a BadValue without a message: the caller says what was skipped."""
    port_str = port if port and port.strip("0") else None
    number = read_unsigned(port_str, 1, 65535) if port_str is not None else None
    try:
        address = ipaddress.ip_address(re.split("[-/]", ip, maxsplit=1)[0])
    except ValueError:
        raise BadValue() from None
    if (address.version == 6) != (":" in ip):
        raise BadValue()
    return str(address), number


def read_netmask(text: str) -> str:
    """An IPv4 netmask that is solid (contiguous ones), or an IPv6 prefix length 1..128."""
    if "." not in text:
        length = read_int(text, 1, 128)
        return str(length)
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        raise BadValue(f"Invalid IPv4 persistence_granularity specified - {text}") from None
    inverted = (~mask) & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise BadValue(f"IPv4 persistence_granularity netmask is not solid - {text}")
    return text


def read_command(node: Node, empty: str) -> list[str]:
    """The first argument as a command line (a quoted word may hold arguments); `empty` if blank."""
    need(node, 1)
    try:
        command = split_command(node.args[0])
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if not command:
        raise BadValue(empty)
    return command


def read_script(node: Node) -> Script:
    """`<SCRIPT> [user [group]]`; the script word may be a quoted command with arguments."""
    command = read_command(node, f"{node.keyword} script is empty")
    user = node.args[1] if len(node.args) > 1 else None
    group = node.args[2] if len(node.args) > 2 else None
    return Script(command, user, group)


def read_hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadValue(f"Invalid hex string '{text}'") from None


def parse_range(word: str) -> tuple[str, str]:
    """`IP`, `IP-LAST` (last octet/hextet), `IP-IP` or `NET/LEN` -> (first, last)."""
    if "/" in word:
        try:
            net = ipaddress.ip_network(word, strict=True)
        except ValueError:
            raise BadValue(f"Invalid virtual server group IP address/prefix {word}") from None
        return str(net.network_address), str(net.broadcast_address)
    if "-" not in word:
        return read_ip(word, "virtual server group IP address"), read_ip(word, "virtual server group IP address")
    head, tail = word.split("-", 1)
    first = ipaddress.ip_address(read_ip(head, "virtual server group IP address"))
    if "." in tail or ":" in tail:
        last = ipaddress.ip_address(read_ip(tail, "virtual server group IP address"))
    else:
        base = 10 if first.version == 4 else 16
        limit = 255 if first.version == 4 else 0xFFFF
        try:
            end = int(tail, base)
        except ValueError:
            raise BadValue(f"Invalid virtual server group IP address range {word}") from None
        low = int(first) & limit
        if end > limit or end < low:
            raise BadValue(f"Invalid virtual server group IP address range {word}")
        last = ipaddress.ip_address(int(first) - low + end)
    if last.version != first.version or int(last) < int(first):
        raise BadValue(f"Invalid virtual server group IP address range {word}")
    return str(first), str(last)
