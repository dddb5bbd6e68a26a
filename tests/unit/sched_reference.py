"""The kernel's scheduling loops written out plainly (ip_vs_*.c as ipvs.md §2 describes them), as the
reference the indexed schedulers in pylvs.sched must agree with. Slow on purpose: they walk the list."""

from __future__ import annotations

import random
from math import gcd

from pylvs.engine.services import SVC_F_SCHED1, RealServer, VirtualService
from pylvs.sched.base import Flow
from pylvs.sched.lblc import LocalityBasedLeastConnection
from pylvs.sched.lblcr import LocalityBasedLeastConnectionReplication
from pylvs.sched.mh import HASH1, HASH2, TAB_BITS, TAB_SIZE
from pylvs.sched.sh import hash_port


def usable(d: RealServer) -> bool:
    return d.weight > 0 and not d.overloaded and d.available


def overhead(d: RealServer) -> int:
    return (d.activeconns << 8) + d.inactconns


def lc(dests: list[RealServer]) -> RealServer | None:
    least = None
    for d in dests:
        if usable(d) and (least is None or overhead(d) < overhead(least)):
            least = d
    return least


def wlc(dests: list[RealServer], cost=overhead) -> RealServer | None:
    it = iter(dests)
    for least in it:
        if usable(least):
            break
    else:
        return None
    for d in it:
        if d.overloaded or not d.available:
            continue
        if cost(least) * d.weight > cost(d) * least.weight:
            least = d
    return least


def sed(dests: list[RealServer]) -> RealServer | None:
    return wlc(dests, lambda d: d.activeconns + 1)


def nq(dests: list[RealServer]) -> RealServer | None:
    least = None
    for d in dests:
        if not usable(d):
            continue
        if d.activeconns == 0:
            return d
        if least is None or (least.activeconns + 1) * d.weight > (d.activeconns + 1) * least.weight:
            least = d
    return least


def fo(dests: list[RealServer]) -> RealServer | None:
    best = None
    for d in dests:
        if usable(d) and (best is None or d.weight > best.weight):
            best = d
    return best


def ovf(dests: list[RealServer]) -> RealServer | None:
    best = None
    for d in dests:
        if usable(d) and d.activeconns <= d.weight and (best is None or d.weight > best.weight):
            best = d
    return best


class Loop:
    """A stateless loop as a scheduler."""

    def __init__(self, loop) -> None:
        self.loop = loop

    def update(self, svc: VirtualService) -> None:
        pass

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        return self.loop(svc.dests)


class RoundRobin:
    def __init__(self, svc: VirtualService) -> None:
        self.last: RealServer | None = None
        self.order = list(svc.dests)

    def update(self, svc: VirtualService) -> None:
        if self.last is not None and self.last not in svc.dests:  # moved to its predecessor
            i = self.order.index(self.last)
            self.last = next((d for d in reversed(self.order[:i]) if d in svc.dests), None)
        self.order = list(svc.dests)

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        dests = svc.dests
        start = 0 if self.last is None else dests.index(self.last) + 1
        for i in range(len(dests)):
            d = dests[(start + i) % len(dests)]
            if usable(d):
                self.last = d
                return d
        return None


class WeightedRoundRobin:
    """ip_vs_wrr_schedule step by step, with the list index as the cursor."""

    def __init__(self, svc: VirtualService) -> None:
        self.pos, self.cw, self.mw, self.di = -1, 0, 0, 1
        self.update(svc)

    def update(self, svc: VirtualService) -> None:
        weights = [d.weight for d in svc.dests]
        self.di = gcd(*(w for w in weights if w > 0)) or 1
        self.mw = max(weights, default=0) - (self.di - 1)
        self.pos = -1
        if self.cw > self.mw or not self.cw:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        if self.mw == 0:
            return None
        dests = svc.dests
        last = self.pos
        i = last + 1
        stop = -2
        last_pass = restarted = False
        while True:
            while i < len(dests):
                d = dests[i]
                if d.weight >= self.cw and usable(d):
                    self.pos = i
                    return d
                if i == stop:
                    self.pos = i
                    return None
                i += 1
            i = 0
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last < 0:
                    self.pos = -1
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last >= 0:
                stop = last


class PowerOfTwoChoices:
    def __init__(self, svc: VirtualService) -> None:
        self.rng = random.Random()

    def update(self, svc: VirtualService) -> None:
        pass

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        dests = [d for d in svc.dests if usable(d)]
        if not dests:
            return None
        total = sum(d.weight for d in dests) + 1
        r1, r2 = self.rng.randrange(total), self.rng.randrange(total)
        c1 = c2 = None
        for d in dests:
            r1 -= d.weight
            r2 -= d.weight
            if c1 is None and r1 <= 0:
                c1 = d
            if c2 is None and r2 <= 0:
                c2 = d
        assert c1 is not None and c2 is not None
        return c2 if c2.weight * overhead(c1) > c1.weight * overhead(c2) else c1


def locality_overloaded(dest: RealServer, dests: list[RealServer]) -> bool:
    return dest.activeconns > dest.weight and any(d.activeconns * 2 < d.weight for d in dests)


class LocalityByLoop(LocalityBasedLeastConnection):
    """lblc with its cache, but the wlc choice and the overload rule from the loops above."""

    def least(self, service: VirtualService) -> RealServer | None:
        return wlc(service.dests)

    def overloaded(self, service: VirtualService, dest: RealServer) -> bool:
        return locality_overloaded(dest, service.dests)


class ReplicationByLoop(LocalityBasedLeastConnectionReplication):
    least = LocalityByLoop.least
    overloaded = LocalityByLoop.overloaded


_M64 = (1 << 64) - 1


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
    """SipHash-c-d of `data` under two 64-bit key words, written from the paper: the independent
    reference the library pylvs uses is checked against."""
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


def hsiphash(key: tuple[int, int], value: int) -> int:
    return siphash(key, (value & 0xFFFFFFFF).to_bytes(4, "little"), 1, 3) & 0xFFFFFFFF


class Maglev:
    """ip_vs_mh: the table filled by the kernel's loop, hashes by the generic SipHash."""

    def __init__(self, svc: VirtualService) -> None:
        self.table: list[RealServer | None] = [None] * TAB_SIZE
        self.update(svc)

    def update(self, svc: VirtualService) -> None:
        dests = svc.dests
        if len(dests) > TAB_SIZE:
            return
        g = gcd(*(d.last_weight for d in dests if d.last_weight > 0))
        self.table = [None] * TAB_SIZE
        if g < 1:
            return
        rshift = max(0, (max(d.last_weight for d in dests) // g).bit_length() - TAB_BITS)
        ds = []
        for d in dests:
            turns = ((d.last_weight // g) >> rshift) or (1 if d.last_weight else 0)
            if turns:
                v = d.port + int.from_bytes(d.addr, "big")
                ds.append([d, hsiphash(HASH1, v) % TAB_SIZE, hsiphash(HASH2, v) % (TAB_SIZE - 1) + 1, turns])
        taken = [False] * TAB_SIZE
        n = 0
        while ds:
            for entry in ds:
                d, _, skip, turns = entry
                for _ in range(turns):
                    while taken[entry[1]]:
                        entry[1] = (entry[1] + skip) % TAB_SIZE
                    taken[entry[1]] = True
                    self.table[entry[1]] = d
                    n += 1
                    if n == TAB_SIZE:
                        return

    def schedule(self, svc: VirtualService, flow: Flow) -> RealServer | None:
        port = hash_port(svc, flow)
        addr = int.from_bytes(flow.saddr, "big")
        ihash = hsiphash(HASH1, port + addr) % TAB_SIZE
        d = self.table[ihash]
        if d is None or usable(d):
            return d
        if not svc.flags & SVC_F_SCHED1:
            return None
        for offset in range(TAB_SIZE):
            d = self.table[hsiphash(HASH1, (offset + ihash) % TAB_SIZE + port + addr) % TAB_SIZE]
            if d is None:
                break
            if usable(d):
                return d
        return None
