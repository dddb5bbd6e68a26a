"""dh, sh and mh hash IPv6 addresses as the kernel's ip_vs_{dh,sh,mh}_hashkey do: the four 32-bit words
folded with XOR (host order), then hashed as an IPv4 address would be.

By hand: 2001:db8::1 is words 0x20010db8, 0, 0, 1 -> fold 0x20010db9;
2001:db8:0:1::1 is 0x20010db8, 1, 0, 1 -> fold 0x20010db8 (the two ones cancel).
hash_32(0x20010db9, 8) = (0x20010db9 * 0x61C88647 mod 2^32) >> 24.
"""

from __future__ import annotations

from pylvs.engine.services import SVC_F_SCHED2, RealServer, VirtualService, pack_ip
from pylvs.sched.base import Flow
from pylvs.sched.dh import DestinationHashing, addr_fold
from pylvs.sched.mh import HASH1, TAB_SIZE, MaglevHashing, hsiphash_u32
from pylvs.sched.sh import SourceHashing

VIP6 = pack_ip("2001:db8::100")


def bucket(value: int) -> int:
    """hash_32(value, 8), written out here rather than imported."""
    return ((value * 0x61C88647) & 0xFFFFFFFF) >> 24


def service(sched_cls, n: int = 256, flags: int = 0):
    svc = VirtualService(6, VIP6, 80, sched_cls.name, flags=flags)
    svc.dests = [RealServer(pack_ip(f"2001:db8:1::{i:x}"), 80) for i in range(1, n + 1)]
    svc.sched = sched_cls(svc)
    return svc


def flow(saddr: str, sport: int = 40000, daddr: str = "2001:db8::100") -> Flow:
    return Flow(6, pack_ip(saddr), sport, pack_ip(daddr), 80)


def test_fold_by_hand():
    assert addr_fold(pack_ip("2001:db8::1")) == 0x20010DB9
    assert addr_fold(pack_ip("2001:db8:0:1::1")) == 0x20010DB8
    assert addr_fold(pack_ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) == 0
    assert addr_fold(pack_ip("192.0.2.1")) == 0xC0000201  # IPv4: the address itself


def test_sh_buckets_by_the_folded_source():
    svc = service(SourceHashing)  # 256 dests of weight 1: bucket i holds dest i
    for client in ("2001:db8::1", "2001:db8:0:1::1", "2001:db8:ffff:1234::abcd", "fd00::77"):
        expect = bucket(addr_fold(pack_ip(client)))
        assert svc.sched.schedule(svc, flow(client)) is svc.dests[expect], client
    # the high words count: two clients differing only in their /64 land in the buckets of their folds
    a, b = bucket(0x20010DB9), bucket(0x20010DB8 ^ 0x10000 ^ 1)
    assert a != b
    assert svc.sched.schedule(svc, flow("2001:db8::1")) is svc.dests[a]
    assert svc.sched.schedule(svc, flow("2001:db8:1::1")) is svc.dests[b]


def test_sh_port_adds_the_source_port_to_the_fold():
    svc = service(SourceHashing, flags=SVC_F_SCHED2)
    got = svc.sched.schedule(svc, flow("2001:db8::1", sport=1000))
    assert got is svc.dests[bucket(0x20010DB9 + 1000)]


def test_dh_buckets_by_the_folded_destination():
    svc = service(DestinationHashing)
    for dst in ("2001:db8::1", "2001:db8:5::9", "fd00:1:2:3:4:5:6:7"):
        got = svc.sched.schedule(svc, flow("2001:db8::77", daddr=dst))
        assert got is svc.dests[bucket(addr_fold(pack_ip(dst)))], dst


def test_mh_slot_is_hsiphash_of_the_fold():
    svc = service(MaglevHashing, n=5)
    for client in ("2001:db8::1", "2001:db8:77::2", "fd00::1234"):
        slot = hsiphash_u32(HASH1, addr_fold(pack_ip(client))) % TAB_SIZE
        assert svc.sched.schedule(svc, flow(client)) is svc.sched.table[slot], client
