"""Render lvsd listing results exactly as ipvsadm 1.31 prints them (ipvs.md §1.6).

Pure functions: they take the `result` objects of the control protocol (docs/control-protocol.md)
and return text. Every width, truncation and trailing space follows ipvsadm's printf formats,
because scripts and monitoring tools parse that output column by column.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
    Method,
)

Obj = Mapping[str, Any]

PROTO_NUMBERS = {label.lower(): number for number, label in PROTO_NAMES.items()}
_PROTO_SWITCHES = {PROTO_TCP: "-t", PROTO_UDP: "-u", PROTO_SCTP: "--sctp-service"}

# Forward column names (fwd_name) by the protocol's method names, and -S switches (fwd_switch);
# FullNat as the DPVS fork prints it, saved with our long option because upstream -b means --sched-flags.
_FWD_NAMES = {method.name.lower(): method.label for method in Method}
_FWD_SWITCHES = {"masq": "-m", "tunnel": "-i", "local": "-g", "route": "-g", "fullnat": "--fullnat"}
_TUN_FLAG_LABELS = {"nocsum": "-c", "csum": "+c", "remcsum": "r+c"}
_TUN_FLAG_OPTIONS = {"nocsum": "--tun-nocsum", "csum": "--tun-csum", "remcsum": "--tun-remcsum"}

_STAT_KEYS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_RATE_KEYS = ("cps", "inpps", "outpps", "inbps", "outbps")


class Fmt(enum.IntFlag):
    """ipvsadm's FMT_* printing flags (same bit values)."""

    NONE = 0
    NUMERIC = 0x0001
    RULE = 0x0002
    STATS = 0x0004
    RATE = 0x0008
    THRESHOLDS = 0x0010
    PERSISTENTCONN = 0x0020
    NOSORT = 0x0040
    EXACT = 0x0080
    TUN_INFO = 0x0100


# ---------------------------------------------------------------------------------------------
# names


def _host_name(addr: str, family: int) -> str:
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return addr


def _port_name(port: int, proto: int) -> str:
    protoname = PROTO_NAMES[proto].lower() if proto in PROTO_NAMES else None
    if protoname is not None:
        try:
            return socket.getservbyport(port, protoname)
        except (OSError, OverflowError):
            pass
    return str(port)


def is_ipv6(addr: str) -> bool:
    return ":" in addr


def _canonical(addr: str) -> str:
    """inet_ntop's spelling, whatever spelling the daemon used."""
    family = socket.AF_INET6 if is_ipv6(addr) else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, addr))
    except OSError:
        return addr


def addrport_name(addr: str, port: int, proto: int, fmt: Fmt) -> str:
    """addrport_to_anyname: `a.b.c.d:port` / `[v6]:port`, names unless -n; at most 59 chars."""
    v6 = is_ipv6(addr)
    if fmt & Fmt.NUMERIC:
        host, portname = _canonical(addr), str(port)
    else:
        host = _host_name(addr, AF_INET6 if v6 else AF_INET)
        portname = _port_name(port, proto)
    text = f"[{host}]:{portname}" if v6 else f"{host}:{portname}"
    return text[:59]  # ipvsadm's malloc(60) buffer


# ---------------------------------------------------------------------------------------------
# numbers and flags


def largenum(value: int, fmt: Fmt) -> str:
    """print_largenum: 9 columns, abbreviated with K/M/G/T unless --exact."""
    if fmt & Fmt.EXACT:
        digits = str(value)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    if value < 100_000_000:
        return f"{value:9d}"
    if value < 1_000_000_000:
        return f"{value // 1000:8d}K"
    if value < 100_000_000_000:
        return f"{value // 1_000_000:8d}M"
    if value < 100_000_000_000_000:
        return f"{value // 1_000_000_000:8d}G"
    return f"{value // 1_000_000_000_000:8d}T"


def sched_flag_names(scheduler: str, flags: int) -> str:
    """print_sched_flags: the flag names depend on the scheduler (ipvs.md §1.5)."""
    if scheduler == "sh":
        names = ((SVC_F_SCHED1, "sh-fallback"), (SVC_F_SCHED2, "sh-port"))
    elif scheduler == "mh":
        names = ((SVC_F_SCHED1, "mh-fallback"), (SVC_F_SCHED2, "mh-port"))
    else:
        names = ((SVC_F_SCHED1, "flag-1"), (SVC_F_SCHED2, "flag-2"), (SVC_F_SCHED3, "flag-3"))
    return ",".join(name for bit, name in names if flags & bit)


# ---------------------------------------------------------------------------------------------
# service attributes as the protocol spells them


def svc_family(svc: Obj) -> int:
    if svc.get("fwmark"):
        return AF_INET6 if svc.get("af") in ("inet6", AF_INET6) else AF_INET
    return AF_INET6 if is_ipv6(str(svc.get("addr", ""))) else AF_INET


def svc_proto(svc: Obj) -> int:
    """The service's protocol as the kernel reports it: 0 for fwmark services (libipvs does not send
    one for them), so their real servers' ports are never named, even without -n."""
    if svc.get("fwmark"):
        return 0
    return PROTO_NUMBERS.get(str(svc.get("protocol", "tcp")).lower(), 0)


def _v4_mask(netmask: Any) -> str:
    if isinstance(netmask, int):  # tolerate a prefix length
        return socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - netmask)) & 0xFFFFFFFF))
    try:
        return socket.inet_ntoa(socket.inet_aton(str(netmask)))
    except OSError:
        return str(netmask)


def _mask_text(svc: Obj) -> str | None:
    """The persistence mask to print, or None when it is the default (/32 or /128)."""
    netmask = svc.get("netmask")
    if svc_family(svc) == AF_INET6:
        prefix = int(netmask) if netmask not in (None, "") else 128
        return None if prefix == 128 else str(prefix)
    text = _v4_mask(netmask if netmask not in (None, "") else "255.255.255.255")
    return None if text == "255.255.255.255" else text


def service_name(svc: Obj, fmt: Fmt) -> str:
    """svc_name of print_service_entry: `TCP  vip:port` / `FWM  1`, or `-t vip:port` / `-f 1` for -S."""
    fwmark = int(svc.get("fwmark") or 0)
    v6 = svc_family(svc) == AF_INET6
    if fwmark:
        if fmt & Fmt.RULE:
            return f"-f {fwmark} -6" if v6 else f"-f {fwmark}"
        return f"FWM  {fwmark} IPv6" if v6 else f"FWM  {fwmark}"
    proto = svc_proto(svc)
    vname = addrport_name(str(svc["addr"]), int(svc["port"]), proto, fmt)
    if fmt & Fmt.RULE:
        return f"{_PROTO_SWITCHES.get(proto, '--xxx-service')} {vname}"
    name = f"{PROTO_NAMES.get(proto, '?'):<4} {vname}"
    return name if v6 else name[:33]


def _counters(obj: Obj, key: str, names: Sequence[str]) -> list[int]:
    values = obj.get(key) or {}
    return [int(values.get(name, 0)) for name in names]


def service_line(svc: Obj, fmt: Fmt) -> str:
    """The virtual service line (without the destinations)."""
    name = service_name(svc, fmt)
    sched = str(svc.get("scheduler", ""))
    flags = int(svc.get("flags", 0))
    pe = str(svc.get("pe") or "")
    if fmt & Fmt.RULE:
        out = f"-A {name} -s {sched}"
        if flags & SVC_F_PERSISTENT:
            out += f" -p {int(svc.get('timeout', 0))}"
            mask = _mask_text(svc)
            if mask is not None:
                out += f" -M {mask}"
        if pe:
            out += f" --pe {pe}"
        if flags & SVC_F_ONEPACKET:
            out += " -o"
        if flags & SVC_F_SCHED_MASK:
            out += " -b " + sched_flag_names(sched, flags)
        if svc.get("proxy_protocol"):
            out += f" --proxy-protocol {svc['proxy_protocol']}"
        if svc.get("synproxy"):
            out += " -j enable"
        for la in svc.get("laddrs") or []:  # FULLNAT local addresses, as DPVS ipvsadm -P lines
            out += f"\n-P {name} -z {la.get('addr', '')}"
    elif fmt & (Fmt.STATS | Fmt.RATE):
        key, names = ("stats", _STAT_KEYS) if fmt & Fmt.STATS else ("rates", _RATE_KEYS)
        out = f"{name:<33}" + "".join(largenum(v, fmt) for v in _counters(svc, key, names))
    else:
        out = f"{name} {sched}"
        if flags & SVC_F_SCHED_MASK:
            out += f" ({sched_flag_names(sched, flags)})"
        if flags & SVC_F_PERSISTENT:
            out += f" persistent {int(svc.get('timeout', 0))}"
            mask = _mask_text(svc)
            if mask is not None:
                out += f" mask {mask}"
            if pe:
                out += f" pe {pe}"
        if flags & SVC_F_ONEPACKET:
            out += " ops"
    return out + "\n"


# ---------------------------------------------------------------------------------------------
# destinations


def _tun_info(dest: Obj) -> str:
    """fwd_tun_info: `ipip`, `gue:PORT:FLAG`, `gre:FLAG`, or n/a for other methods."""
    if dest.get("method") != "tunnel":
        return "n/a"
    tun_type = dest.get("tun_type", "ipip")
    flag = _TUN_FLAG_LABELS.get(str(dest.get("tun_flags", "nocsum")), "-c")
    if tun_type == "gue":
        info = f"gue:{int(dest.get('tun_port', 0))}:{flag}"
    elif tun_type == "gre":
        info = f"gre:{flag}"
    elif tun_type == "ipip":
        info = "ipip"
    else:
        return "n/a"
    return info[:15]


def _dest_rule(svc_rule_name: str, dname: str, dest: Obj) -> str:
    """One `-a` line of -S; tunnels also save their encapsulation (print_tunnel_rule)."""
    method = str(dest.get("method", "route"))
    switch = _FWD_SWITCHES.get(method, "(null)")
    out = f"-a {svc_rule_name} -r {dname} {switch} -w {int(dest.get('weight', 0))}"
    if method == "tunnel":
        tun_type = dest.get("tun_type", "ipip")
        flag_opt = _TUN_FLAG_OPTIONS.get(str(dest.get("tun_flags", "nocsum")), "--tun-nocsum")
        if tun_type == "gre":
            out += f" --tun-type gre {flag_opt}"
        elif tun_type == "gue":
            out += f" --tun-type gue --tun-port {int(dest.get('tun_port', 0))} {flag_opt}"
        elif tun_type == "ipip":
            out += " --tun-type ipip"
    return out + "\n"


def dest_line(dest: Obj, proto: int, fmt: Fmt, svc_rule_name: str = "") -> str:
    """One destination line in the listing format `fmt`."""
    v6 = is_ipv6(str(dest["addr"]))
    dname = addrport_name(str(dest["addr"]), int(dest.get("port", 0)), proto, fmt)
    if fmt & Fmt.RULE:
        return _dest_rule(svc_rule_name, dname, dest)
    if not v6:
        dname = dname[:28]
    fwd = _FWD_NAMES.get(str(dest.get("method")), "(null)")
    weight = int(dest.get("weight", 0))
    active = int(dest.get("activeconns", 0))
    inact = int(dest.get("inactconns", 0))
    if fmt & Fmt.STATS:
        numbers = "".join(largenum(v, fmt) for v in _counters(dest, "stats", _STAT_KEYS))
        return f"  -> {dname:<28}{numbers}\n"
    if fmt & Fmt.RATE:
        cps, inpps, outpps, inbps, outbps = _counters(dest, "rates", _RATE_KEYS)
        # the per-dest CPS/PPS columns are plain %8llu in ipvsadm, never abbreviated
        big = largenum(inbps, fmt) + largenum(outbps, fmt)
        return f"  -> {dname:<28} {cps:8d} {inpps:8d} {outpps:8d}{big}\n"
    if fmt & Fmt.THRESHOLDS:
        u_thr = int(dest.get("u_threshold", 0))
        l_thr = int(dest.get("l_threshold", 0))
        return f"  -> {dname:<28} {u_thr:<10d} {l_thr:<10d} {active:<10d} {inact:<10d}\n"
    if fmt & Fmt.PERSISTENTCONN:
        persist = int(dest.get("persistconns", 0))
        return f"  -> {dname:<28} {weight:<9d} {persist:<11d} {active:<10d} {inact:<10d}\n"
    if fmt & Fmt.TUN_INFO:
        return f"  -> {dname:<28} {fwd:<7} {_tun_info(dest):<13} {weight:<6d} {active:<10d} {inact:<10d}\n"
    return f"  -> {dname:<28} {fwd:<7} {weight:<6d} {active:<10d} {inact:<10d}\n"


# ---------------------------------------------------------------------------------------------
# sorting (libipvs ipvs_cmp_services / ipvs_cmp_dests, qsort = glibc merge sort)


def _c_int(diff: int) -> int:
    """An unsigned 32-bit difference stored into a C int: wraps for far-apart values."""
    diff &= 0xFFFFFFFF
    return diff - 0x1_0000_0000 if diff & 0x8000_0000 else diff


def _addr_words(addr: str) -> tuple[int, int, int, int]:
    """The address as the four host-order words of `union nf_inet_addr` (IPv4 in the first)."""
    if not addr:
        return (0, 0, 0, 0)
    if is_ipv6(addr):
        return struct.unpack("!4I", socket.inet_pton(socket.AF_INET6, addr))  # type: ignore[return-value]
    return (struct.unpack("!I", socket.inet_aton(addr))[0], 0, 0, 0)


def _cmp_addr(family: int, a: str, b: str) -> int:
    wa, wb = _addr_words(a), _addr_words(b)
    if family != AF_INET6:
        return _c_int(wa[0] - wb[0])
    r = 0
    for x, y in zip(wa, wb, strict=True):
        r = _c_int(x - y)
        if r:
            break
    return r


def cmp_services(a: Obj, b: Obj) -> int:
    r = _c_int(int(a.get("fwmark") or 0) - int(b.get("fwmark") or 0))
    if r:
        return r
    r = svc_family(a) - svc_family(b)
    if r:
        return r
    r = svc_proto(a) - svc_proto(b)
    if r:
        return r
    r = _cmp_addr(svc_family(a), str(a.get("addr") or ""), str(b.get("addr") or ""))
    if r:
        return r
    return int(a.get("port") or 0) - int(b.get("port") or 0)


def cmp_dests(a: Obj, b: Obj) -> int:
    family = AF_INET6 if is_ipv6(str(a["addr"])) else AF_INET
    r = _cmp_addr(family, str(a["addr"]), str(b["addr"]))
    if r:
        return r
    return int(a.get("port") or 0) - int(b.get("port") or 0)


def merge_sort(items: Sequence[Any], cmp: Callable[[Any, Any], int]) -> list[Any]:
    """glibc qsort's top-down merge sort, so that the non-transitive comparator (the int overflow
    above) orders things the way ipvsadm does."""
    if len(items) <= 1:
        return list(items)
    half = len(items) // 2
    left, right = merge_sort(items[:half], cmp), merge_sort(items[half:], cmp)
    out: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


# ---------------------------------------------------------------------------------------------
# whole listings


def format_header(info: Obj) -> str:
    version = info.get("version", "1.2.1")
    if isinstance(version, int):  # IP_VS_VERSION_CODE style
        version = f"{(version >> 16) & 0xFF}.{(version >> 8) & 0xFF}.{version & 0xFF}"
    return f"IP Virtual Server version {version} (size={int(info.get('size', 0))})\n"


_PROT = f"{'Prot LocalAddress:Port':<33}"
_REMOTE = "\n  -> RemoteAddress:Port\n"


def format_title(fmt: Fmt) -> str:
    if fmt & Fmt.STATS:
        cols = ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
        return _PROT + "".join(f" {c:>8}" for c in cols) + _REMOTE
    if fmt & Fmt.RATE:
        return _PROT + "".join(f" {c:>8}" for c in ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")) + _REMOTE
    if fmt & Fmt.THRESHOLDS:
        cols = ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
        return _PROT + "".join(f" {c:<10}" for c in cols) + _REMOTE
    if fmt & Fmt.PERSISTENTCONN:
        return _PROT + f" {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} {'InActConn':<10}" + _REMOTE
    if fmt & Fmt.TUN_INFO:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
    if fmt & Fmt.RULE:
        return ""
    return ("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def format_service_entry(svc: Obj, fmt: Fmt) -> str:
    """print_service_entry: the service line and its destinations (sorted unless --nosort)."""
    dests: Sequence[Obj] = svc.get("dests") or []
    if not fmt & Fmt.NOSORT:
        dests = merge_sort(dests, cmp_dests)
    rule_name = service_name(svc, fmt) if fmt & Fmt.RULE else ""
    proto = svc_proto(svc)
    return service_line(svc, fmt) + "".join(dest_line(d, proto, fmt, rule_name) for d in dests)


def format_services(services: Iterable[Obj], fmt: Fmt, info: Obj | None = None) -> str:
    """list_all: `-L` (header, title, services) or `-S` (rules only, when fmt has RULE)."""
    items = list(services)
    if not fmt & Fmt.NOSORT:
        items = merge_sort(items, cmp_services)
    head = format_header(info) if info is not None and not fmt & Fmt.RULE else ""
    return head + format_title(fmt) + "".join(format_service_entry(s, fmt) for s in items)


def format_single_service(svc: Obj, fmt: Fmt) -> str:
    """list_service (`-L -t vip:port`): title and entry, no version header."""
    return format_title(fmt) + format_service_entry(svc, fmt)


def format_conns(conns: Iterable[Obj], fmt: Fmt) -> str:
    """list_conn (`-c`), in the daemon's order like /proc/net/ip_vs_conn."""
    pconn = bool(fmt & Fmt.PERSISTENTCONN)
    out = ["IPVS connection entries\n"]
    if pconn:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} "
                   f"{'pe name':<16} pe_data\n")
    else:
        out.append(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n")
    for conn in conns:
        protocol = str(conn.get("protocol", "TCP"))
        proto = PROTO_NUMBERS.get(protocol.lower(), 0)
        expires = int(conn.get("expires", 0))
        expire = f"{expires // 60:02d}:{expires % 60:02d}"
        cname = addrport_name(str(conn["caddr"]), int(conn.get("cport", 0)), proto, fmt)
        vname = addrport_name(str(conn["vaddr"]), int(conn.get("vport", 0)), proto, fmt)
        dname = addrport_name(str(conn["daddr"]), int(conn.get("dport", 0)), proto, fmt)
        state = str(conn.get("state", "NONE"))
        head = f"{protocol:<3} {expire:<6} {state:<11} {cname:<18} {vname:<18}"
        if pconn and conn.get("pe_name"):
            # ipvsadm's row format pads dname to 16 and pe name to 18 (unlike its title)
            out.append(f"{head} {dname:<16} {str(conn['pe_name']):<18} {conn.get('pe_data', '')}\n")
        else:
            out.append(f"{head} {dname}\n")
    return "".join(out)


def format_timeout(timeouts: Obj) -> str:
    return (f"Timeout (tcp tcpfin udp): {int(timeouts.get('tcp', 0))} {int(timeouts.get('tcpfin', 0))} "
            f"{int(timeouts.get('udp', 0))}\n")


def format_daemons(daemons: Iterable[Obj]) -> str:
    """list_daemon (`--daemon`): one line per running sync daemon, master first."""
    order = {"master": 0, "backup": 1}
    lines = []
    for d in sorted(daemons, key=lambda d: order.get(str(d.get("state")), 2)):
        if d.get("state") not in order:
            continue
        line = f"{d['state']} sync daemon (mcast={d.get('mcast_ifn', '')}, syncid={int(d.get('syncid', 0))}"
        if d.get("sync_maxlen"):
            line += f", maxlen={int(d['sync_maxlen'])}"
        if d.get("mcast_group"):
            line += f", group={d['mcast_group']}"
        if d.get("mcast_port"):
            line += f", port={int(d['mcast_port'])}"
        if d.get("mcast_ttl"):
            line += f", ttl={int(d['mcast_ttl'])}"
        lines.append(line + ")\n")
    return "".join(lines)


def format_laddrs(services: Iterable[Obj]) -> str:
    """`-G` (get-laddr) in the DPVS ipvsadm layout: one line per service, then one per local address."""
    out = [f"{'VIP:VPORT':<20} {'TOTAL':<8} {'SNAT_IP':<20} {'CONFLICTS':<10} {'CONNS':<10}\n"]
    for svc in services:
        laddrs: Sequence[Obj] = svc.get("laddrs") or []
        vname = addrport_name(str(svc.get("addr", "")), int(svc.get("port", 0)), svc_proto(svc), Fmt.NUMERIC)
        if svc.get("fwmark"):
            vname = f"FWM {int(svc['fwmark'])}"
        out.append(f"{vname:<20} {len(laddrs):<8d} \n")
        for la in laddrs:
            out.append(f"{'':<20} {'':<8} {str(la.get('addr', '')):<20} {int(la.get('conflicts', 0)):<10d} "
                       f"{int(la.get('conns', 0)):<10d}\n")
    return "".join(out)
