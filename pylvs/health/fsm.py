"""A checker's up/down state machine, exactly as keepalived's checker epilogs (reference §2.1).

* UP and a check fails: retry `retry` times, `delay_before_retry` apart; the `retry+1`-th
  consecutive failure marks it DOWN.
* DOWN: check every `down_interval` (delay_loop; HTTP: max(delay_before_retry, delay_loop));
  one success marks it UP. There is no rise count.
* Start without alpha: UP with the retry counter already spent, so the first failure is DOWN.
  Start with alpha: DOWN until the first success.

Pure and clock-free: `record` says what changed and how long to wait before the next check.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    transition: str | None  # "up", "down" or None
    delay: float  # seconds until the next check
    retrying: bool = False  # a failure that will be retried


class CheckerFSM:
    def __init__(self, retry: int, delay_loop: float, delay_before_retry: float, alpha: bool,
                 down_interval: float | None = None) -> None:
        self.retry = retry
        self.delay_loop = delay_loop
        self.delay_before_retry = delay_before_retry
        self.down_interval = delay_loop if down_interval is None else down_interval
        self.up = not alpha
        self.retry_it = 0 if alpha else retry
        self.has_run = False

    def record(self, ok: bool) -> Outcome:
        self.has_run = True
        if ok:
            self.retry_it = 0
            if not self.up:
                self.up = True
                return Outcome("up", self.delay_loop)
            return Outcome(None, self.delay_loop)
        if not self.up:
            return Outcome(None, self.down_interval)
        if self.retry_it < self.retry:
            self.retry_it += 1
            return Outcome(None, self.delay_before_retry, retrying=True)
        self.up = False
        self.retry_it = 0
        return Outcome("down", self.down_interval)

    def snapshot(self) -> dict:
        return {"up": self.up, "retry_it": self.retry_it, "has_run": self.has_run}
