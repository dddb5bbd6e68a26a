"""IPVS schedulers, registered by name (ipvs.md §2)."""

from __future__ import annotations

from pylvs.sched.base import Flow, Scheduler
from pylvs.sched.rr import RoundRobin

SCHEDULERS: dict[str, type[Scheduler]] = {cls.name: cls for cls in (RoundRobin,)}


class UnknownScheduler(LookupError):
    pass


def scheduler_class(name: str) -> type[Scheduler]:
    try:
        return SCHEDULERS[name]
    except KeyError:
        known = " ".join(sorted(SCHEDULERS))
        raise UnknownScheduler(f"unknown scheduler {name!r} (known: {known})") from None


__all__ = ["Flow", "Scheduler", "SCHEDULERS", "UnknownScheduler", "scheduler_class"]
