"""Weighted least-connection (ip_vs_wlc.c), the default scheduler: minimise overhead / weight."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pylvs.engine.services import RealServer
from pylvs.sched.base import usable
from pylvs.sched.least import LeastScheduler, ratio


def overhead(dest: RealServer) -> int:
    """The classic ip_vs_dest_conn_overhead: one active connection weighs as much as 256 inactive."""
    return (dest.activeconns << 8) + dest.inactconns


def weighted_least(
    dests: Iterable[RealServer], cost: Callable[[RealServer], int] = overhead
) -> RealServer | None:
    """The wlc loop, shared with sed, lblc and lblcr (their fallback when an index key is inexact).

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


def wlc_key(dest: RealServer) -> float | object | None:
    """overhead / weight for a usable dest (the index key of wlc, lblc and lblcr)."""
    if dest.weight > 0 and not dest.overloaded and dest.available:
        return ratio((dest.activeconns << 8) + dest.inactconns, dest.weight)
    return None


class WeightedLeastConnection(LeastScheduler):
    name = "wlc"
    key = staticmethod(wlc_key)
    scan = staticmethod(weighted_least)
