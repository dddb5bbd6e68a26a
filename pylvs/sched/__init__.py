"""IPVS schedulers, registered by name (ipvs.md §2)."""

from __future__ import annotations

from pylvs.sched.base import Flow, Scheduler
from pylvs.sched.dh import DestinationHashing
from pylvs.sched.fo import WeightedFailover
from pylvs.sched.lblc import LocalityBasedLeastConnection, LocalitySettings
from pylvs.sched.lblcr import LocalityBasedLeastConnectionReplication
from pylvs.sched.lc import LeastConnection
from pylvs.sched.mh import MaglevHashing
from pylvs.sched.nq import NeverQueue
from pylvs.sched.ovf import WeightedOverflow
from pylvs.sched.rr import RoundRobin
from pylvs.sched.sed import ShortestExpectedDelay
from pylvs.sched.sh import SourceHashing
from pylvs.sched.twos import PowerOfTwoChoices
from pylvs.sched.wlc import WeightedLeastConnection
from pylvs.sched.wrr import WeightedRoundRobin

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnection,
        WeightedLeastConnection,
        ShortestExpectedDelay,
        NeverQueue,
        WeightedFailover,
        WeightedOverflow,
        PowerOfTwoChoices,
        DestinationHashing,
        SourceHashing,
        MaglevHashing,
        LocalityBasedLeastConnection,
        LocalityBasedLeastConnectionReplication,
    )
}


class UnknownScheduler(LookupError):
    pass


def scheduler_class(name: str) -> type[Scheduler]:
    try:
        return SCHEDULERS[name]
    except KeyError:
        known = " ".join(sorted(SCHEDULERS))
        raise UnknownScheduler(f"unknown scheduler {name!r} (known: {known})") from None


__all__ = ["Flow", "LocalitySettings", "Scheduler", "SCHEDULERS", "UnknownScheduler", "scheduler_class"]
