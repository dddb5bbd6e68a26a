"""lvsd's cyclic garbage collection: the young generations at each tick, a full pass every ten minutes.

Python's automatic collector makes a full pass whenever the objects that survived into the oldest
generation grow by a quarter, and a full pass walks every tracked object: with a connection table
that holds tens of thousands of connections (two minutes of TIME_WAIT at thousands of connections a
second) that was 0.23 s per pass, ten passes in 15 s, 16 % of lvsd's CPU under a sustained
Connection: close load. Reference counting frees what the engine drops: it makes no reference cycles
per connection (tests/unit/test_collector.py), so the cyclic collector only has to catch the few that
other work makes (exceptions kept with their frames, asyncio), which a young pass per tick does while
they are young and a rare full pass does for the rest.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

FULL_INTERVAL = 600.0  # seconds between full passes
FULL_SHARE = 0.01      # ... and at least 100 times the last one's duration: at most 1 % of the time


class Collector:
    def __init__(self, now: float) -> None:
        gc.collect()
        gc.freeze()  # what start-up made (modules, classes, the loaded table) is out of every pass
        gc.disable()
        self.next_full = now + FULL_INTERVAL

    def tick(self, now: float) -> None:
        gc.collect(1)  # generations 0 and 1: what was made since the last tick and still lives
        if now >= self.next_full:
            started = time.monotonic()
            found = gc.collect()
            took = time.monotonic() - started
            self.next_full = now + max(FULL_INTERVAL, took / FULL_SHARE)
            log.debug("full garbage collection: %d unreachable objects in %.3f s", found, took)

    def close(self) -> None:
        gc.enable()
