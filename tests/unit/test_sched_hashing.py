"""dh, sh, mh and their hash functions.

Bucket numbers below were worked out by hand: hash_32(v, 8) = (v * 0x61C88647 mod 2^32) >> 24,
e.g. v=1 -> 0x61 = 97, v=2 -> 0xC3 = 195, v=3 -> 0x25 = 37, v=6 -> 0x4A = 74,
v=0x0A000001 (10.0.0.1) -> (0x61C88647 + 0xC6000000) mod 2^32 >> 24 = 0x27 = 39.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from pylvs.engine.services import SVC_F_SCHED1, SVC_F_SCHED2, ConfigError, RealServer, VirtualService, pack_ip
from pylvs.sched.base import Flow
from pylvs.sched.dh import DestinationHashing, hash_32
from pylvs.sched.mh import HASH1, TAB_SIZE, MaglevHashing, hsiphash_u32, mh_hash
from pylvs.sched.sh import SourceHashing
from tests.unit.sched_helpers import make, pick
from tests.unit.sched_reference import siphash

VIP = pack_ip("192.0.2.1")


def flow(saddr: str = "198.51.100.7", sport: int = 40000, daddr: str = "192.0.2.1", proto: int = 6) -> Flow:
    return Flow(proto, pack_ip(saddr), sport, pack_ip(daddr), 80)


def random_flows(n: int, seed: int = 7) -> list[Flow]:
    rng = random.Random(seed)
    return [Flow(6, rng.randbytes(4), rng.randrange(1024, 65536), rng.randbytes(4), 80) for _ in range(n)]


def key(dest: RealServer | None) -> tuple[bytes, int] | None:
    return None if dest is None else (dest.addr, dest.port)


# -- hash functions ---------------------------------------------------------------------------


def test_hash_32_by_hand():
    assert [hash_32(v, 8) for v in (0, 1, 2, 3, 4, 5, 6)] == [0, 97, 195, 37, 135, 232, 74]
    assert hash_32(0x0A000001, 8) == 39
    assert hash_32(1, 10) == 0x61C88647 >> 22
    assert hash_32(1 << 32 | 1, 8) == 97  # only the low 32 bits count


# Published vectors: key 00..0f, message 00 01 02 .. of length 0..63 (SipHash reference vectors,
# and the kernel's hsiphash self-test vectors for 64-bit machines, where hsiphash is SipHash-1-3).
SIPHASH24 = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB, 0x699AE9F52CBE4794, 0x4BC1B3F0968DD39C, 0xBB6DC91DA77961BD,
    0xBED65CF21AA2EE98, 0xD0F2CBB02E3B67C7, 0x93536795E3A33E88, 0xA80C038CCD5CCEC8,
    0xB8AD50C6F649AF94, 0xBCE192DE8A85B8EA, 0x17D835B85BBB15F3, 0x2F2E6163076BCFAD,
    0xDE4DAAACA71DC9A5, 0xA6A2506687956571, 0xAD87A3535C49EF28, 0x32D892FAD841C342,
    0x7127512F72F27CCE, 0xA7F32346F95978E3, 0x12E0B01ABB051238, 0x15E034D40FA197AE,
    0x314DFFBE0815A3B4, 0x027990F029623981, 0xCADCD4E59EF40C4D, 0x9ABFD8766A33735C,
    0x0E3EA96B5304A7D0, 0xAD0C42D6FC585992, 0x187306C89BC215A9, 0xD4A60ABCF3792B95,
    0xF935451DE4F21DF2, 0xA9538F0419755787, 0xDB9ACDDFF56CA510, 0xD06C98CD5C0975EB,
    0xE612A3CB9ECBA951, 0xC766E62CFCADAF96, 0xEE64435A9752FE72, 0xA192D576B245165A,
    0x0A8787BF8ECB74B2, 0x81B3E73D20B49B6F, 0x7FA8220BA3B2ECEA, 0x245731C13CA42499,
    0xB78DBFAF3A8D83BD, 0xEA1AD565322A1A0B, 0x60E61C23A3795013, 0x6606D7E446282B93,
    0x6CA4ECB15C5F91E1, 0x9F626DA15C9625F3, 0xE51B38608EF25F57, 0x958A324CEB064572,
]
HSIPHASH64 = [
    0x050FC4DC, 0x7D57CA93, 0x4DC7D44D, 0xE7DDF7FB, 0x88D38328, 0x49533B67, 0xC59F22A7, 0x9BB11140,
    0x8D299A8E, 0x6C063DE4, 0x92FF097F, 0xF94DC352, 0x57B4D9A2, 0x1229FFA7, 0xC0F95D34, 0x2A519956,
    0x7D908B66, 0x63DBD80C, 0xB473E63E, 0x8D297D1C, 0xA6CCE040, 0x2B45F844, 0xA320872E, 0xDAE6C123,
    0x67349C8C, 0x705B0979, 0xCA9913A5, 0x4ADE3B35, 0xEF6CD00D, 0x4AB1E1F4, 0x43C5E663, 0x8C21D1BC,
    0x16A7B60D, 0x7A8FF9BF, 0x1F2A753E, 0xBF186B91, 0xADA26206, 0xA3C33057, 0xAE3A36A1, 0x7B108392,
    0x99E41531, 0x3F1AD944, 0xC8138825, 0xC28949A6, 0xFAF8876B, 0x9F042196, 0x68B1D623, 0x8B5114FD,
    0xDF074C46, 0x12CC86B3, 0x0A52098F, 0x9D292F9A, 0xA2F41F12, 0x43A71ED0, 0x73F0BCE6, 0x70A7E980,
    0x243C6D75, 0xFDB71513, 0xA67D8A08, 0xB7E8F148, 0xF7A644EE, 0x0F1837F2, 0x4B6694E0, 0xB7BBB3A8,
]
TEST_KEY = (0x0706050403020100, 0x0F0E0D0C0B0A0908)


def test_siphash_2_4_reference_vectors():
    msg = bytes(range(64))
    assert [siphash(TEST_KEY, msg[:n]) for n in range(64)] == SIPHASH24


def test_siphash_1_3_matches_kernel_hsiphash_vectors():
    msg = bytes(range(64))
    assert [siphash(TEST_KEY, msg[:n], 1, 3) & 0xFFFFFFFF for n in range(64)] == HSIPHASH64


def test_hsiphash_u32_is_the_4_byte_case():
    assert hsiphash_u32(TEST_KEY, 0x03020100) == HSIPHASH64[4]  # the kernel's hsiphash_1u32 check (C)
    rng = random.Random(3)
    for _ in range(200):
        v = rng.getrandbits(32)
        assert hsiphash_u32(HASH1, v) == siphash(HASH1, v.to_bytes(4, "little"), 1, 3) & 0xFFFFFFFF
    # the key is the u32 sum offset + port + address, wrapping
    assert mh_hash(HASH1, b"\xff\xff\xff\xff", 2) == hsiphash_u32(HASH1, 1)


# -- dh ---------------------------------------------------------------------------------------


def test_dh_buckets_round_robin_over_dests_and_keys_on_destination():
    # bucket i -> dests[i % 3]
    svc, d = make(A=1, B=1, C=1)
    sched = DestinationHashing(svc)
    assert pick(sched, svc, d, flow(daddr="0.0.0.0")) == "A"  # bucket 0
    assert pick(sched, svc, d, flow(daddr="0.0.0.1")) == "B"  # 97 % 3 = 1
    assert pick(sched, svc, d, flow(daddr="0.0.0.2")) == "A"  # 195 % 3 = 0
    assert pick(sched, svc, d, flow(daddr="0.0.0.3")) == "B"  # 37 % 3 = 1
    assert pick(sched, svc, d, flow(daddr="10.0.0.1")) == "A"  # 39 % 3 = 0
    # the client address and port do not matter
    assert pick(sched, svc, d, flow(saddr="203.0.113.9", sport=1, daddr="0.0.0.1")) == "B"


def test_dh_ignores_weights_and_has_no_fallback():
    svc, d = make(A=5, B=1, C=1)
    sched = DestinationHashing(svc)
    assert pick(sched, svc, d, flow(daddr="0.0.0.1")) == "B"
    d["B"].weight = 0
    sched.update(svc)
    assert pick(sched, svc, d, flow(daddr="0.0.0.1")) == "-"
    d["B"].weight = 1
    d["B"].overloaded = True
    assert pick(sched, svc, d, flow(daddr="0.0.0.1")) == "-"


def test_dh_rebuilds_on_add():
    svc, d = make(A=1, B=1, C=1)
    sched = DestinationHashing(svc)
    d["D"] = RealServer(pack_ip("10.0.0.9"), 80)
    svc.dests.insert(0, d["D"])  # [D, A, B, C]
    sched.update(svc)
    assert pick(sched, svc, d, flow(daddr="0.0.0.1")) == "A"  # 97 % 4 = 1


# -- sh ---------------------------------------------------------------------------------------


def test_sh_weighted_fill_and_weight_zero_keeps_one_bucket():
    # A=2, B=1, C=0 fill A A B C A A B C ...: bucket % 4 in {0,1} -> A, 2 -> B, 3 -> C
    svc, d = make(A=2, B=1, C=0)
    sched = SourceHashing(svc)
    assert Counter(id(x) for x in sched.table) == {id(d["A"]): 128, id(d["B"]): 64, id(d["C"]): 64}
    assert pick(sched, svc, d, flow(saddr="0.0.0.0")) == "A"  # 0
    assert pick(sched, svc, d, flow(saddr="0.0.0.1")) == "A"  # 97 % 4 = 1
    assert pick(sched, svc, d, flow(saddr="0.0.0.6")) == "B"  # 74 % 4 = 2
    assert pick(sched, svc, d, flow(saddr="0.0.0.2")) == "-"  # 195 % 4 = 3: C, quiesced
    assert pick(sched, svc, d, flow(saddr="10.0.0.1")) == "-"  # 39 % 4 = 3
    # the destination address does not matter
    assert pick(sched, svc, d, flow(saddr="0.0.0.6", daddr="203.0.113.1")) == "B"


def test_sh_fallback_walk():
    # ihash 195 unusable -> offset 0 probes (195 + 195) & 255 = 134, 134 % 4 = 2 -> B
    # ihash 39 -> (39 + 39) = 78, 78 % 4 = 2 -> B
    svc, d = make(SVC_F_SCHED1, A=2, B=1, C=0)
    sched = SourceHashing(svc)
    assert pick(sched, svc, d, flow(saddr="0.0.0.2")) == "B"
    assert pick(sched, svc, d, flow(saddr="10.0.0.1")) == "B"
    assert pick(sched, svc, d, flow(saddr="0.0.0.1")) == "A"  # usable: no walk
    d["A"].overloaded = True
    d["B"].weight = 0
    assert pick(sched, svc, d, flow(saddr="0.0.0.1")) == "-"  # nothing usable anywhere


def test_sh_port_flag():
    svc, d = make(A=2, B=1, C=0)
    sched = SourceHashing(svc)
    assert pick(sched, svc, d, flow(saddr="0.0.0.0", sport=6)) == "A"  # port ignored: key 0
    svc.flags = SVC_F_SCHED2
    assert pick(sched, svc, d, flow(saddr="0.0.0.0", sport=1)) == "A"  # 97
    assert pick(sched, svc, d, flow(saddr="0.0.0.0", sport=6)) == "B"  # 74
    assert pick(sched, svc, d, flow(saddr="0.0.0.0", sport=2)) == "-"  # 195 -> C
    assert pick(sched, svc, d, flow(saddr="0.0.0.0", sport=6, proto=1)) == "A"  # ICMP: no port


def test_sh_rebuilds_on_weight_edit():
    svc, d = make(A=2, B=1, C=0)
    sched = SourceHashing(svc)
    d["B"].weight = 2
    sched.update(svc)  # A A B B C: bucket % 5 in {2, 3} -> B
    assert pick(sched, svc, d, flow(saddr="0.0.0.1")) == "B"  # 97 % 5 = 2


# -- mh ---------------------------------------------------------------------------------------


def slot_counts(sched: MaglevHashing, d: dict[str, RealServer]) -> dict[str, int]:
    ids = Counter(id(x) for x in sched.table)
    return {n: ids[id(x)] for n, x in d.items()}


def test_mh_table_size_and_turns():
    # Every claim succeeds, so the share per dest follows from the turns alone.
    # equal weights: rounds of 3 slots, 4093 = 3 * 1364 + 1 -> the first dest has one more
    svc, d = make(A=1, B=1, C=1)
    assert len(MaglevHashing(svc).table) == TAB_SIZE == 4093
    assert slot_counts(MaglevHashing(svc), d) == {"A": 1365, "B": 1364, "C": 1364}
    # 2:1 -> turns 2 and 1, 4093 = 3 * 1364 + 1
    svc, d = make(A=2, B=1)
    assert slot_counts(MaglevHashing(svc), d) == {"A": 2729, "B": 1364}
    # gcd 2 divides out: 4:2 is 2:1
    svc, d = make(A=4, B=2)
    assert slot_counts(MaglevHashing(svc), d) == {"A": 2729, "B": 1364}
    # 100:1 -> fls(100) = 7 > 6, rshift 1: turns 50 and (1 >> 1 = 0, so) 1;
    # 80 rounds of 51 fill 4080, then A takes the last 13
    svc, d = make(A=100, B=1)
    assert slot_counts(MaglevHashing(svc), d) == {"A": 4013, "B": 80}
    # added with weight 0 (last_weight 0): no slots
    svc, d = make(A=0, B=1)
    assert slot_counts(MaglevHashing(svc), d) == {"A": 0, "B": 4093}
    svc, d = make(A=0)
    assert MaglevHashing(svc).table == [None] * TAB_SIZE


def test_mh_quiescing_keeps_the_table():
    svc, d = make(A=1, B=1, C=1)
    sched = MaglevHashing(svc)
    before = list(sched.table)
    flows = random_flows(3000)
    first = [sched.schedule(svc, f) for f in flows]
    d["B"].weight = 0  # the engine keeps last_weight = 1
    sched.update(svc)
    assert sched.table == before
    for f, was in zip(flows, first, strict=True):
        now = sched.schedule(svc, f)
        assert now is (None if was is d["B"] else was)
    svc.flags = SVC_F_SCHED1  # mh-fallback: B's clients move, nobody else does
    for f, was in zip(flows, first, strict=True):
        now = sched.schedule(svc, f)
        assert now is not None and now is not d["B"]
        if was is not d["B"]:
            assert now is was
    d["A"].overloaded = True
    d["C"].overloaded = True
    assert all(sched.schedule(svc, f) is None for f in flows[:20])


def test_mh_port_flag():
    svc, d = make(A=1, B=1, C=1, D=1)
    sched = MaglevHashing(svc)
    same_client = [flow(sport=p) for p in range(1024, 1224)]
    assert len({id(sched.schedule(svc, f)) for f in same_client}) == 1
    svc.flags = SVC_F_SCHED2
    assert len({id(sched.schedule(svc, f)) for f in same_client}) == 4


def test_mh_too_many_dests():
    many = [RealServer(int(i).to_bytes(4, "big"), 80) for i in range(TAB_SIZE + 1)]
    with pytest.raises(ConfigError) as err:
        MaglevHashing(VirtualService(6, VIP, 80, dests=many))
    assert err.value.errno_name == "EINVAL"
    svc = VirtualService(6, VIP, 80, dests=many[:TAB_SIZE])
    sched = MaglevHashing(svc)
    table = list(sched.table)
    svc.dests.insert(0, many[-1])
    sched.update(svc)  # as the kernel after a dest add: the old table stays
    assert sched.table == table


def test_mh_minimal_disruption():
    def dests(n: int) -> list[RealServer]:
        return [RealServer(pack_ip(f"10.1.0.{i + 1}"), 80) for i in range(n)]

    flows = random_flows(20000)
    ten = VirtualService(6, VIP, 80, dests=dests(10))
    sched = MaglevHashing(ten)
    before = [key(sched.schedule(ten, f)) for f in flows]

    eleven = VirtualService(6, VIP, 80, dests=dests(11)[10:] + dests(10))  # newest first
    sched = MaglevHashing(eleven)
    added = [key(sched.schedule(eleven, f)) for f in flows]
    moved_add = sum(a != b for a, b in zip(before, added, strict=True)) / len(flows)

    removed_key = key(ten.dests[3])
    nine = VirtualService(6, VIP, 80, dests=[x for i, x in enumerate(dests(10)) if i != 3])
    sched = MaglevHashing(nine)
    after = [key(sched.schedule(nine, f)) for f in flows]
    moved_del = sum(a != b for a, b in zip(before, after, strict=True)) / len(flows)
    bystanders = [(a, b) for a, b in zip(before, after, strict=True) if a != removed_key]
    stayed = sum(a == b for a, b in bystanders) / len(bystanders)
    print(f"mh: adding 1 to 10 moved {moved_add:.3f}, removing 1 of 10 moved {moved_del:.3f}")

    # A modulo hash over the same hash value moves about N/(N+1) of the flows.
    h = [hsiphash_u32(HASH1, int.from_bytes(f.saddr, "big")) for f in flows]
    moved_mod = sum(x % 10 != x % 11 for x in h) / len(flows)

    assert 1 / 11 * 0.7 < moved_add < 1 / 11 * 1.6, moved_add
    assert 1 / 10 * 0.7 < moved_del < 1 / 10 * 1.6, moved_del
    assert stayed > 0.95, stayed
    assert moved_mod > 0.85
    assert moved_add < moved_mod / 5


@pytest.mark.parametrize("cls", [DestinationHashing, SourceHashing, MaglevHashing])
def test_hashing_is_deterministic_across_instances(cls):
    def build() -> VirtualService:
        return VirtualService(6, VIP, 80, dests=[RealServer(pack_ip(f"10.2.0.{i}"), 8080, weight=1 + i % 3)
                                                 for i in range(1, 8)])

    a, b = build(), build()
    sa, sb = cls(a), cls(b)
    for f in random_flows(2000):
        assert key(sa.schedule(a, f)) == key(sb.schedule(b, f))


@pytest.mark.parametrize("cls", [DestinationHashing, SourceHashing, MaglevHashing])
def test_hashing_spreads_evenly(cls):
    svc, d = make(A=1, B=1, C=1, D=1)
    sched = cls(svc)
    counts = Counter(id(sched.schedule(svc, f)) for f in random_flows(8000))
    for dest in d.values():
        assert abs(counts[id(dest)] / 8000 - 0.25) < 0.04, counts


def test_mh_build_for_1000_dests_is_fast():
    svc = VirtualService(6, VIP, 80, dests=[RealServer(bytes([10, 3, i >> 8, i & 255]), 80, weight=1 + i % 5)
                                            for i in range(1000)])
    t = time.perf_counter()
    sched = MaglevHashing(svc)
    elapsed = time.perf_counter() - t
    assert None not in sched.table
    assert elapsed < 1.0, elapsed  # about 0.03 s here; the goal is < 0.5 s
