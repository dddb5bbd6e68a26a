"""VRRP adverts against scapy's decoder (an independent one): fields and checksums, both ways."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.vrrp import VRRP, VRRPv3

from pylvs.vrrp import packet
from pylvs.vrrp.packet import AUTH_PASS, Advert, BadAdvert

SRC, GROUP = "203.0.113.2", "224.0.0.18"


def on_wire(payload: bytes, src: str = SRC):
    """The advert as the kernel sends it (IPv4 header, protocol 112), decoded by scapy."""
    return IP(bytes(IP(src=src, dst=GROUP, ttl=255, proto=112) / payload))


def test_v2_advert_with_pass_authentication_reads_back_in_scapy():
    advert = Advert(2, 51, 150, ("203.0.113.100", "203.0.113.101"), 1.0, AUTH_PASS, b"secret")
    wire = on_wire(packet.encode(advert, SRC))
    v = wire[VRRP]
    assert (v.version, v.type, v.vrid, v.priority, v.ipcount, v.authtype, v.adv) == (2, 1, 51, 150, 2, 1, 1)
    assert v.addrlist == ["203.0.113.100", "203.0.113.101"]
    assert v.auth1.to_bytes(4, "big") + v.auth2.to_bytes(4, "big") == b"secret\0\0"
    rebuilt = VRRP(bytes(v))
    rebuilt.chksum = None
    assert VRRP(bytes(rebuilt)).chksum == v.chksum  # scapy computes the same v2 checksum


def test_v3_checksum_covers_the_pseudo_header():
    advert = Advert(3, 52, 100, ("192.0.2.1",), 0.5)
    payload = packet.encode(advert, SRC)
    wire = on_wire(payload)
    v = wire[VRRPv3]
    assert (v.version, v.type, v.vrid, v.priority, v.ipcount, v.adv) == (3, 1, 52, 100, 1, 50)  # centiseconds
    again = IP(src=SRC, dst=GROUP, ttl=255) / VRRPv3(vrid=52, priority=100, ipcount=1, adv=50, addrlist=["192.0.2.1"])
    assert IP(bytes(again))[VRRPv3].chksum == v.chksum
    with pytest.raises(BadAdvert, match="checksum"):
        packet.decode(payload, "203.0.113.3", GROUP)  # another source: the pseudo-header differs


@pytest.mark.parametrize("layer,version", [(VRRP, 2), (VRRPv3, 3)])
def test_scapy_built_adverts_decode(layer, version):
    kw = {"adv": 1} if version == 2 else {"adv": 100}
    built = IP(bytes(IP(src=SRC, dst=GROUP, ttl=255) / layer(vrid=7, priority=200, ipcount=1,
                                                              addrlist=["198.51.100.7"], **kw)))
    src, dst, ttl, payload = packet.split_ipv4(bytes(built))
    advert = packet.decode(payload, src, dst)
    assert (src, dst, ttl) == (SRC, GROUP, 255)
    assert (advert.version, advert.vrid, advert.priority, advert.addresses, advert.advert_int) == \
        (version, 7, 200, ("198.51.100.7",), 1.0)


def test_damaged_adverts_are_refused_with_a_reason():
    good = packet.encode(Advert(2, 1, 100, ("192.0.2.1",), 1.0), SRC)
    bad = bytearray(good)
    bad[2] ^= 1  # priority changed in flight
    with pytest.raises(BadAdvert, match="checksum"):
        packet.decode(bytes(bad), SRC, GROUP)
    with pytest.raises(BadAdvert, match="too short"):
        packet.decode(good[:10], SRC, GROUP)
    with pytest.raises(BadAdvert, match="version"):
        packet.decode(b"\x41" + good[1:], SRC, GROUP)
    with pytest.raises(BadAdvert, match="type"):
        packet.decode(b"\x22" + good[1:], SRC, GROUP)
    with pytest.raises(BadAdvert):
        packet.split_ipv4(b"\x45\x00")
