"""Indexes that let a scheduler find the kernel's choice without walking the whole dest list.

A `TrackedScheduler` gives every dest of its service a rank that grows along the list (kernel order,
newest first), so "the earliest dest in the list" becomes "the smallest rank". RealServer reports
assignments to the fields schedulers read (weight, connection counts, overload, availability) into
the scheduler's `changed` set; the scheduler re-files those dests in its indexes before its next
choice. An index is keyed by the kernel's own comparison (e.g. overhead / weight) with the rank as
the tie-break, so its first entry is the dest the kernel's loop would have returned.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, ClassVar

from pylvs.engine.services import SCHED_FIELDS, RealServer, VirtualService
from pylvs.sched.base import Scheduler


class Tracker:
    """One scheduler's view of a dest list: a rank per dest, and the dests changed since last looked at
    (assignments to `fields`, some of RealServer's SCHED_FIELDS)."""

    def __init__(self, fields: frozenset[str]) -> None:
        self.fields = fields
        self.changed: set[RealServer] = set()
        self.rank: dict[RealServer, int] = {}
        self.at: dict[int, RealServer] = {}  # rank -> dest
        self.dests: list[RealServer] = []  # the list as last synced

    def sync(self, dests: list[RealServer]) -> bool:
        """Follow a change of the list. Added and removed dests go into `changed` (a removed one has no
        rank any more). Returns True when every rank was reassigned: the indexes must start over.

        The kernel only adds at the head, so ranks normally survive: new dests rank below the rest.
        """
        if dests == self.dests:  # list equality is identity here (RealServer has eq=False)
            return False
        rank, at, changed = self.rank, self.at, self.changed
        present = set(dests)
        for dest in self.dests:
            if dest not in present:
                del at[rank.pop(dest)]
                self._detach(dest)
                changed.add(dest)
        heads = 0
        prev: int | None = None
        in_order = True
        for dest in dests:
            r = rank.get(dest)
            if r is None:
                if prev is not None:
                    in_order = False
                    break
                heads += 1
            elif prev is not None and r <= prev:
                in_order = False
                break
            else:
                prev = r
        self.dests = list(dests)
        if in_order:
            first = rank[dests[heads]] if heads < len(dests) else 0
            for i, dest in enumerate(dests[:heads]):
                self._attach(dest, first - heads + i)
            return False
        for dest in dests:
            if dest in rank:
                del at[rank.pop(dest)]
        for i, dest in enumerate(dests):
            self._attach(dest, i)
        return True

    def _attach(self, dest: RealServer, r: int) -> None:
        self.rank[dest] = r
        self.at[r] = dest
        dest.watch(self.changed, self.fields)
        self.changed.add(dest)

    def _detach(self, dest: RealServer) -> None:
        dest.unwatch(self.changed)

    def detach_all(self) -> None:
        """Stop hearing about every dest (the scheduler is gone)."""
        for dest in self.rank:
            self._detach(dest)


class TrackedScheduler(Scheduler):
    """A scheduler whose index follows its dests; subclasses set `index` before calling __init__."""

    index: LeastIndex | SortedIndex
    watched: ClassVar[frozenset[str]] = SCHED_FIELDS  # the RealServer fields its choice depends on

    def __init__(self, service: VirtualService) -> None:
        self.tracker = Tracker(self.watched)
        self.changed = self.tracker.changed
        weakref.finalize(self, self.tracker.detach_all)  # a replaced scheduler stops listening
        super().__init__(service)

    def update(self, service: VirtualService) -> None:
        if self.tracker.sync(service.dests):
            self.reset()
        self.refresh()

    def refresh(self) -> None:
        """Re-file every dest that changed since the last call."""
        self.index.refile(self.changed, self.tracker.rank)
        self.changed.clear()

    def reset(self) -> None:
        """Forget every dest: ranks were reassigned (all dests are in `changed` again)."""
        self.index.reset()


USABILITY = frozenset({"weight", "overloaded", "available"})  # for schedulers that ignore the counts

INEXACT = object()  # a key that would not order exactly as the kernel compares (see LeastIndex)


class LeastIndex:
    """The dest with the smallest (key, rank): `key(dest)` is None when the dest may not be chosen.

    A heap with lazy deletion: re-filing a dest pushes a new entry and the old one is dropped when it
    surfaces. A key function may return INEXACT (numbers too large for its exact comparison); the
    scheduler then falls back to the kernel's loop while such a dest is present.
    """

    def __init__(self, key: Callable[[RealServer], Any]) -> None:
        self.key = key
        self.heap: list[tuple[Any, int, int, RealServer]] = []
        self.entry: dict[RealServer, tuple[Any, int, int, RealServer]] = {}
        self.inexact: set[RealServer] = set()
        self.seq = count()  # unique per entry: equal (key, rank) entries never compare their dests

    def reset(self) -> None:
        self.heap.clear()
        self.entry.clear()
        self.inexact.clear()

    def refile(self, dests: Iterable[RealServer], ranks: dict[RealServer, int]) -> None:
        """File each of `dests` under its current key (those without a rank are dropped)."""
        key_of, entry, inexact, heap, seq = self.key, self.entry, self.inexact, self.heap, self.seq
        for dest in dests:
            rank = ranks.get(dest)
            key = None if rank is None else key_of(dest)
            if key is None or key is INEXACT:
                entry.pop(dest, None)
                if key is INEXACT:
                    inexact.add(dest)
                elif inexact:
                    inexact.discard(dest)
                continue
            if inexact:
                inexact.discard(dest)
            old = entry.get(dest)
            if old is not None and old[0] == key and old[1] == rank:
                continue
            new = (key, rank, next(seq), dest)
            entry[dest] = new
            heappush(heap, new)
        if len(heap) > 2 * len(entry) + 64:  # too many stale entries: keep memory O(n)
            heap[:] = entry.values()
            heapify(heap)

    def least(self) -> RealServer | None:
        heap, entry = self.heap, self.entry
        while heap:
            top = heap[0]
            dest = top[3]
            if entry.get(dest) is top:
                return dest
            heappop(heap)
        return None


class SortedIndex:
    """The keys of the dests that may be chosen, sorted (for bisect); `entry` maps a dest to its key."""

    def __init__(self, key: Callable[[RealServer, int], Hashable | None]) -> None:
        self.key = key
        self.keys: list[Any] = []
        self.entry: dict[RealServer, Any] = {}
        self.version = 0  # bumped on every change, for caches derived from `keys`

    def reset(self) -> None:
        self.keys.clear()
        self.entry.clear()
        self.version += 1

    def refile(self, dests: Iterable[RealServer], ranks: dict[RealServer, int]) -> None:
        """File each of `dests` under its current key (those without a rank are dropped)."""
        key_of, keys, entry = self.key, self.keys, self.entry
        for dest in dests:
            rank = ranks.get(dest)
            new = None if rank is None else key_of(dest, rank)
            old = entry.get(dest)
            if new == old:
                continue
            if old is not None:
                del keys[bisect_left(keys, old)]
                del entry[dest]
            if new is not None:
                insort(keys, new)
                entry[dest] = new
            self.version += 1
