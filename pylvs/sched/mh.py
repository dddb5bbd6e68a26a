"""Maglev hashing (ip_vs_mh.c): consistent hashing of the client address over a 4093-slot table.

Every dest walks its own permutation of the slots (start `offset`, stride `skip`, both from fixed-key
SipHash of its address and port) and claims free slots in turns proportional to its weight, so adding
or removing one server moves only about 1/N of the clients. The hash keys are fixed, so equal dest
lists always build equal tables, across restarts and across directors.

Flags: mh-fallback (SVC_F_SCHED1) re-probes the table when the chosen dest is unusable; mh-port
(SVC_F_SCHED2) adds the client's source port to the key.
"""

from __future__ import annotations

from collections.abc import Callable
from math import gcd

from pylvs.engine.services import SVC_F_SCHED1, ConfigError, RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
from pylvs.sched.dh import addr_fold
from pylvs.sched.sh import hash_port

PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
TAB_INDEX = 12  # CONFIG_IP_VS_MH_TAB_INDEX
TAB_SIZE = PRIMES[TAB_INDEX - 8]  # 4093
TAB_BITS = TAB_INDEX // 2  # weights are scaled down to at most this many bits

# generate_hash_secret(): the kernel's fixed keys, (key[0], key[1]) as 64-bit words.
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)

MH_FALLBACK = SVC_F_SCHED1

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = ((v1 << 13) | (v1 >> 51)) & _M64 ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & _M64
    v2 = (v2 + v3) & _M64
    v3 = ((v3 << 16) | (v3 >> 48)) & _M64 ^ v2
    v0 = (v0 + v3) & _M64
    v3 = ((v3 << 21) | (v3 >> 43)) & _M64 ^ v0
    v2 = (v2 + v1) & _M64
    v1 = ((v1 << 17) | (v1 >> 47)) & _M64 ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    return v0, v1, v2, v3


def siphash(key: tuple[int, int], data: bytes, c_rounds: int = 2, d_rounds: int = 4) -> int:
    """SipHash-c-d of `data` under the two 64-bit key words, as a 64-bit integer."""
    k0, k1 = key
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    tail = len(data) - len(data) % 8
    for off in range(0, tail, 8):
        m = int.from_bytes(data[off:off + 8], "little")
        v3 ^= m
        for _ in range(c_rounds):
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[tail:], "little")
    v3 ^= b
    for _ in range(c_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(d_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash_u32(key: tuple[int, int], value: int) -> int:
    """The kernel's hsiphash of one u32 on a 64-bit machine: SipHash-1-3 of its 4 little-endian bytes,
    truncated to 32 bits. Unrolled: this runs once per new connection."""
    k0, k1 = key
    b = (4 << 56) | (value & _M32)
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1 ^ b
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & _M32


def mh_hash(key: tuple[int, int], addr: bytes, port: int, offset: int = 0) -> int:
    """ip_vs_mh_hashkey: the u32 sum offset + port + address (host order), hashed."""
    return hsiphash_u32(key, (offset + port + addr_fold(addr)) & _M32)


def fixed_key_hsiphash(key: tuple[int, int]) -> Callable[[int], int]:
    """hsiphash_u32 under one fixed key, faster: the state after the key setup and the part of the
    first round that only depends on the key are computed here, once."""
    k0, k1 = key
    m = _M64
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    c2 = 0x6C7967656E657261 ^ k0
    c3 = 0x7465646279746573 ^ k1
    v0 = (v0 + v1) & m
    c1 = ((v1 << 13) | (v1 >> 51)) & m ^ v0
    c0 = ((v0 << 32) | (v0 >> 32)) & m
    c1r = ((c1 << 17) | (c1 >> 47)) & m
    length = 4 << 56

    def hsiphash(value: int) -> int:
        b = length | (value & _M32)
        v3 = c3 ^ b
        v2 = (c2 + v3) & m
        v3 = ((v3 << 16) | (v3 >> 48)) & m ^ v2
        v0 = (c0 + v3) & m
        v3 = ((v3 << 21) | (v3 >> 43)) & m ^ v0
        v2 = (v2 + c1) & m
        v1 = c1r ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & m ^ 0xFF  # end of the c-round, then the finalisation xor
        v0 ^= b
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)  # the three d-rounds
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        return (v0 ^ v1 ^ v2 ^ v3) & _M32

    return hsiphash


hash1 = fixed_key_hsiphash(HASH1)
hash2 = fixed_key_hsiphash(HASH2)

CACHE_MAX = 1 << 16  # entries per memo below; cleared when full
_slots: dict[int, int] = {}  # hash key (port + address) -> table slot, for clients seen before
_permutations: dict[tuple[bytes, int], tuple[int, int]] = {}  # dest (addr, port) -> (offset, skip)


def client_slot(value: int) -> int:
    """The table slot of a client's hash key: hash1(value) % TAB_SIZE, remembered for repeat clients."""
    slot = _slots.get(value)
    if slot is None:
        if len(_slots) >= CACHE_MAX:
            _slots.clear()
        slot = _slots[value] = hash1(value) % TAB_SIZE
    return slot


def permutation(dest: RealServer) -> tuple[int, int]:
    """A dest's (offset, skip): where its walk over the table starts and its stride."""
    key = (dest.addr, dest.port)
    perm = _permutations.get(key)
    if perm is None:
        if len(_permutations) >= CACHE_MAX:
            _permutations.clear()
        value = (dest.port + addr_fold(dest.addr)) & _M32
        perm = _permutations[key] = (hash1(value) % TAB_SIZE, hash2(value) % (TAB_SIZE - 1) + 1)
    return perm


# Below this many free slots, a claim finds its slot by computing each free slot's place on the dest's
# walk instead of stepping along it (the walk would take about TAB_SIZE / free steps).
TAIL = 48


def populate(setups: list[tuple[RealServer, int, int, int]]) -> list[RealServer | None]:
    """The kernel's ip_vs_mh_populate over (dest, offset, skip, turns) in list order: rounds over the
    dests, each claiming `turns` slots, each the next free one on its walk, until the table is full.

    The order of the claims does not depend on the table, so it is laid out first; only which slot
    each claim gets needs the walk.
    """
    table: list[RealServer | None] = [None] * TAB_SIZE
    if not setups:
        return table
    ptrs = [offset for _, offset, _, _ in setups]
    skips = [skip for _, _, skip, _ in setups]
    dests = [dest for dest, _, _, _ in setups]
    one_round: list[int] = []
    for i, (_, _, _, turns) in enumerate(setups):
        one_round += [i] * turns
    rounds, rest = divmod(TAB_SIZE, len(one_round))
    claims = one_round * rounds + one_round[:rest]
    m = TAB_SIZE
    for i in claims[:m - TAIL]:
        c = ptrs[i]
        if table[c] is not None:  # the walk stays on the last claimed slot: step off it first
            skip = skips[i]
            c += skip
            if c >= m:
                c -= m
            while table[c] is not None:
                c += skip
                if c >= m:
                    c -= m
        table[c] = dests[i]
        ptrs[i] = c
    free = [c for c in range(m) if table[c] is None]
    for i in claims[m - TAIL:]:
        # Slot x is step (x - ptr) / skip (mod m, a prime) of the walk: take the free one reached first.
        inv = pow(skips[i], -1, m)
        base = ptrs[i] * inv
        c = min(free, key=lambda x: (x * inv - base) % m)  # noqa: B023 - used at once
        free.remove(c)
        table[c] = dests[i]
        ptrs[i] = c
    return table


class MaglevHashing(Scheduler):
    name = "mh"

    def __init__(self, service: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        self._built = False
        self._inputs: list[tuple[RealServer, int, int, int]] | None = None  # what `table` was built from
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        dests = service.dests
        if len(dests) > TAB_SIZE:
            # The kernel fails the service setup with EINVAL; after a dest add it keeps the old table.
            if not self._built:
                raise ConfigError("EINVAL", f"mh supports at most {TAB_SIZE} destinations")
            return
        self._built = True
        # last_weight (the latest non-zero weight) keeps a quiesced dest's slots: its clients
        # are refused (or fall back) rather than reshuffled.
        g = gcd(*(d.last_weight for d in dests if d.last_weight > 0))
        setups: list[tuple[RealServer, int, int, int]] = []
        if g >= 1:
            rshift = max(0, (max(d.last_weight for d in dests) // g).bit_length() - TAB_BITS)
            for dest in dests:
                lw = dest.last_weight
                turns = ((lw // g) >> rshift) or (1 if lw else 0)
                if turns >= 1:
                    setups.append((dest, *permutation(dest), turns))
        if setups != self._inputs:  # most edits (quiescing, thresholds, methods) leave the table as it is
            self.table = populate(setups)
            self._inputs = setups

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        port = hash_port(service, flow)
        addr = addr_fold(flow.saddr)
        ihash = client_slot((port + addr) & _M32)
        dest = self.table[ihash]
        if dest is None:
            return None
        if usable(dest):
            return dest
        if not service.flags & MH_FALLBACK:
            return None
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            dest = self.table[hash1(roffset + port + addr) % TAB_SIZE]
            if dest is None:
                break
            if usable(dest):
                return dest
        return None
