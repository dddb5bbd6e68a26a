"""A two-armed test director: client side on ifindex 1, real servers on ifindex 2.

Frames are built and read back with scapy, never with pylvs' own parser.
"""

from __future__ import annotations

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from pylvs.engine.engine import Engine, Interface
from pylvs.engine.hops import Hop, StaticRoutes
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.packet import checksum, vnet

VIP_MAC = "02:00:00:00:01:01"
DIP_MAC = "02:00:00:00:02:01"
CLIENT_MAC = "02:00:00:00:01:99"
CLIENT = "192.0.2.100"
VIP = "192.0.2.1"
RIPS = ["10.1.0.11", "10.1.0.12", "10.1.0.13"]


def rs_mac(rip: str) -> str:
    return f"02:00:00:00:02:{int(rip.rsplit('.', 1)[1]):02x}"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def make_engine(method: Method = Method.MASQ, rport: int = 8080, proto: int = 6, vport: int = 80,
                scheduler: str = "rr", rips: list[str] | None = None) -> Engine:
    hops = {pack_ip(CLIENT): Hop(1, mac(CLIENT_MAC), mac(VIP_MAC))}
    for rip in RIPS:
        hops[pack_ip(rip)] = Hop(2, mac(rs_mac(rip)), mac(DIP_MAC))
    engine = Engine(StaticRoutes(hops))
    engine.add_interface(Interface(1, "vip0", mac(VIP_MAC), {pack_ip("192.0.2.254")}))
    engine.add_interface(Interface(2, "dip0", mac(DIP_MAC), {pack_ip("10.1.0.1")}))
    svc = engine.table.add_service(VirtualService(proto, pack_ip(VIP), vport, scheduler))
    for rip in RIPS if rips is None else rips:
        engine.table.add_dest(svc, RealServer(pack_ip(rip), rport, method=method))
    return engine


def frame(pkt, **vnet_fields) -> bytearray:
    """virtio_net_hdr + the scapy packet's bytes, as the I/O layer hands frames to the engine."""
    return bytearray(vnet.pack(**vnet_fields) + bytes(pkt))


def from_client(l4, src: str = CLIENT, dst: str = VIP, ttl: int = 64) -> Ether:
    return Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=src, dst=dst, ttl=ttl) / l4


def from_rs(rip: str, l4, dst: str = CLIENT, ttl: int = 64) -> Ether:
    return Ether(src=rs_mac(rip), dst=DIP_MAC) / IP(src=rip, dst=dst, ttl=ttl) / l4


def tso_frame(pkt, src: bytes, dst: bytes, gso_type: int, gso_size: int = 1000) -> bytearray:
    """The TCP packet `pkt` (Ethernet, IPv4 or IPv6 without options, TCP) as a GSO super-frame the way a
    sender's kernel hands it over: CHECKSUM_PARTIAL (the field holds the pseudo-header sum of `src`, `dst`),
    cut into `gso_size` segments later."""
    raw = bytearray(bytes(pkt))
    l4 = 14 + (40 if raw[14] >> 4 == 6 else 20)
    pseudo = checksum.fold(checksum.ones_sum(src + dst) + 6 + len(raw) - l4)
    raw[l4 + 16:l4 + 18] = pseudo.to_bytes(2, "big")
    return bytearray(vnet.pack(flags=vnet.F_NEEDS_CSUM, gso_type=gso_type, hdr_len=l4 + 20, gso_size=gso_size,
                               csum_start=l4, csum_offset=16)) + raw


def parse(out_frame) -> Ether:
    return Ether(bytes(out_frame)[vnet.VNET_HDR_LEN:])


def checksums_valid(pkt: Ether) -> bool:
    """Recompute every checksum with scapy and compare with what is on the wire."""
    fresh = Ether(bytes(pkt))
    for layer in (fresh[IP], fresh[IP].payload):
        if hasattr(layer, "chksum"):
            if layer.name == "UDP" and layer.chksum == 0:
                continue
            layer.chksum = None
    rebuilt = Ether(bytes(fresh))
    return bytes(rebuilt) == bytes(pkt)


def kernel_icmp_error(out, about: bytes, src: str, dst: str, icmp_type: int, code: int, mtu: int = 0,
                      ifindex: int = 1) -> Ether:
    """The one frame out is the ICMP error the kernel's icmp_send makes about `about` (an IP packet as
    the kernel quotes it): from `src`, TTL 64, no DF, TOS internetwork control (0xc0) with the
    original's TOS bits, the first 548 bytes quoted (576 in all)."""
    from scapy.layers.inet import ICMP

    assert len(out) == 1, out
    got_ifindex, buf = out[0]
    pkt = parse(buf)
    assert got_ifindex == ifindex
    ip = pkt[IP]
    assert (ip.src, ip.dst, ip.ttl, int(ip.flags), ip.frag) == (src, dst, 64, 0, 0)
    assert ip.tos == 0xC0 | (about[1] & 0x1E)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (icmp_type, code)
    assert bytes(pkt[ICMP])[4:8] == (mtu.to_bytes(4, "big") if mtu else bytes(4))
    assert bytes(pkt[ICMP])[8:] == about[:548]
    assert checksums_valid(pkt)
    return pkt


def reassembled(out, mtu: int, ifindex: int) -> IP:
    """Check that `out` is one packet as ip_fragment cuts it (same ID, DF off, MF on all but the last,
    offsets following, each fragment within `mtu` with a valid header checksum), and put it back together."""
    assert len(out) > 1
    frags = [parse(buf)[IP] for _, buf in out]
    assert {i for i, _ in out} == {ifindex}
    assert len({f.id for f in frags}) == 1 and len({f.ttl for f in frags}) == 1
    offset = 0
    data = b""
    for n, f in enumerate(frags):
        raw = bytes(f)
        assert len(raw) <= mtu and f.frag * 8 == offset
        assert int(f.flags) == (0 if n == len(frags) - 1 else 1)  # MF, never DF
        head = IP(raw[:f.ihl * 4])
        head.chksum = None
        assert IP(bytes(head)).chksum == f.chksum
        body = raw[f.ihl * 4:f.len]
        assert n == len(frags) - 1 or len(body) % 8 == 0
        data += body
        offset += len(body)
    head = bytearray(bytes(frags[0])[:frags[0].ihl * 4])
    head[2:4] = (len(head) + len(data)).to_bytes(2, "big")
    head[6:8] = head[10:12] = b"\0\0"  # no more fragment bits; the checksum is scapy's to fill
    whole = IP(bytes(head) + data)
    whole.chksum = None
    return IP(bytes(whole))
