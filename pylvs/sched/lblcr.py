"""Locality-based least-connection with replication (ip_vs_lblcr.c).

Like lblc, but a destination address maps to a set of servers: the least loaded (wlc) member
serves; when it is "overloaded" in the lblc sense a wlc pick over all servers joins the set, and
a set unchanged for `lblcr_expiration` sheds its most loaded member. Cache entries expire exactly
as in lblc (same timer), with `settings.lblcr_expiration`.
"""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched import lblc
from pylvs.sched.base import Flow
from pylvs.sched.lblc import LocalityScheduler, LocalityTable
from pylvs.sched.wlc import overhead


class _LblcrEntry:
    __slots__ = ("members", "lastmod", "lastuse")

    def __init__(self, dest: RealServer, now: float) -> None:
        self.members = [dest]  # newest first, as the kernel's list_add
        self.lastmod = now  # last change of the set
        self.lastuse = now


def set_min(members: list[RealServer]) -> RealServer | None:
    """ip_vs_dest_set_min: wlc over the set, members must be available, weight > 0, not overloaded."""
    it = iter(members)
    for least in it:
        if not least.overloaded and least.weight > 0 and least.available:
            break
    else:
        return None
    loh = overhead(least)
    for dest in it:
        if dest.overloaded:
            continue
        doh = overhead(dest)
        if loh * dest.weight > doh * least.weight and dest.available:
            least, loh = dest, doh
    return least


def set_max(members: list[RealServer]) -> RealServer | None:
    """ip_vs_dest_set_max: the weighted most loaded member with weight > 0 (overload not considered)."""
    it = iter(members)
    for most in it:
        if most.weight > 0:
            break
    else:
        return None
    moh = overhead(most)
    for dest in it:
        doh = overhead(dest)
        if moh * dest.weight < doh * most.weight and dest.weight > 0:
            most, moh = dest, doh
    return most


class LocalityBasedLeastConnectionReplication(LocalityScheduler):
    name = "lblcr"

    def __init__(self, service: VirtualService) -> None:
        self.settings = lblc.settings
        self.cache: LocalityTable[_LblcrEntry] = LocalityTable()
        super().__init__(service)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        if self.changed:
            self.refresh()
        now = flow.now
        expiration = self.settings.lblcr_expiration
        self.cache.advance(now, expiration)
        en = self.cache.entries.get(flow.daddr)
        if en is None:
            dest = self.least(service)
            if dest is not None:
                self.cache.entries[flow.daddr] = _LblcrEntry(dest, now)
            return dest

        en.lastuse = now
        dest = set_min(en.members)  # chosen before the shrink below, as in the kernel
        if len(en.members) > 1 and now > en.lastmod + expiration:
            most = set_max(en.members)
            if most is not None:
                en.members.remove(most)
                en.lastmod = now
        if dest is not None and not self.overloaded(service, dest):
            return dest

        dest = self.least(service)
        if dest is not None and dest not in en.members:
            en.members.insert(0, dest)
            en.lastmod = now
        return dest
