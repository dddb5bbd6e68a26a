"""Round robin (ip_vs_rr.c): walk the list from the last choice, take the next usable dest."""

from __future__ import annotations

from pylvs.engine.services import RealServer, VirtualService
from pylvs.sched.base import Flow, Scheduler, usable


class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, service: VirtualService) -> None:
        self.last: RealServer | None = None  # None = the list head, as the kernel's sched_data
        self.order: list[RealServer] = []
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        # A deleted cursor moves to its predecessor (the kernel's ip_vs_rr_del_dest).
        if self.last is not None and self.last not in service.dests:
            i = self.order.index(self.last)
            self.last = next((d for d in reversed(self.order[:i]) if d in service.dests), None)
        self.order = list(service.dests)

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        dests = service.dests
        n = len(dests)
        start = 0 if self.last is None else dests.index(self.last) + 1
        for i in range(n):
            dest = dests[(start + i) % n]
            if usable(dest):
                self.last = dest
                return dest
        return None
