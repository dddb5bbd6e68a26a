"""Maglev hashing (ip_vs_mh.c): consistent hashing of the client address over a 4093-slot table.

Every dest walks its own permutation of the slots (start `offset`, stride `skip`, both from fixed-key
SipHash of its address and port) and claims free slots in turns proportional to its weight, so adding
or removing one server moves only about 1/N of the clients. The hash keys are fixed, so equal dest
lists always build equal tables, across restarts and across directors.

Flags: mh-fallback (SVC_F_SCHED1) re-probes the table when the chosen dest is unusable; mh-port
(SVC_F_SCHED2) adds the client's source port to the key.
"""

from __future__ import annotations

from math import gcd

from pylvs.engine.services import SVC_F_SCHED1, ConfigError, RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable
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
    return hsiphash_u32(key, offset + port + int.from_bytes(addr, "big"))


class MaglevHashing(Scheduler):
    name = "mh"

    def __init__(self, service: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        self._built = False
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
        if g < 1:
            self.table = [None] * TAB_SIZE
            return
        rshift = max(0, (max(d.last_weight for d in dests) // g).bit_length() - TAB_BITS)
        setups: list[tuple[RealServer, int, int]] = []  # (dest, skip, turns)
        perms: list[int] = []  # next slot to try; starts at the dest's offset
        for dest in dests:
            lw = dest.last_weight
            turns = ((lw // g) >> rshift) or (1 if lw else 0)
            if turns < 1:
                continue
            perms.append(mh_hash(HASH1, dest.addr, dest.port) % TAB_SIZE)
            setups.append((dest, mh_hash(HASH2, dest.addr, dest.port) % (TAB_SIZE - 1) + 1, turns))
        self.table = self._populate(setups, perms)

    @staticmethod
    def _populate(setups: list[tuple[RealServer, int, int]], perms: list[int]) -> list[RealServer | None]:
        """Rounds over the dests in list order; each claims `turns` slots, each the next free one on
        its permutation, until the table is full."""
        table: list[RealServer | None] = [None] * TAB_SIZE
        taken = bytearray(TAB_SIZE)
        filled = 0
        while True:
            for i, (dest, skip, turns) in enumerate(setups):
                c = perms[i]
                for _ in range(turns):
                    while taken[c]:
                        c += skip
                        if c >= TAB_SIZE:
                            c -= TAB_SIZE
                    taken[c] = 1
                    table[c] = dest
                    filled += 1
                    if filled == TAB_SIZE:
                        return table
                perms[i] = c

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        port = hash_port(service, flow)
        ihash = mh_hash(HASH1, flow.saddr, port) % TAB_SIZE
        dest = self.table[ihash]
        if dest is None:
            return None
        if usable(dest):
            return dest
        if not service.flags & MH_FALLBACK:
            return None
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            dest = self.table[mh_hash(HASH1, flow.saddr, port, roffset) % TAB_SIZE]
            if dest is None:
                break
            if usable(dest):
                return dest
        return None
