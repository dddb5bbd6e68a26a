"""FILE_CHECK: follow a track_file holding an integer (keepalived uses inotify; we poll).

weight 0: a non-zero value fails (reverse: zero fails). Otherwise value*weight (negated with
reverse) is added to the real server's weight; a result at or below -2^31 fails.
"""

from __future__ import annotations

import asyncio
import os

from pylvs.health.checks.base import Probe
from pylvs.health.pool import Result
from pylvs.keepalived.model import FileCheck, TrackFile

WEIGHT_FAULT = -(2**31)


def read_value(path: str) -> int:
    """The file's integer; a missing, unreadable or non-numeric file counts as 0."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return int(fh.read(64).split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def init_file(tf: TrackFile) -> None:
    """`init_file [VALUE] [overwrite]`: create the file (or overwrite it) at startup."""
    if tf.file is None or tf.init_file is None:
        return
    if os.path.exists(tf.file) and not tf.overwrite:
        return
    try:
        with open(tf.file, "w", encoding="ascii") as fh:
            fh.write(f"{tf.init_file}\n")
    except OSError:
        pass


def judge(value: int, weight: int, reverse: bool) -> tuple[bool, int]:
    """(ok, weight delta)."""
    if weight == 0:
        return (value == 0) != reverse, 0
    delta = value * weight * (-1 if reverse else 1)
    return delta > WEIGHT_FAULT, delta


class FileProbe(Probe):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        assert isinstance(cfg, FileCheck)
        self.track = self.env.config.track_files[cfg.track_file or ""]
        key = f"init_file:{self.track.name}"
        if key not in self.env.cache:
            self.env.cache[key] = True
            init_file(self.track)

    def first_delay(self, bootstrap: float, rand) -> float:
        return 0.0  # keepalived reads track files when it starts

    def next_delay(self, delay: float) -> float:
        return self.env.file_poll_interval

    async def run(self, recovering: bool) -> Result:
        cfg = self.cfg
        assert isinstance(cfg, FileCheck)
        value = await asyncio.to_thread(read_value, self.track.file or "")
        ok, delta = judge(value, cfg.weight or 0, cfg.reverse)
        if ok:
            return Result(True, weight=delta)
        return Result(False, f"track_file {self.track.name} value {value}")
