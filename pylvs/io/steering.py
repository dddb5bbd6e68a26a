"""Keep the director's kernel off the engine's traffic (nftables).

AF_PACKET taps see every frame before netfilter does, so dropping the engine's traffic in a
prerouting chain at a priority before conntrack leaves the engine its copy while the kernel neither
answers it (no RST, no ICMP) nor forwards it (no duplicates), whatever ip_forward says.
Dropped: packets to a VIP or a FULLNAT local address, packets carrying the mark of a fwmark service,
NAT replies from a real server's address and port, and ICMP errors quoting a packet to a NAT real
server (from the real server or a router on its side: the engine translates them), unless they are
addressed to the director's own addresses (health checks and administration of the real servers from
the director go on). One `inet` table holds both families: each set and rule has an IPv4 and an IPv6
form (ICMPv6 errors quote an IPv6 header, whose destination is 24 bytes in).

Someone else's `nft flush ruleset` removes the table without telling lvsd: `present()` is a cheap
check (one `nft` run) for the director to call every few seconds, and `restore(engine)` puts the
table and its sets back.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

from pylvs.engine.engine import Engine
from pylvs.engine.services import Method, ip

log = logging.getLogger(__name__)

TABLE = "pylvs"
MISSING = ("nft (nftables) is not installed: install it (apt-get install nftables), "
           "or start lvsd with --no-steering and keep the kernel off the VIPs yourself")
_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_RULES = 9  # drop rules in the prerouting chain (see install)
FAMILY = "inet"
# The quoted packet's destination address in an ICMP error: after the 8-byte ICMP header, 16 bytes into
# the quoted IPv4 header (24 into an IPv6 one). nftables sees it as an integer (a raw payload), so are
# the sets' elements.
QUOTED_DADDR = "@th,192,32"
QUOTED_DADDR6 = "@th,256,128"
ICMP_ERRORS = "destination-unreachable, source-quench, time-exceeded, parameter-problem"
ICMPV6_ERRORS = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem"


class SteeringError(RuntimeError):
    pass


def _run(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["nft", *args], input=script, text=True, capture_output=True)
    except FileNotFoundError:
        raise SteeringError(MISSING) from None


def _nft(script: str) -> None:
    result = _run("-f", "-", script=script)
    if result.returncode:
        raise SteeringError(f"nft failed: {result.stderr.strip()}")


def available() -> bool:
    return shutil.which("nft") is not None


def install(sets: dict[str, list[str]] | None = None) -> None:
    """(Re)create the table, its sets empty or holding `sets`, in one nft transaction: a table put back
    after someone flushed it never shows empty sets meanwhile. A stale table from a killed lvsd (or the
    `ip` table of an older one) is replaced."""
    elements = "".join(f"add element {FAMILY} {TABLE} {name} {{ {', '.join(items)} }}\n"
                       for name, items in (sets or {}).items() if items)
    _nft(f"""
table ip {TABLE}
delete table ip {TABLE}
table {FAMILY} {TABLE}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
    set vips {{ type ipv4_addr; }}
    set vips6 {{ type ipv6_addr; }}
    set nat_rs {{ type ipv4_addr . inet_proto . inet_service; }}
    set nat_rs6 {{ type ipv6_addr . inet_proto . inet_service; }}
    set nat_rs_any {{ type ipv4_addr; }}
    set nat_rs_any6 {{ type ipv6_addr; }}
    set fwmarks {{ type mark; }}
    set nat_rs_quoted {{ typeof {QUOTED_DADDR}; }}
    set nat_rs_quoted6 {{ typeof {QUOTED_DADDR6}; }}
    chain prerouting {{
        type filter hook prerouting priority -310; policy accept;
        ip daddr @vips counter drop
        ip6 daddr @vips6 counter drop
        meta mark @fwmarks counter drop
        ip saddr . meta l4proto . th sport @nat_rs fib daddr type != local counter drop
        ip6 saddr . meta l4proto . th sport @nat_rs6 fib daddr type != local counter drop
        ip saddr @nat_rs_any meta l4proto {{ tcp, udp, sctp }} fib daddr type != local counter drop
        ip6 saddr @nat_rs_any6 meta l4proto {{ tcp, udp, sctp }} fib daddr type != local counter drop
        icmp type {{ {ICMP_ERRORS} }} {QUOTED_DADDR} @nat_rs_quoted fib daddr type != local counter drop
        icmpv6 type {{ {ICMPV6_ERRORS} }} {QUOTED_DADDR6} @nat_rs_quoted6 fib daddr type != local counter drop
    }}
}}
{elements}""")


def present() -> bool:
    """Whether the table and its prerouting rules are in place (one `nft` run, a few ms)."""
    result = _run("list", "chain", FAMILY, TABLE, "prerouting")
    return result.returncode == 0 and result.stdout.count(" drop") >= _RULES


def restore(engine: Engine) -> None:
    """Put the table back as it should be (after it was removed or flushed behind our back)."""
    install(elements(engine))


def elements(engine: Engine) -> dict[str, list[str]]:
    """What the sets must hold for the engine's table: a snapshot, cheap enough for the packet loop."""
    nat = [(svc, d) for svc in engine.table for d in svc.dests if d.method in (Method.MASQ, Method.FULLNAT)]
    marks = sorted({str(svc.fwmark) for svc in engine.table if svc.fwmark})
    sets = {"fwmarks": marks}
    for suffix, size in (("", 4), ("6", 16)):
        # VIPs and FULLNAT local addresses; a real server reached on "any port" (port 0: fwmark or
        # port-zero services) answers from any port.
        sets["vips" + suffix] = sorted({ip(addr) for addr in engine.owned if len(addr) == size})
        mine = [(svc, d) for svc, d in nat if len(d.addr) == size]
        sets["nat_rs" + suffix] = sorted({f"{ip(d.addr)} . {_PROTO[svc.protocol]} . {d.port or svc.port}"
                                          for svc, d in mine if d.port or svc.port})
        sets["nat_rs_any" + suffix] = sorted({ip(d.addr) for svc, d in mine if not (d.port or svc.port)})
        sets["nat_rs_quoted" + suffix] = sorted({f"0x{d.addr.hex()}" for _, d in mine})
    return sets


def apply(sets: dict[str, list[str]]) -> None:
    """Make the sets hold `sets` (one nft run, atomic for the kernel)."""
    script = "".join(f"flush set {FAMILY} {TABLE} {name}\n" for name in sets)
    for name, items in sets.items():
        if items:
            script += f"add element {FAMILY} {TABLE} {name} {{ {', '.join(items)} }}\n"
    _nft(script)


def update(engine: Engine) -> None:
    """Make the sets match the service table now."""
    apply(elements(engine))


class Worker:
    """Runs `apply` in a thread of its own, so a large table's nft run never stalls the packet loop.

    `submit` hands over the latest snapshot; snapshots that arrive while nft runs are coalesced, so a
    burst of changes (a big restore) costs one or two nft runs, the last one with the final table."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, list[str]] | None = None
        self._busy = False
        self._stopping = False
        self.runs = 0
        self._thread = threading.Thread(target=self._run, name="pylvs-steering", daemon=True)
        self._thread.start()

    def submit(self, sets: dict[str, list[str]]) -> None:
        with self._cond:
            self._pending = sets
            self._cond.notify()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every submitted snapshot is applied (tests, and before removing the table)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._pending is None:
                    return
                sets, self._pending, self._busy = self._pending, None, True
            try:
                apply(sets)
                self.runs += 1
            except SteeringError as exc:
                log.error("%s", exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self) -> None:
        self.wait_idle()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)


def remove() -> None:
    try:
        result = _run("delete", "table", FAMILY, TABLE)
    except SteeringError:
        return  # nothing was installed without nft
    if result.returncode and "No such file" not in result.stderr:
        log.warning("could not remove nftables table %s: %s", TABLE, result.stderr.strip())
