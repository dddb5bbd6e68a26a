"""Maglev hashing (ip_vs_mh.c): consistent hashing of the client address over a 4093-slot table.

Every dest walks its own permutation of the slots (start `offset`, stride `skip`, both from the
kernel's fixed-key hsiphash of its address and port) and claims free slots in turns proportional to
its weight, so adding or removing one server moves only about 1/N of the clients. The hash keys are
fixed, so equal dest lists always build equal tables, across restarts and across directors.

Flags: mh-fallback (SVC_F_SCHED1) re-probes the table when the chosen dest is unusable; mh-port
(SVC_F_SCHED2) adds the client's source port to the key.
"""

from __future__ import annotations

from array import array
from functools import partial
from math import gcd

from pylvs.engine.services import SVC_F_SCHED1, ConfigError, RealServer, VirtualService
from pylvs.sched import _maglev
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

_M32 = (1 << 32) - 1


def hsiphash_u32(key: tuple[int, int], value: int) -> int:
    """The kernel's hsiphash_1u32 on a 64-bit machine: SipHash-1-3 of the u32's 4 little-endian bytes,
    truncated to 32 bits (in C, pylvs/sched/_maglev.c, which takes the value's low 32 bits)."""
    return _maglev.hsiphash_u32(*key, value)


def mh_hash(key: tuple[int, int], addr: bytes, port: int, offset: int = 0) -> int:
    """ip_vs_mh_hashkey: the u32 sum offset + port + address (host order), hashed."""
    return hsiphash_u32(key, (offset + port + addr_fold(addr)) & _M32)


# hsiphash_u32 under each fixed key, bound once (partial calls straight into C: once per new client)
hash1 = partial(_maglev.hsiphash_u32, *HASH1)
hash2 = partial(_maglev.hsiphash_u32, *HASH2)


CACHE_MAX = 1 << 16  # entries per memo below; cleared when full
_slots: dict[int, int] = {}  # hash key (port + address) -> table slot, for clients seen before
_permutations: dict[tuple[bytes, int], tuple[int, int]] = {}  # dest (addr, port) -> (offset, skip)


def client_slot(value: int) -> int:
    """The table slot of a new client's hash key, remembered for its return."""
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


def populate(dests: list[RealServer], walks: list[tuple[int, int]], turns: list[int]) -> list[RealServer | None]:
    """The kernel's ip_vs_mh_populate over the dests in list order, each with its walk (offset, skip) and
    turns: rounds over the dests, each claiming `turns` slots, each the next free one on its walk, until
    the table is full. The walk is in C (pylvs/sched/_maglev.c): in Python it cost 2-4 ms at 1000 dests."""
    if not dests:
        return [None] * TAB_SIZE
    return _maglev.fill(TAB_SIZE, array("I", [w[0] for w in walks]), array("I", [w[1] for w in walks]),
                        array("I", turns), tuple(dests))


class MaglevHashing(Scheduler):
    name = "mh"

    def __init__(self, service: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        self._built = False
        self._inputs: tuple[list, list, list] | None = None  # what `table` was built from
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
        live = [d for d in dests if d.last_weight > 0]
        inputs: tuple[list, list, list] = ([], [], [])
        if live:
            weights = [d.last_weight for d in live]
            g = gcd(*weights)
            rshift = max(0, (max(weights) // g).bit_length() - TAB_BITS)
            perms = _permutations
            walks = [perms.get((d.addr, d.port)) or permutation(d) for d in live]
            inputs = (live, walks, [((w // g) >> rshift) or 1 for w in weights])
        if inputs != self._inputs:  # most edits (quiescing, thresholds, methods) leave the table as it is
            self.table = populate(*inputs)
            self._inputs = inputs

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        port = hash_port(service, flow)
        saddr = flow.saddr
        addr = int.from_bytes(saddr, "big") if len(saddr) == 4 else addr_fold(saddr)  # one call less per client
        value = (port + addr) & _M32
        ihash = _slots.get(value)
        if ihash is None:
            ihash = client_slot(value)
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
