"""What every checker implementation shares: its state, its target, and one `run` per check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pylvs.health.net import Bind
from pylvs.health.pool import CheckerState, Result
from pylvs.health.scripts import ScriptRunner
from pylvs.keepalived.model import Config, ConnectChecker


@dataclass
class ProbeEnv:
    """What probes need beyond their own configuration."""

    config: Config
    scripts: ScriptRunner
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    file_poll_interval: float = 1.0
    cache: dict[str, Any] = field(default_factory=dict)  # shared objects, e.g. the SSL context


class Probe:
    """One checker's way of checking; `run` performs one check and never raises."""

    def __init__(self, state: CheckerState, env: ProbeEnv) -> None:
        self.state = state
        self.cfg = state.cfg
        self.env = env
        self.target = state.target

    @property
    def timeout(self) -> float:
        cfg = self.cfg
        return cfg.connect_timeout if isinstance(cfg, ConnectChecker) and cfg.connect_timeout else 5.0

    @property
    def bind(self) -> Bind:
        cfg = self.cfg
        if not isinstance(cfg, ConnectChecker):
            return Bind()
        return Bind(cfg.bindto, cfg.bind_port, cfg.bind_if, cfg.fwmark)

    def first_delay(self, bootstrap: float, rand: Callable[[], float]) -> float:
        """keepalived: BOOTSTRAP_DELAY plus a random part of `warmup` (0 disables the random part)."""
        warmup = self.cfg.warmup or 0.0
        return bootstrap + (rand() * warmup if warmup else 0.0)

    def next_delay(self, delay: float) -> float:
        """The wait the state machine asks for, unless this checker polls at its own pace."""
        return delay

    async def run(self, recovering: bool) -> Result:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the probe holds (sockets, child processes)."""
