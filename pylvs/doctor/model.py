"""What the doctor probes, what its packets brought back, and what it concludes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# A check's verdict. "unknown" is "could not tell", always with the reason.
OK, PROBLEM, UNKNOWN, NA = "ok", "problem", "unknown", "n/a"
CERTAIN, LIKELY, POSSIBLE = "certain", "likely", "possible"

# The checks, in report order.
CHECKS = ("reachable", "arp", "decap", "rp_filter", "vip", "listening", "reply_source", "mtu")

# Bytes the encapsulation adds to every packet: outer IPv4 header, then UDP + GUE or GRE.
OVERHEAD = {"ipip": 20, "gue": 20 + 8 + 4, "gre": 20 + 4}


@dataclass(frozen=True)
class Target:
    """One real server of one DR or TUN service, as the doctor will probe it."""

    service: str        # as ipvsadm names it: "TCP 192.0.2.100:80" or "FWM 1"
    vip: str            # the address the real server must accept (a fwmark service's: unknown, "")
    port: int | None    # the TCP port probes go to (None: no port to use)
    tcp_service: bool   # a TCP service (else a SYN proves delivery, not a listening server)
    method: str         # "dr" or "tun"
    rip: str
    tun_type: str = "ipip"
    tun_port: int = 0

    @property
    def name(self) -> str:
        return f"{self.rip} ({self.method.upper()}{'/' + self.tun_type if self.method == 'tun' else ''})"


@dataclass
class Reply:
    """The answer to one probe: a TCP segment, an ICMP error about it, or nothing before the timeout."""

    kind: str                 # "synack", "rst", "icmp", "none"
    src: str = ""             # who answered (IP source)
    mss: int = 0              # a SYN-ACK's MSS option
    icmp_type: int = -1
    icmp_code: int = -1
    icmp_mtu: int = 0         # fragmentation needed: the next hop's MTU
    about_outer: bool = False  # an ICMP error quoting the tunnel packet (not the packet inside it)

    def describe(self) -> str:
        if self.kind == "none":
            return "no answer"
        if self.kind == "icmp":
            name = ICMP_NAMES.get((self.icmp_type, self.icmp_code), f"type {self.icmp_type} code {self.icmp_code}")
            return f"ICMP {name} from {self.src}"
        return f"{'SYN-ACK' if self.kind == 'synack' else 'RST'} from {self.src}"


ICMP_NAMES = {
    (3, 0): "network unreachable", (3, 1): "host unreachable", (3, 2): "protocol unreachable",
    (3, 3): "port unreachable", (3, 4): "fragmentation needed", (3, 9): "network prohibited",
    (3, 10): "host prohibited", (3, 13): "administratively prohibited", (11, 0): "time exceeded",
}


@dataclass
class Observation:
    """Everything the probes saw for one target (None: that probe was not sent)."""

    source: str = ""                 # the director's address the probes came from
    onlink: bool = False             # the real server is on a segment of the director
    next_hop: str = ""
    next_hop_mac: str | None = None  # None: ARP got no answer
    rs_mac: str | None = None        # on a shared segment: the real server's MAC
    vip_arp: list[str] = field(default_factory=list)        # MACs (not the director's) that answered for the VIP
    vip_announced: list[str] = field(default_factory=list)  # MACs seen using the VIP as ARP sender address
    method: Reply | None = None      # SYN to the VIP through the method (DR frame / tunnel)
    plain_vip: Reply | None = None   # TUN on a shared segment: SYN to the VIP straight to its MAC
    rip: Reply | None = None         # SYN to RIP:port, routed as any packet
    big: Reply | None = None         # TUN: a full-size tunnel packet with DF
    big_size: int = 0
    egress_mtu: int = 0              # the director's link towards the real server
    client_mtu: int = 0              # the director's link towards the clients (its default route)
    error: str = ""                  # why nothing could be probed


@dataclass
class Verdict:
    check: str
    status: str                  # OK, PROBLEM, UNKNOWN, NA
    text: str
    certainty: str = CERTAIN     # how sure a PROBLEM or OK is
    fix: str = ""                # what to do, as commands where there are some


@dataclass
class Report:
    target: Target
    verdicts: list[Verdict]

    @property
    def problems(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == PROBLEM]

    @property
    def clean(self) -> bool:
        return all(v.status in (OK, NA) for v in self.verdicts)

    def as_dict(self) -> dict:
        return {"service": self.target.service, "real_server": self.target.rip, "method": self.target.method,
                "tun_type": self.target.tun_type if self.target.method == "tun" else None,
                "vip": self.target.vip, "port": self.target.port,
                "checks": [asdict(v) for v in self.verdicts]}
