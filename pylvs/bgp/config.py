"""lvsd's BGP settings (the --bgp-* options) and the BIRD 2 configuration they become.

The generated file has one static protocol, `vips`, holding a blackhole /32 per announced VIP
(BIRD needs some route to export; nothing is installed in the director's kernel: there is no
kernel protocol), and one BGP session per peer exporting exactly those routes with this director
as next hop, importing nothing. Only the static protocol changes when the VIPs change, so a
`configure` leaves the sessions up and sends just the UPDATEs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_AS = 2**32 - 1
DEFAULT_HOLD_TIME = 9  # seconds; keepalives every third of it. BGP's own minimum is 3.
STATIC_PROTOCOL = "vips"


class BgpConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Peer:
    address: str
    asn: int

    @property
    def protocol(self) -> str:
        """The BIRD protocol name of this session."""
        return "peer_" + self.address.replace(".", "_")


@dataclass(frozen=True)
class BgpSettings:
    local_as: int
    peers: tuple[Peer, ...]
    router_id: str | None = None   # None: the director's lowest interface address
    hold_time: int = DEFAULT_HOLD_TIME
    next_hop: str | None = None    # None: the session's own address (BIRD's `next hop self`)


def parse_asn(text: str) -> int:
    try:
        asn = int(text, 10)
    except ValueError:
        raise BgpConfigError(f"bad AS number {text!r}") from None
    if not 1 <= asn <= MAX_AS:
        raise BgpConfigError(f"AS number {asn} out of range (1-{MAX_AS})")
    return asn


def parse_ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise BgpConfigError(f"bad {what} {text!r}: an IPv4 address is expected") from None


def parse_peer(text: str) -> Peer:
    """ADDR:AS, as `--bgp-peer 198.51.100.1:65000`."""
    addr, sep, asn = text.rpartition(":")
    if not sep:
        raise BgpConfigError(f"bad peer {text!r}: ADDR:AS expected")
    return Peer(parse_ipv4(addr, "peer address"), parse_asn(asn))


def settings(local_as: str, peers: list[str], router_id: str | None = None,
             hold_time: int = DEFAULT_HOLD_TIME, next_hop: str | None = None) -> BgpSettings:
    """Check the options as given on the command line; BgpConfigError says what is wrong."""
    if not peers:
        raise BgpConfigError("--bgp-local-as needs at least one --bgp-peer ADDR:AS")
    parsed = tuple(parse_peer(p) for p in peers)
    if len({p.address for p in parsed}) != len(parsed):
        raise BgpConfigError("a --bgp-peer address is given twice")
    if not 3 <= hold_time <= 65535:
        raise BgpConfigError(f"bad hold time {hold_time}: 3 to 65535 seconds (RFC 4271)")
    return BgpSettings(parse_asn(local_as), parsed,
                       parse_ipv4(router_id, "router id") if router_id else None, hold_time,
                       parse_ipv4(next_hop, "next hop") if next_hop else None)


def bird_config(cfg: BgpSettings, router_id: str, vips: frozenset[str]) -> str:
    keepalive = max(1, cfg.hold_time // 3)
    next_hop = f"next hop address {cfg.next_hop};" if cfg.next_hop else "next hop self;"
    lines = [
        "# Written by lvsd: rewritten whenever the announced VIPs change. Do not edit.",
        f"router id {router_id};",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        "protocol device { scan time 10; }",
        f"protocol static {STATIC_PROTOCOL} {{",
        "  ipv4;",
        *(f"  route {vip}/32 blackhole;" for vip in sorted(vips, key=ipaddress.IPv4Address)),
        "}",
    ]
    for peer in cfg.peers:
        lines += [
            f"protocol bgp {peer.protocol} {{",
            f"  local as {cfg.local_as};",
            f"  neighbor {peer.address} as {peer.asn};",
            f"  hold time {cfg.hold_time}; keepalive time {keepalive};",
            "  connect delay time 1; connect retry time 2; error wait time 1, 4;",  # back soon after a cut or restart
            # No graceful restart: a router keeps a restarting peer's routes (120 s by default), and a
            # director that died must be routed around at once.
            "  graceful restart off; long lived graceful restart off;",
            "  ipv4 {",
            "    import none;",
            f'    export where proto = "{STATIC_PROTOCOL}";',
            f"    {next_hop}",
            "  };",
            "}",
        ]
    return "\n".join(lines) + "\n"
