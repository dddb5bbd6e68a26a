"""Readers for keepalived parameter types, with keepalived's wording when a value is bad.

A bad value raises `BadValue`; the parser logs it and ignores the keyword, as keepalived does.
A missing parameter is fatal (keepalived exits), so `need` raises `ConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

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


class Warned(BadValue):
    """A value keepalived complains about and uses all the same: `value`, after `messages`."""

    def __init__(self, value: Any, *messages: str):
        super().__init__(*messages)
        self.value = value


def need(node: Node, count: int) -> None:
    """Fail like keepalived's null_strvec when fewer than `count` parameters follow the keyword."""
    if len(node.args) < count:
        pos = len(node.args) + 2
        raise ConfigError(f"*** Configuration line starting `{node.keyword}` is missing a parameter after keyword "
                          f"`{node.words[-1]}` at word position {pos}", node.file, node.line)


# keepalived's number readers (lib/parser.c) with ignore_error set, as the daemon runs them: a
# word with something left after its digits is logged ("WARNING - invalid number") and, if the
# digits read so far are in range, used; `strict` is for the handlers that pass ignore_error=false.
# (`keepalived -t` prints the same messages without "WARNING - ", and refuses such integers.)
_LEADING = re.compile(r"([+-]?)([0-9]*)")
ULONG_MAX = 2**64 - 1


def _strtoul(text: str) -> tuple[int, bool, bool]:
    """strtoul/strtoull of a word: (value, nothing left over, overflow)."""
    body = text.lstrip(WHITE)
    match = _LEADING.match(body)
    assert match is not None
    sign, digits = match.groups()
    if not digits:
        return 0, body == "", False
    value = int(digits, 10)
    if value > ULONG_MAX:
        return ULONG_MAX, match.end() == len(body), True
    return (ULONG_MAX + 1 - value) % (ULONG_MAX + 1) if sign == "-" else value, match.end() == len(body), False


def _finish(value: Any, ok: bool, lenient: bool, message: str) -> Any:
    if lenient and ok:
        raise Warned(value, message)
    raise BadValue(message)


def read_unsigned(text: str, lo: int = 0, hi: int = UINT_MAX, strict: bool = False) -> int:
    """keepalived's read_unsigned: an unsigned integer in [lo, hi], with its messages."""
    warn = "" if strict else "WARNING - "
    value, whole, overflow = _strtoul(text)
    if text.lstrip(WHITE).startswith("-"):
        message = f"{warn}negative number '{text}'"
    elif not whole:
        message = f"{warn}invalid number '{text}'"
    elif overflow or value > UINT_MAX:
        message = f"{warn}number '{text}' outside unsigned integer range"
    elif not lo <= value <= hi:
        message = f"{warn}number '{text}' outside range [{lo}, {hi}]"
    else:
        return value
    return _finish(value, lo <= value <= hi, not strict, message)


def read_int(text: str, lo: int = -(2**31), hi: int = 2**31 - 1, strict: bool = False) -> int:
    """keepalived's read_int: a signed integer in [lo, hi], with its messages."""
    warn = "" if strict else "WARNING - "
    body = text.lstrip(WHITE)
    match = _LEADING.match(body)
    assert match is not None
    sign, digits = match.groups()
    value = int(sign + digits, 10) if digits else 0
    whole = match.end() == len(body) and (bool(digits) or text == "")
    if not whole:
        message = f"{warn}invalid number '{text}'"
    elif not -(2**31) <= value <= 2**31 - 1:
        message = f"{warn}number '{text}' outside integer range"
    elif not lo <= value <= hi:
        message = f"number '{text}' outside range [{lo}, {hi}]"
    else:
        return value
    return _finish(value, lo <= value <= hi, not strict, message)


def read_file_weight(node: Node, what: str) -> tuple[int, bool]:
    """`weight N [reverse]` of FILE_CHECK and track_file: the weight and whether it is reversed."""
    need(node, 1)
    weight = read_int(node.args[0], -(2**31) + 1, 2**31 - 1)
    if len(node.args) > 1 and node.args[1] != "reverse":
        raise BadValue(f"{what} unknown weight option {node.args[1]}")
    return weight, len(node.args) > 1


def read_timer(text: str, lo: int = 0, hi: int = TIMER_MAXIMUM) -> float:
    """keepalived's read_timer: seconds with up to 6 decimals, between lo and hi microseconds;
    returns seconds. As in keepalived, more decimals are rounded with a warning, and a word with
    something left over is logged and its leading digits used (as microseconds) when in range."""
    warn = "WARNING - "
    if text.startswith("-"):
        raise BadValue(f"{warn}negative number '{text}'")
    notes: list[str] = []
    whole, _, fraction = text.partition(".")
    round_up = False
    if len(fraction) > 6:
        notes.append(f"{warn}number '{text}' has too many decimal places")
        round_up = fraction[6] >= "5"
        fraction = fraction[:6]
    value, complete, overflow = _strtoul(whole + fraction.ljust(6, "0"))
    value += round_up
    if not complete:
        notes.append(f"{warn}invalid number '{text}'")
    elif overflow:
        raise BadValue(*notes, f"{warn}number '{text}' outside unsigned decimal range")
    elif not lo <= value <= hi:
        raise BadValue(*notes, f"{warn}number '{text}' outside range [{_micro(lo)}, {_micro(hi)}]")
    if not complete and not lo <= value <= hi:
        raise BadValue(*notes)
    if notes:
        raise Warned(value / 1_000_000, *notes)
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
    value, whole, _ = _strtoul(text)
    if not whole or text.lstrip(WHITE).startswith("-") or not 0 <= value <= 65535:
        raise BadValue(f"Invalid {what} '{text}'")
    return value


def read_sockaddr(ip: str, port: str | None) -> tuple[str, int | None]:
    """keepalived's inet_stosockaddr: an address (from a '-' or '/' on, the word is ignored) and
    a port 1..65535; a port of zeros is no port (None). A bad port raises the number's complaint,
    a bad address a BadValue without a message: the caller says what was skipped."""
    port_str = port if port and port.strip("0") else None
    notes: tuple[str, ...] = ()
    try:
        number = read_unsigned(port_str, 1, 65535) if port_str is not None else None
    except Warned as warned:
        number, notes = warned.value, warned.messages
    try:
        address = ipaddress.ip_address(re.split("[-/]", ip, maxsplit=1)[0])
    except ValueError:
        raise BadValue(*notes) from None
    if (address.version == 6) != (":" in ip):
        raise BadValue(*notes)
    if notes:
        raise Warned((str(address), number), *notes)
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
