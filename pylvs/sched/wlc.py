"""Weighted least-connection (ip_vs_wlc.c), the default scheduler: minimise overhead / weight."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable


def overhead(dest: RealServer) -> int:
    """The classic ip_vs_dest_conn_overhead: one active connection weighs as much as 256 inactive."""
    return (dest.activeconns << 8) + dest.inactconns


def weighted_least(
    dests: Iterable[RealServer], cost: Callable[[RealServer], int] = overhead
) -> RealServer | None:
    """The wlc rule, shared with sed, lblc and lblcr.

    The first usable dest is the initial pick; after it only overloaded dests are skipped, as in the
    kernel (a weight-0 dest can never win `loh * w_d > doh * w_least`). Division-free and strict, so
    ties keep the earlier (newest-added) dest.
    """
    it = iter(dests)
    for least in it:
        if usable(least):
            break
    else:
        return None
    loh = cost(least)
    for dest in it:
        if dest.overloaded or not dest.available:
            continue
        doh = cost(dest)
        if loh * dest.weight > doh * least.weight:
            least, loh = dest, doh
    return least


class WeightedLeastConnection(Scheduler):
    name = "wlc"

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        return weighted_least(service.dests)
