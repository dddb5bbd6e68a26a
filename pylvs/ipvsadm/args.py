"""Parse an ipvsadm 1.31 command line into control-protocol requests (ipvs.md §1.1-1.4).

The parser mirrors ipvsadm's popt-based `parse_options` + `process_options` closely, because
scripts depend on its quirks: the command must be the first option, errors are reported in
the order ipvsadm finds them, and every message and exit code is ipvsadm's (2 for `fail()`,
255 for `tryhelp_exit()` and popt errors). FULLNAT extras follow the DPVS fork: `--fullnat`
(upstream `-b` stays --sched-flags) and -P/-Q/-G with -z/--laddr (and -F/--ifname).
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pylvs.engine.services import DEFAULT_PERSISTENT_TIMEOUT, DEFAULT_SCHEDULER
from pylvs.ipvs_uapi import (
    AF_INET,
    AF_INET6,
    PROTO_NAMES,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    SVC_F_SCHED_MASK,
    TUNNEL_FLAGS,
)
from pylvs.ipvsadm.format import Fmt

MAX_TIMEOUT = 86400 * 31
INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
DEF_MCAST_IFN = "eth0"
_PROTO_NAMES = {number: label.lower() for number, label in PROTO_NAMES.items()}

# ---------------------------------------------------------------------------------------------
# commands, options and the legality matrix (ipvsadm.c commands_v_options, plus the DPVS laddr ops)

# internal command names, as ipvsadm prints them in error messages
COMMANDS = (
    "add-service", "edit-service", "delete-service", "flush", "list", "add-server", "delete-server",
    "edit-server", "set", "start-daemon", "stop-daemon", "restore", "save", "zero",
    "add-laddr", "del-laddr", "get-laddr",
)

# option names in ipvsadm's bit order: the order errors are found in
OPTNAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
    "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold", "mcast-interface",
    "timeout", "daemon", "stats", "rate", "thresholds", "persistent-conn",
    "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
    "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
    "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum", "laddr", "ifname",
    "proxy-protocol", "synproxy",
)
_OPT_INDEX = {name: i for i, name in enumerate(OPTNAMES)}

# '+' required, 'x' illegal, '1' at most one of the '1's, '.' optional; columns as OPTNAMES,
# written in groups of six.
_MATRIX_ROWS = {
    "add-service":    "xx+... xxxxxx xxxxxx xxx... xxxxxx xxxxxx ..",
    "edit-service":   "xx+... xxxxxx xxxxxx xxx... xxxxxx xxxxxx ..",
    "delete-service": "xx+xxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "flush":          "xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "list":           ".11xxx xxxxxx 11.... ...xxx xxxx.x xxxxxx xx",
    "add-server":     "xx+xxx +....x xxxxxx xxxxxx xxxxx. ....xx xx",
    "delete-server":  "xx+xxx +xxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "edit-server":    "xx+xxx +....x xxxxxx xxxxxx xxxxx. ....xx xx",
    "set":            "xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "start-daemon":   "xxxxxx xxxxx. xxxxxx x.xxxx ....xx xxxxxx xx",
    "stop-daemon":    "xxxxxx xxxxxx xxxxxx x.xxxx xxxxxx xxxxxx xx",
    "restore":        "xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "save":           ".xxxxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "zero":           "xx.xxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
    "add-laddr":      "xx+xxx xxxxxx xxxxxx xxxxxx xxxxxx xxxx+. xx",
    "del-laddr":      "xx+xxx xxxxxx xxxxxx xxxxxx xxxxxx xxxx+. xx",
    "get-laddr":      "xx.xxx xxxxxx xxxxxx xxxxxx xxxxxx xxxxxx xx",
}
MATRIX = {cmd: row.replace(" ", "") for cmd, row in _MATRIX_ROWS.items()}

# tunnel type vs (tun-port, tun-nocsum, tun-csum, tun-remcsum): tunnel_types_v_options
_TUN_OPTS = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
_TUN_MATRIX = {"ipip": "xxxx", "gue": "+111", "gre": "x11x"}
_TUN_FLAG_NAMES = {value: name for name, value in TUNNEL_FLAGS.items()}

SCHED_FLAG_BITS = {
    "flag-1": (SVC_F_SCHED1, None), "flag-2": (SVC_F_SCHED2, None), "flag-3": (SVC_F_SCHED3, None),
    "sh-fallback": (SVC_F_SCHED1, "sh"), "sh-port": (SVC_F_SCHED2, "sh"),
    "mh-fallback": (SVC_F_SCHED1, "mh"), "mh-port": (SVC_F_SCHED2, "mh"),
}


@dataclass(frozen=True)
class _OptSpec:
    key: str
    long: str | None
    short: str | None
    arg: str  # "none" | "required" | "optional"


_SPECS = (
    # commands
    _OptSpec("A", "add-service", "A", "none"), _OptSpec("E", "edit-service", "E", "none"),
    _OptSpec("D", "delete-service", "D", "none"), _OptSpec("C", "clear", "C", "none"),
    _OptSpec("L", "list", "L", "none"), _OptSpec("L", None, "l", "none"),
    _OptSpec("Z", "zero", "Z", "none"), _OptSpec("a", "add-server", "a", "none"),
    _OptSpec("e", "edit-server", "e", "none"), _OptSpec("d", "delete-server", "d", "none"),
    _OptSpec("set", "set", None, "none"), _OptSpec("h", "help", "h", "none"),
    _OptSpec("v", "version", "v", "none"), _OptSpec("R", "restore", "R", "none"),
    _OptSpec("S", "save", "S", "none"),
    _OptSpec("start-daemon", "start-daemon", None, "required"),
    _OptSpec("stop-daemon", "stop-daemon", None, "required"),
    _OptSpec("P", "add-laddr", "P", "none"), _OptSpec("Q", "del-laddr", "Q", "none"),
    _OptSpec("G", "get-laddr", "G", "none"),
    # options
    _OptSpec("t", "tcp-service", "t", "required"), _OptSpec("u", "udp-service", "u", "required"),
    _OptSpec("sctp", "sctp-service", None, "required"),
    _OptSpec("f", "fwmark-service", "f", "required"),
    _OptSpec("s", "scheduler", "s", "required"), _OptSpec("p", "persistent", "p", "optional"),
    _OptSpec("M", "netmask", "M", "required"), _OptSpec("r", "real-server", "r", "required"),
    _OptSpec("m", "masquerading", "m", "none"), _OptSpec("i", "ipip", "i", "none"),
    _OptSpec("g", "gatewaying", "g", "none"), _OptSpec("fullnat", "fullnat", None, "none"),
    _OptSpec("w", "weight", "w", "required"), _OptSpec("x", "u-threshold", "x", "required"),
    _OptSpec("y", "l-threshold", "y", "required"), _OptSpec("n", "numeric", "n", "none"),
    _OptSpec("c", "connection", "c", "none"),
    _OptSpec("mcast-interface", "mcast-interface", None, "required"),
    _OptSpec("syncid", "syncid", None, "required"), _OptSpec("timeout", "timeout", None, "none"),
    _OptSpec("daemon", "daemon", None, "none"), _OptSpec("stats", "stats", None, "none"),
    _OptSpec("rate", "rate", None, "none"), _OptSpec("thresholds", "thresholds", None, "none"),
    _OptSpec("persistent-conn", "persistent-conn", None, "none"),
    _OptSpec("nosort", "nosort", None, "none"), _OptSpec("sort", "sort", None, "none"),
    _OptSpec("X", "exact", "X", "none"), _OptSpec("6", "ipv6", "6", "none"),
    _OptSpec("o", "ops", "o", "none"), _OptSpec("pe", "pe", None, "required"),
    _OptSpec("proxy-protocol", "proxy-protocol", None, "required"),
    _OptSpec("j", "synproxy", "j", "required"),
    _OptSpec("b", "sched-flags", "b", "required"),
    _OptSpec("mcast-group", "mcast-group", None, "required"),
    _OptSpec("mcast-port", "mcast-port", None, "required"),
    _OptSpec("mcast-ttl", "mcast-ttl", None, "required"),
    _OptSpec("sync-maxlen", "sync-maxlen", None, "required"),
    _OptSpec("tun-info", "tun-info", None, "none"), _OptSpec("tun-type", "tun-type", None, "required"),
    _OptSpec("tun-port", "tun-port", None, "required"),
    _OptSpec("tun-nocsum", "tun-nocsum", None, "none"), _OptSpec("tun-csum", "tun-csum", None, "none"),
    _OptSpec("tun-remcsum", "tun-remcsum", None, "none"),
    _OptSpec("z", "laddr", "z", "required"), _OptSpec("F", "ifname", "F", "required"),
)
_LONG = {s.long: s for s in _SPECS if s.long}
_SHORT = {s.short: s for s in _SPECS if s.short}

# first-option keys that select a command
_COMMAND_KEYS = {
    "A": "add-service", "E": "edit-service", "D": "delete-service", "C": "flush", "L": "list",
    "Z": "zero", "a": "add-server", "e": "edit-server", "d": "delete-server", "set": "set",
    "R": "restore", "S": "save", "start-daemon": "start-daemon", "stop-daemon": "stop-daemon",
    "P": "add-laddr", "Q": "del-laddr", "G": "get-laddr",
}


class ParseError(Exception):
    """A rejected command line: `message` goes to stderr, `code` is the exit status.

    `fatal` is False only for popt's errors after the command option: ipvsadm returns from those
    (so `-R` reads on), where fail() and tryhelp_exit() end the process.
    """

    def __init__(self, message: str, code: int = 2, fatal: bool = True):
        super().__init__(message)
        self.message = message
        self.code = code
        self.fatal = fatal


def tryhelp(prog: str) -> ParseError:
    return ParseError(f"Try `{prog} -h' or '{prog} --help' for more information.", 255)


def _fail(message: str) -> ParseError:
    return ParseError(message, 2)


@dataclass
class Command:
    """A parsed command line.

    `requests` are the control-protocol requests that carry out a changing command; listing
    commands (`list`, `save`, `get-laddr`) instead set `listing` (what to fetch and print),
    `fmt` and optionally `svc`. `help`, `version` and `restore` are handled by the caller.
    """

    name: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    listing: str | None = None  # "all" | "service" | "conns" | "timeout" | "daemon" | "save" | "laddr"
    fmt: Fmt = Fmt.NONE
    svc: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# a popt look-alike: same clustering, argument and error rules


class _PoptError(Exception):
    def __init__(self, text: str, token: str):
        super().__init__(text)
        self.text = text
        self.token = token


# The DPVS-style extensions are options only for the commands they extend; after any other command
# option they are unknown, as in ipvsadm (`-L -n -Q` is `-Q: unknown option`). As the first option
# every one is known: -P, -Q and -G are commands there.
_EXTENSION_COMMANDS = {
    "P": (), "Q": (), "G": (),
    "z": ("add-laddr", "del-laddr", "get-laddr"), "F": ("add-laddr", "del-laddr", "get-laddr"),
    "fullnat": ("add-server", "edit-server"), "proxy-protocol": ("add-service", "edit-service"),
    "j": ("add-service", "edit-service"),
}


class _Scanner:
    """Yields (key, argument) per option; non-options are kept in `leftovers` (popt permutes).
    `command` is set once the first option chose one; it decides which extensions are options."""

    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)
        self.leftovers: list[str] = []
        self.pos = 0
        self.command: str | None = None

    @property
    def last_token(self) -> str:
        """poptBadOption(): the argv element consumed last."""
        return self.argv[self.pos - 1] if self.pos else ""

    def _take_arg(self, spec: _OptSpec, token: str) -> str | None:
        if self.pos >= len(self.argv):
            if spec.arg == "required":
                raise _PoptError("missing argument", token)
            return None
        nxt = self.argv[self.pos]
        if spec.arg == "optional" and nxt.startswith("-"):
            return None
        self.pos += 1
        return nxt

    def _known(self, spec: _OptSpec | None) -> _OptSpec | None:
        if spec is None or self.command is None or self.command in _EXTENSION_COMMANDS.get(spec.key, (self.command,)):
            return spec
        return None

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        only_args = False
        while self.pos < len(self.argv):
            token = self.argv[self.pos]
            self.pos += 1
            if only_args or token == "-" or not token.startswith("-"):
                self.leftovers.append(token)
            elif token == "--":
                only_args = True
            elif token.startswith("--"):
                name, eq, value = token[2:].partition("=")
                spec = self._known(_LONG.get(name))
                if spec is None:
                    raise _PoptError("unknown option", token)
                if spec.arg == "none":
                    if eq:
                        raise _PoptError("option does not take an argument", token)
                    yield spec.key, None
                else:
                    yield spec.key, value if eq else self._take_arg(spec, token)
            else:
                yield from self._short_cluster(token)

    def _short_cluster(self, token: str) -> Iterator[tuple[str, str | None]]:
        letters = token[1:]
        for i, letter in enumerate(letters):
            spec = self._known(_SHORT.get(letter))
            if spec is None:
                raise _PoptError("unknown option", token)
            rest = letters[i + 1:]
            if spec.arg == "none":
                if rest.startswith("="):
                    raise _PoptError("option does not take an argument", token)
                yield spec.key, None
                continue
            if rest:  # the rest of the cluster is the argument: -p300, -t=vip:80
                yield spec.key, rest[1:] if rest.startswith("=") else rest
            else:
                yield spec.key, self._take_arg(spec, token)
            return


# ---------------------------------------------------------------------------------------------
# value parsers (ipvsadm.c string_to_number, parse_service, ...)

# strtol/atoi syntax: optional C whitespace and sign, decimal digits
_C_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _strtol(text: str) -> int | None:
    """strtol(s, &end, 10) with `*end == '\\0'` required; None on garbage or ERANGE."""
    m = _C_INT.fullmatch(text)
    if m is None:
        return None
    value = int(m.group(1))
    return value if -(2**63) <= value < 2**63 else None


def string_to_number(text: str, low: int, high: int) -> int | None:
    value = _strtol(text)
    return value if value is not None and low <= value <= high else None


def _atoi(text: str) -> int:
    m = _C_INT.match(text)
    return int(m.group(1)) if m else 0


def parse_timeout(text: str | None, low: int, high: int) -> int:
    if text is None:  # `-p` without a value
        return DEFAULT_PERSISTENT_TIMEOUT
    value = string_to_number(text, low, high)
    if value is None:
        raise _fail(f"invalid timeout value `{text}' specified")
    return value


def _parse_fwmark(text: str) -> int:
    value = _strtol(text)
    if value is None or value <= 0 or value > UINT_MAX:
        raise _fail(f"invalid fwmark value `{text}' specified")
    return value


def _inet_aton(text: str) -> str | None:
    """inet_aton's lenient IPv4 syntax (`10.1`, `0x0a000001`), normalised to dotted quad."""
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _host_to_addr(name: str) -> str | None:
    """gethostbyname(): IPv4 only, first address."""
    if not name:
        return None
    try:
        return socket.gethostbyname(name)
    except (OSError, UnicodeError, ValueError):
        return None


def _inet6(text: str) -> str | None:
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        return None


def _service_to_port(name: str, proto: int) -> int | None:
    protoname = _PROTO_NAMES.get(proto)
    if protoname is None or not name:
        return None
    try:
        return socket.getservbyname(name, protoname)
    except (OSError, UnicodeError, ValueError):
        return None


@dataclass
class _Addr:
    """The address part of an ipvs_service_t that parse_service writes into."""

    af: int = 0
    addr: str = ""
    port: int = 0


def parse_service(text: str, target: _Addr, proto: int) -> tuple[bool, bool]:
    """parse_service: returns (address set, port set); (False, _) means rejected.

    Writes af, addr and port into `target` as the C code does; `proto` selects the services
    database for port names (none before -t/-u is seen, as in ipvsadm).
    """
    if all(c in "0123456789" for c in text):  # also rejects the empty string, as str_is_digit
        return (False, False)
    port_text: str | None = None
    host = text
    if text.startswith("["):
        inner, sep, after = text[1:].partition("]")
        if not sep or not after.startswith(":"):
            return (False, False)
        host, port_text = inner, after[1:]
    v6 = _inet6(host)
    if v6 is not None:
        target.af, target.addr = AF_INET6, v6
    else:
        # not IPv6: the port is after the last ':' of what is left (a bracketed port is lost)
        host, sep, tail = host.rpartition(":")
        if sep:
            port_text = tail
        else:
            host, port_text = tail, None
        v4 = _inet_aton(host) or _host_to_addr(host)
        if v4 is None:
            return (False, False)
        target.af, target.addr = AF_INET, v4
    if port_text is None:
        return (True, False)
    port = string_to_number(port_text, 0, 65535)
    if port is None:
        port = _service_to_port(port_text, proto)
    if port is None:
        return (False, False)
    target.port = port
    return (True, True)


def _parse_v4_netmask(text: str) -> str | None:
    return _inet_aton(text) or _host_to_addr(text)


def _parse_sched_flags(sched: str, arg: str) -> int:
    sched = sched or DEFAULT_SCHEDULER  # checked against -s, or the default wlc
    flags = 0
    for name in (tok for tok in arg.split(",") if tok):
        entry = SCHED_FLAG_BITS.get(name)
        if entry is None:
            raise _fail(f"invalid scheduler flag `{name}'")
        bit, needs = entry
        flags |= bit
        if needs is not None and sched != needs:
            raise _fail(f"incompatible scheduler flag `{name}'")
    return flags


def _is_multicast(addr: str, v6: bool) -> bool:
    try:
        if v6:
            return socket.inet_pton(socket.AF_INET6, addr)[0] == 0xFF
        return 224 <= socket.inet_pton(socket.AF_INET, addr)[0] <= 239
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# the command entry being built (struct ipvs_command_entry)


@dataclass
class _Entry:
    cmd: str = ""
    options: int = 0
    fmt: Fmt = Fmt.NONE
    # service
    svc: _Addr = field(default_factory=_Addr)
    protocol: int = 0
    fwmark: int = 0
    sched: str = ""
    flags: int = 0
    timeout: int = 0
    netmask: str | int = "255.255.255.255"
    pe: str = ""
    proxy_protocol: str = ""  # FULLNAT client address header (DPVS --proxy-protocol)
    synproxy: bool = False  # the director answers SYNs with cookies (DPVS -j/--synproxy enable)
    sched_flags_arg: str = ""
    # destination (defaults as process_options sets them: weight 1, DR, ipip)
    dest: _Addr = field(default_factory=_Addr)
    method: str = "route"
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: str = "ipip"
    tun_port: int = 0
    tun_flags: int = 0
    # --set
    timeouts: tuple[int, int, int] = (0, 0, 0)
    # sync daemon
    daemon_state: str = ""
    mcast_ifn: str = ""
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: str = ""
    mcast_port: int = 0
    mcast_ttl: int = 0
    # FULLNAT local address
    laddr: str = ""
    ifname: str = ""

    def has(self, name: str) -> bool:
        return bool(self.options & (1 << _OPT_INDEX[name]))

    def set_option(self, name: str) -> None:
        bit = 1 << _OPT_INDEX[name]
        if self.options & bit:
            raise _fail(f"multiple '{name}' options specified")
        self.options |= bit


# ---------------------------------------------------------------------------------------------
# parse_options


def _daemon_state(value: str | None, message: str) -> str:
    if value in ("master", "backup"):
        return value
    raise _fail(message)


def _first_option(entry: _Entry, key: str, value: str | None, prog: str) -> Command | None:
    """The command switch; returns a finished Command for -h / -v."""
    if key == "h":
        return Command("help")
    if key == "v":
        return Command("version")
    cmd = _COMMAND_KEYS.get(key)
    if cmd is None:
        raise tryhelp(prog)
    entry.cmd = cmd
    if key == "start-daemon":
        entry.daemon_state = _daemon_state(value, "illegal start-daemon parameter specified")
    elif key == "stop-daemon":
        entry.daemon_state = _daemon_state(value, "illegal start_daemon specified")  # sic
    return None


def _service_option(entry: _Entry, key: str, value: str) -> None:
    entry.set_option("service-address")
    entry.protocol = {"t": PROTO_TCP, "u": PROTO_UDP, "sctp": PROTO_SCTP}[key]
    ok, _ = parse_service(value, entry.svc, entry.protocol)
    if not ok:
        raise _fail("illegal virtual server address[:port] specified")
    if entry.svc.af == AF_INET6:
        entry.netmask = 128


def _real_server_option(entry: _Entry, value: str) -> None:
    entry.set_option("real-server")
    # parsed into a copy of the service, so a missing port becomes the vport known *so far*
    target = _Addr(entry.svc.af, entry.svc.addr, entry.svc.port)
    ok, has_port = parse_service(value, target, entry.protocol)
    entry.dest = target
    if not ok:
        raise _fail("illegal real server address[:port] specified")
    if not has_port:
        entry.dest.port = entry.svc.port


def _number_option(entry: _Entry, name: str, value: str, low: int, high: int, what: str) -> int:
    entry.set_option(name)
    number = string_to_number(value, low, high)
    if number is None:
        raise _fail(f"illegal {what} specified")
    return number


_FMT_OPTIONS = {
    "stats": ("stats", Fmt.STATS), "rate": ("rate", Fmt.RATE), "thresholds": ("thresholds", Fmt.THRESHOLDS),
    "persistent-conn": ("persistent-conn", Fmt.PERSISTENTCONN), "nosort": ("nosort", Fmt.NOSORT),
    "X": ("exact", Fmt.EXACT), "tun-info": ("tun-info", Fmt.TUN_INFO), "n": ("numeric", Fmt.NUMERIC),
}
_PLAIN_OPTIONS = {"c": "connection", "timeout": "timeout", "daemon": "daemon"}
_FORWARD = {"m": "masq", "i": "tunnel", "g": "route", "fullnat": "fullnat"}
_TUN_FLAG_OPTION = {f"tun-{name}": value for name, value in TUNNEL_FLAGS.items()}


def _option(entry: _Entry, key: str, value: str | None, bad_token: str) -> None:
    """One option after the command, as the `while (poptGetNextOpt)` switch handles it."""
    arg = value if value is not None else ""
    if key in ("t", "u", "sctp"):
        _service_option(entry, key, arg)
    elif key == "f":
        entry.set_option("service-address")
        entry.svc.af, entry.protocol = AF_INET, PROTO_TCP
        entry.fwmark = _parse_fwmark(arg)
    elif key == "s":
        entry.set_option("scheduler")
        entry.sched = arg[:15]
    elif key == "p":
        entry.set_option("persistent")
        entry.flags |= SVC_F_PERSISTENT
        entry.timeout = parse_timeout(value, 1, MAX_TIMEOUT)
    elif key == "M":
        entry.set_option("netmask")
        if entry.svc.af != AF_INET6:
            mask = _parse_v4_netmask(arg)
            if mask is None:
                raise _fail("illegal virtual server persistent mask specified")
            entry.netmask = mask
        else:
            entry.netmask = _atoi(arg)
            if not 1 <= entry.netmask <= 128:
                raise _fail("illegal ipv6 netmask specified")
    elif key == "r":
        _real_server_option(entry, arg)
    elif key in _FORWARD:
        entry.set_option("forwarding-method")
        entry.method = _FORWARD[key]
    elif key == "w":
        # 0..INT_MAX as the kernel takes it (Debian's ipvsadm 1.31 patch; upstream stops at 65535)
        entry.weight = _number_option(entry, "weight", arg, 0, INT_MAX, "weight")
    elif key == "x":
        entry.u_threshold = _number_option(entry, "u-threshold", arg, 0, INT_MAX, "u_threshold")
    elif key == "y":
        entry.l_threshold = _number_option(entry, "l-threshold", arg, 0, INT_MAX, "l_threshold")
    elif key in _PLAIN_OPTIONS:
        entry.set_option(_PLAIN_OPTIONS[key])
    elif key in _FMT_OPTIONS:
        name, flag = _FMT_OPTIONS[key]
        entry.set_option(name)
        entry.fmt |= flag
    elif key == "sort":
        pass  # the default; accepted for compatibility
    elif key == "mcast-interface":
        entry.set_option("mcast-interface")
        entry.mcast_ifn = arg[:15]
    elif key == "syncid":
        entry.syncid = _number_option(entry, "syncid", arg, 0, 255, "syncid")
    elif key == "6":
        if not entry.fwmark:
            raise _fail("-6 used before -f\n")
        entry.svc.af, entry.netmask = AF_INET6, 128
    elif key == "o":
        entry.set_option("ops")
        entry.flags |= SVC_F_ONEPACKET
    elif key == "pe":
        entry.set_option("pe")
        entry.pe = arg[:15]
    elif key == "proxy-protocol":
        entry.set_option("proxy-protocol")
        if arg not in ("disable", "v1", "v2"):
            raise _fail(f"invalid proxy protocol `{arg}' (disable, v1 or v2)")
        entry.proxy_protocol = "" if arg == "disable" else arg
    elif key == "j":
        entry.set_option("synproxy")
        if arg not in ("enable", "disable"):
            raise _fail(f"invalid synproxy `{arg}' (enable or disable)")
        entry.synproxy = arg == "enable"
    elif key == "b":
        entry.set_option("sched-flags")
        entry.sched_flags_arg = arg[:127]
    elif key == "mcast-group":
        entry.set_option("mcast-group")
        v6 = ":" in arg
        if not _is_multicast(arg, v6):
            raise _fail(f"invalid IPv{6 if v6 else 4} mcast-group `{arg}'")
        entry.mcast_group = _inet6(arg) if v6 else arg  # type: ignore[assignment]
    elif key == "mcast-port":
        entry.mcast_port = _number_option(entry, "mcast-port", arg, 1, 65535, "mcast-port")
    elif key == "mcast-ttl":
        entry.mcast_ttl = _number_option(entry, "mcast-ttl", arg, 1, 255, "mcast-ttl")
    elif key == "sync-maxlen":
        entry.sync_maxlen = _number_option(entry, "sync-maxlen", arg, 1, 65535 - 20 - 8, "sync-maxlen")
    elif key == "tun-type":
        entry.set_option("tun-type")
        if arg not in _TUN_MATRIX:
            raise _fail("illegal tunnel type specified")
        entry.tun_type = arg
    elif key == "tun-port":
        entry.tun_port = _number_option(entry, "tun-port", arg, 1, 65535, "tunnel port")
    elif key in _TUN_FLAG_OPTION:
        entry.set_option(key)
        entry.tun_flags |= _TUN_FLAG_OPTION[key]
    elif key == "z":
        entry.set_option("laddr")
        laddr = _inet6(arg) if ":" in arg else _inet_pton4(arg)
        if laddr is None:
            raise _fail("illegal local address specified")
        entry.laddr = laddr
    elif key == "F":
        entry.set_option("ifname")
        entry.ifname = arg[:15]
    else:  # a second command, -h, -v ...
        raise _fail(f"invalid option `{bad_token}'")


def _inet_pton4(text: str) -> str | None:
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def _parse_options(argv: Sequence[str], prog: str) -> tuple[_Entry, Command | None]:
    entry = _Entry()
    scanner = _Scanner(argv)
    events = iter(scanner)
    try:
        key, value = next(events)
    except (StopIteration, _PoptError):
        raise tryhelp(prog) from None
    done = _first_option(entry, key, value, prog)
    if done is not None:
        return entry, done
    scanner.command = entry.cmd
    try:
        for key, value in events:
            _option(entry, key, value, scanner.last_token)
    except _PoptError as err:
        raise ParseError(f"{err.token}: {err.text}", 255, fatal=False) from None

    leftovers = list(scanner.leftovers)
    if entry.cmd == "set":
        if len(leftovers) < 3:
            raise _fail("--set option requires 3 timeout values")
        entry.timeouts = tuple(parse_timeout(v, 0, MAX_TIMEOUT) for v in leftovers[:3])  # type: ignore[assignment]
        leftovers = leftovers[3:]
    if leftovers:
        raise _fail(f"unexpected argument {leftovers[0]}")
    if entry.sched_flags_arg:
        entry.flags &= ~SVC_F_SCHED_MASK
        entry.flags |= _parse_sched_flags(entry.sched, entry.sched_flags_arg)
    return entry, None


# ---------------------------------------------------------------------------------------------
# process_options checks


@functools.cache
def _row_masks(names: tuple[str, ...], row: str) -> tuple[int, int, int]:
    """(required, illegal, exclusive) option bits of a legality row."""
    masks = {"+": 0, "x": 0, "1": 0, ".": 0}
    for name, rule in zip(names, row, strict=True):
        masks[rule] |= 1 << _OPT_INDEX[name]
    return masks["+"], masks["x"], masks["1"]


def _matrix_check(entry: _Entry, names: tuple[str, ...], row: str, subject: str) -> None:
    """One legality row: '+' required, 'x' illegal, '1' at most one of them (ipvsadm's messages)."""
    required, illegal, exclusive = _row_masks(names, row)
    options = entry.options
    if not required & ~options and not illegal & options and (options & exclusive).bit_count() <= 1:
        return  # legal: the walk below, which finds ipvsadm's first complaint, is for errors only
    first_exclusive: str | None = None
    for name, rule in zip(names, row, strict=True):
        if not entry.has(name):
            if rule == "+":
                raise _fail(f"You need to supply the '{name}' option for the {subject}")
            continue
        if rule == "x":
            raise _fail(f"Illegal '{name}' option with the {subject}")
        if rule == "1":
            if first_exclusive is None:
                first_exclusive = name
                continue
            raise _fail(f"The option '{name}' conflicts with the '{first_exclusive}' option in the {subject}")


def _generic_opt_check(entry: _Entry) -> None:
    _matrix_check(entry, OPTNAMES, MATRIX[entry.cmd], f"'{entry.cmd}' command")


def _tunnel_opt_check(entry: _Entry) -> None:
    _matrix_check(entry, _TUN_OPTS, _TUN_MATRIX[entry.tun_type], f"'{entry.tun_type}' tunnel type")


def _semantic_checks(entry: _Entry) -> None:
    cmd = entry.cmd
    if cmd in ("add-service", "edit-service"):
        if not entry.fwmark and not entry.svc.port and not entry.flags & SVC_F_PERSISTENT:
            raise _fail("Zero port specified for non-persistent service")
        if entry.flags & SVC_F_ONEPACKET and not entry.fwmark and entry.protocol != PROTO_UDP:
            raise _fail("One-Packet Scheduling is only for UDP virtual services")
        if not entry.sched:
            entry.sched = DEFAULT_SCHEDULER
    if cmd == "start-daemon" and not entry.mcast_ifn:
        entry.mcast_ifn = DEF_MCAST_IFN
    if cmd in ("add-server", "edit-server"):
        # DR and TUN cannot map ports: the real server port is silently the virtual port
        if not entry.fwmark and entry.method in ("tunnel", "route"):
            entry.dest.port = entry.svc.port
        if entry.dest.af != entry.svc.af and entry.method not in ("tunnel", "fullnat"):  # fullnat: NAT64
            raise _fail("Different address family is allowed only for tunneling servers")
        tun_opts = ("tun-type",) + _TUN_OPTS
        if any(entry.has(name) for name in tun_opts) and entry.method != "tunnel":
            raise _fail("Tunnel options conflict with forward method")
        _tunnel_opt_check(entry)
    if cmd == "list":
        listing_other = entry.has("connection") or entry.has("timeout") or entry.has("daemon")
        columns = entry.has("stats") or entry.has("rate") or entry.has("thresholds")
        no_table = entry.has("timeout") or entry.has("daemon")
        if (listing_other and columns) or (no_table and entry.has("persistent-conn")):
            raise _fail("options conflicts in the list command")


# ---------------------------------------------------------------------------------------------
# requests


def _svc_identity(entry: _Entry) -> dict[str, Any]:
    if entry.fwmark:
        ident: dict[str, Any] = {"fwmark": entry.fwmark}
        if entry.svc.af == AF_INET6:
            ident["af"] = "inet6"
        return ident
    return {"protocol": _PROTO_NAMES[entry.protocol], "addr": entry.svc.addr, "port": entry.svc.port}


def _service(entry: _Entry) -> dict[str, Any]:
    service = _svc_identity(entry) | {
        "scheduler": entry.sched, "flags": entry.flags, "timeout": entry.timeout,
        "netmask": entry.netmask, "pe": entry.pe,
    }
    if entry.proxy_protocol:
        service["proxy_protocol"] = entry.proxy_protocol
    if entry.synproxy:
        service["synproxy"] = True
    return service


def _dest(entry: _Entry) -> dict[str, Any]:
    return {
        "addr": entry.dest.addr, "port": entry.dest.port, "method": entry.method, "weight": entry.weight,
        "u_threshold": entry.u_threshold, "l_threshold": entry.l_threshold, "tun_type": entry.tun_type,
        "tun_port": entry.tun_port, "tun_flags": _TUN_FLAG_NAMES.get(entry.tun_flags, "nocsum"),
    }


def _daemon(entry: _Entry) -> dict[str, Any]:
    daemon: dict[str, Any] = {
        "state": entry.daemon_state, "mcast_ifn": entry.mcast_ifn, "syncid": entry.syncid,
    }
    for key in ("sync_maxlen", "mcast_group", "mcast_port", "mcast_ttl"):
        if getattr(entry, key):
            daemon[key] = getattr(entry, key)
    return daemon


def _build(entry: _Entry) -> Command:
    cmd = entry.cmd
    has_svc = entry.has("service-address")
    svc = _svc_identity(entry) if has_svc else None
    if cmd == "list":
        if entry.has("connection"):
            listing = "conns"
        elif has_svc:
            listing = "service"
        elif entry.has("timeout"):
            listing = "timeout"
        elif entry.has("daemon"):
            listing = "daemon"
        else:
            listing = "all"
        return Command(cmd, listing=listing, fmt=entry.fmt, svc=svc)
    if cmd == "save":
        return Command(cmd, listing="save", fmt=entry.fmt | Fmt.RULE)
    if cmd == "get-laddr":
        return Command(cmd, listing="laddr", svc=svc)
    if cmd == "restore":
        return Command(cmd)
    request: dict[str, Any]
    if cmd in ("add-service", "edit-service"):
        request = {"op": cmd, "service": _service(entry)}
    elif cmd == "delete-service":
        request = {"op": "del-service", "svc": svc}
    elif cmd == "flush":
        request = {"op": "flush"}
    elif cmd in ("add-server", "edit-server"):
        request = {"op": "add-dest" if cmd == "add-server" else "edit-dest", "svc": svc, "dest": _dest(entry)}
    elif cmd == "delete-server":
        request = {"op": "del-dest", "svc": svc, "dest": {"addr": entry.dest.addr, "port": entry.dest.port}}
    elif cmd == "set":
        tcp, tcpfin, udp = entry.timeouts
        request = {"op": "set-timeout", "tcp": tcp, "tcpfin": tcpfin, "udp": udp}
    elif cmd == "start-daemon":
        request = {"op": "start-daemon", "daemon": _daemon(entry)}
    elif cmd == "stop-daemon":
        request = {"op": "stop-daemon", "daemon": {"state": entry.daemon_state}}
    elif cmd == "zero":
        request = {"op": "zero", "svc": svc} if svc else {"op": "zero"}
    else:  # add-laddr / del-laddr
        request = {"op": cmd, "svc": svc, "laddr": entry.laddr}
        if entry.ifname:
            request["ifname"] = entry.ifname
    return Command(cmd, requests=[request], fmt=entry.fmt, svc=svc)


def parse_command(argv: Sequence[str], prog: str = "lvsadm", reading_stdin: bool = False) -> Command:
    """Parse one ipvsadm command line (without the program name); raises ParseError.

    `reading_stdin` is set for the lines of -R, where a nested -R is refused as ipvsadm does.
    """
    entry, done = _parse_options(argv, prog)
    if done is not None:
        return done
    _generic_opt_check(entry)
    _semantic_checks(entry)
    if entry.cmd == "restore" and reading_stdin:
        raise tryhelp(prog)
    return _build(entry)
