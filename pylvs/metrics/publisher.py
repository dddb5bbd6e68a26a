"""Hands snapshots from the packet loop to reader threads (the exporter, the status page).

The loop calls `step` after every round; it copies the state (`snapshot.build`, a piece per step) only
while someone has read in the last IDLE seconds, and at most once per INTERVAL. Readers call `current`:
they get the latest finished snapshot, an immutable object, so no lock is held while it is read. The
health checks' state is asked of their own thread by the reader, never by the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from pylvs.metrics.snapshot import HealthView, Snapshot, health_views

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between copies while someone reads
IDLE = 30.0  # no reader for this long: stop copying
WAIT = 2.5  # a reader waits at most this long for a fresh copy


class Publisher:
    def __init__(self, build: Callable[[], Iterator[None]],
                 health: Callable[[], Mapping[str, Any] | None] | None = None,
                 wake: Callable[[], None] = lambda: None, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`build` starts a copy (a generator returning the Snapshot); `health` gives the health checks'
        status from any thread but theirs (None: none run); `wake` makes the loop run a step soon."""
        self._build = build
        self._health = health
        self._wake = wake
        self.interval = interval
        self._clock = clock
        self._building: Iterator[None] | None = None
        self._next = 0.0
        self._asked = -IDLE  # when a reader last asked (monotonic)
        self._latest: Snapshot | None = None
        self._latest_at = -IDLE
        self._published = threading.Condition()
        self._health_lock = threading.Lock()
        self._health_cache: tuple[float, tuple[HealthView, ...] | None] = (-IDLE, None)
        self._merged: tuple[Snapshot | None, object, Snapshot | None] = (None, None, None)

    # -- the loop's thread ------------------------------------------------------------------------

    @property
    def building(self) -> bool:
        return self._building is not None

    def step(self, now: float) -> None:
        """One piece of work, if any is due: start a copy, or take the current one a piece further."""
        if self._building is None:
            if now - self._asked > IDLE or now < self._next:
                return
            self._building = self._build()
        try:
            next(self._building)
        except StopIteration as done:
            self._building = None
            self._next = now + self.interval
            with self._published:
                self._latest, self._latest_at = done.value, now
                self._published.notify_all()
        except Exception:  # noqa: BLE001 - metrics must never stop forwarding: log, retry in an interval
            self._building = None
            self._next = now + self.interval
            log.exception("metrics snapshot failed")
        else:
            self._wake()  # more pieces to copy: do not wait for traffic or the tick

    # -- any other thread -------------------------------------------------------------------------

    def current(self, max_age: float = INTERVAL, wait: float = WAIT) -> Snapshot | None:
        """The latest snapshot, with the health checks' state; waits (up to `wait`) for one no older than
        `max_age`. None if the loop published nothing in that time."""
        now = self._clock()
        idle = now - self._asked > IDLE
        self._asked = now
        if idle or now - self._latest_at > max_age:
            self._wake()  # the loop may be waiting for traffic or its tick: it copies now
        with self._published:
            self._published.wait_for(lambda: self._clock() - self._latest_at <= max_age, timeout=wait)
            snap = self._latest
        if snap is None or self._health is None:
            return snap
        views = self._health_views(now)
        base, seen, merged = self._merged
        if base is not snap or seen is not views:  # the same pair gives the same object: readers cache by it
            merged = replace(snap, health=views)
            self._merged = (snap, views, merged)
        return merged

    def _health_views(self, now: float) -> tuple[HealthView, ...] | None:
        with self._health_lock:  # one question to the health thread per interval, whoever reads
            asked_at, views = self._health_cache
            if now - asked_at >= self.interval:
                views = self.health_now()
                self._health_cache = (now, views)
            return views

    def health_now(self) -> tuple[HealthView, ...] | None:
        """The health checks' state, asked of their thread now (None when they do not answer)."""
        if self._health is None:
            return None
        try:
            status = self._health()
        except Exception as exc:  # noqa: BLE001 - a stuck or stopped checker thread must not break readers
            log.debug("health status not available: %s", exc)
            return None
        return health_views(status) if status is not None else None
