"""The scheduler interface every IPVS scheduler implements (ipvs.md §2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple

if TYPE_CHECKING:
    from pylvs.engine.services import RealServer, VirtualService


class Flow(NamedTuple):
    """The packet a scheduling decision is made for; addresses are packed 4-byte IPv4."""

    protocol: int
    saddr: bytes
    sport: int
    daddr: bytes
    dport: int
    now: float = 0.0  # seconds, monotonic; for schedulers with time-based state (lblc, lblcr)


class Scheduler:
    """Chooses a real server for a new connection.

    `update` is called whenever the service's destination list or a destination's weight or
    thresholds change (the kernel's add/del/upd_dest hooks); `schedule` must not modify the
    service. Destinations are in kernel order: newest added first.
    """

    name: ClassVar[str] = ""

    def __init__(self, service: VirtualService) -> None:
        self.update(service)

    def update(self, service: VirtualService) -> None:  # noqa: B027 - optional hook
        """Recompute cached state after a destination change."""

    def schedule(self, service: VirtualService, flow: Flow) -> RealServer | None:
        raise NotImplementedError


def usable(dest: RealServer) -> bool:
    """Available for new connections: not overloaded and weight > 0 (weight 0 = quiesced)."""
    return dest.weight > 0 and not dest.overloaded and dest.available
