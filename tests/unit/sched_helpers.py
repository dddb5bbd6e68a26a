"""What the scheduler tests share: services built from named weights, choices read back as names."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.sched.base import Flow, Scheduler

VIP = pack_ip("192.0.2.1")
FLOW = Flow(6, pack_ip("198.51.100.7"), 40000, VIP, 80)


def make(flags: int = 0, **weights: int) -> tuple[VirtualService, dict[str, RealServer]]:
    """Dests in the given (kernel) order, named by keyword."""
    dests = {name: RealServer(pack_ip(f"10.0.0.{i + 1}"), 80, weight=w)
             for i, (name, w) in enumerate(weights.items())}
    return VirtualService(6, VIP, 80, flags=flags, dests=list(dests.values())), dests


def name_of(dests: dict[str, RealServer], dest: RealServer | None) -> str:
    return "-" if dest is None else next(n for n, d in dests.items() if d is dest)


def pick(sched: Scheduler, svc: VirtualService, dests: dict[str, RealServer], flow: Flow = FLOW) -> str:
    """One scheduling decision, as the dest's name ("-" for none)."""
    return name_of(dests, sched.schedule(svc, flow))
