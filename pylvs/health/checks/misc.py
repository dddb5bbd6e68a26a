"""MISC_CHECK: run a script; exit 0 is success. With misc_dynamic, exit 1 is failure and exit
2..255 is success with the real server's weight set to status-2 (keepalived's rule: the checker
adds status - 2 - configured weight)."""

from __future__ import annotations

from pylvs.health.checks.base import Probe
from pylvs.health.pool import Result
from pylvs.keepalived.model import MiscCheck


class MiscProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        cfg = self.cfg
        assert isinstance(cfg, MiscCheck) and cfg.script is not None
        result = await self.env.scripts.run(cfg.script, cfg.misc_timeout)
        status = result.status
        if status == 0:
            return Result(True, weight=0 if cfg.misc_dynamic else None)
        if cfg.misc_dynamic and status is not None and 2 <= status <= 255:
            return Result(True, weight=status - 2 - (self.state.rs.cfg.weight or 0))
        return Result(False, result.describe())
