"""All the VRRP instances of one director, their tracked objects and sync groups, sans I/O.

* A tracked interface that is down puts the instance in FAULT, or with a weight adds it (a
  negative weight lowers the priority) while it is down. The instance's own interface is always
  tracked, without a weight.
* A tracked script (vrrp_script) is good after `rise` successes in a row and bad after `fall`
  failures; the first result decides from its initial state. Weight 0: bad means FAULT; weight > 0
  is added while good; weight < 0 while bad. An instance's `track_script { NAME weight N }`
  overrides the script's weight.
* A sync group moves together (keepalived's vrrp_sync_group): when one member becomes master,
  backup or faulty, the others follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylvs.vrrp.packet import Advert
from pylvs.vrrp.state import BACKUP, FAULT, MASTER, Action, Instance, Transition

INIT_RESULT = None


@dataclass(frozen=True)
class Tracked:
    """One tracked object of an instance: `kind` "interface" or "script", None weight: FAULT when bad."""

    kind: str
    name: str
    weight: int | None = None


@dataclass
class ScriptState:
    rise: int = 1
    fall: int = 1
    good: bool | None = INIT_RESULT
    run: int = 0  # consecutive results that disagree with `good`

    def result(self, ok: bool) -> bool:
        """Count one result; True when the script's state changed."""
        if self.good is INIT_RESULT:
            self.good = ok
            return True
        if ok == self.good:
            self.run = 0
            return False
        self.run += 1
        if self.run >= (self.rise if ok else self.fall):
            self.good, self.run = ok, 0
            return True
        return False


@dataclass
class Router:
    instances: dict[str, Instance]
    tracking: dict[str, list[Tracked]] = field(default_factory=dict)  # instance -> its tracked objects
    groups: dict[str, list[str]] = field(default_factory=dict)        # sync group -> its instances
    scripts: dict[str, ScriptState] = field(default_factory=dict)
    links: dict[str, bool] = field(default_factory=dict)              # interface -> up

    def group_of(self, name: str) -> list[str]:
        return next((members for members in self.groups.values() if name in members), [name])

    # -- events ---------------------------------------------------------------------------------

    def start(self, now: float) -> list[tuple[str, Action]]:
        out: list[tuple[str, Action]] = []
        for name, inst in self.instances.items():
            delta, faulted = self._tracking(name)
            inst.track_delta, inst.faulted = delta, faulted
            out += self._follow(name, inst.start(now), now)
        return out

    def receive(self, name: str, advert: Advert, src: str, now: float) -> list[tuple[str, Action]]:
        return self._follow(name, self.instances[name].receive(advert, src, now), now)

    def expire(self, now: float) -> list[tuple[str, Action]]:
        out: list[tuple[str, Action]] = []
        for name, inst in self.instances.items():
            deadline = inst.deadline()
            if deadline is not None and now >= deadline:
                out += self._follow(name, inst.expire(now), now)
        return out

    def deadline(self) -> float | None:
        times = [d for d in (inst.deadline() for inst in self.instances.values()) if d is not None]
        return min(times) if times else None

    def script_result(self, script: str, ok: bool, now: float) -> list[tuple[str, Action]]:
        state = self.scripts.setdefault(script, ScriptState())
        return self._retrack(now) if state.result(ok) else []

    def link(self, ifname: str, up: bool, now: float) -> list[tuple[str, Action]]:
        if self.links.get(ifname) == up:
            return []
        self.links[ifname] = up
        return self._retrack(now)

    def shutdown(self, now: float) -> list[tuple[str, Action]]:
        return [(name, action) for name, inst in self.instances.items() for action in inst.shutdown(now)]

    # -- tracking -------------------------------------------------------------------------------

    def _tracking(self, name: str) -> tuple[int, set[str]]:
        delta, faulted = 0, set()
        for obj in self.tracking.get(name, []):
            if obj.kind == "interface":
                good: bool | None = self.links.get(obj.name, True)
            else:
                good = self.scripts.get(obj.name, ScriptState()).good
            if good is INIT_RESULT:
                continue  # not known yet: neither bonus, penalty nor fault
            if obj.weight is None or obj.weight == 0:
                if not good:
                    faulted.add(obj.name)
            elif obj.weight > 0 and good or obj.weight < 0 and not good:
                delta += obj.weight
        return delta, faulted

    def _retrack(self, now: float) -> list[tuple[str, Action]]:
        out: list[tuple[str, Action]] = []
        for name, inst in self.instances.items():
            delta, faulted = self._tracking(name)
            if (delta, faulted) != (inst.track_delta, inst.faulted):
                out += self._follow(name, inst.track(delta, faulted, now), now)
        for name, inst in self.instances.items():  # members held in FAULT by their group only
            group = [self.instances[m] for m in self.group_of(name) if m in self.instances]
            if inst.state == FAULT and not any(m.faulted for m in group):
                out += self._follow(name, inst.start(now), now)
        return out

    # -- sync groups ----------------------------------------------------------------------------

    def _follow(self, name: str, actions: list[Action], now: float) -> list[tuple[str, Action]]:
        """The actions of `name`, and those of the sync group members that follow its transitions."""
        out = [(name, a) for a in actions]
        for action in actions:
            if not isinstance(action, Transition) or action.new not in (MASTER, BACKUP, FAULT):
                continue
            for other in self.group_of(name):
                inst = self.instances.get(other)
                if other == name or inst is None or inst.state == action.new:
                    continue
                if action.new == MASTER and inst.state == BACKUP:
                    forced = inst.become_master(now, f"sync group with {name}")
                elif action.new == BACKUP and inst.state == MASTER:
                    forced = inst.become_backup(now, f"sync group with {name}")
                elif action.new == FAULT:
                    forced = inst.fault(now, f"sync group with {name}")
                else:
                    continue
                out += [(other, a) for a in forced]
        return out
