"""Per service / per real server counters and the kernel's 2-second rate estimator (ipvs.md §6)."""

from __future__ import annotations

ESTIMATOR_PERIOD = 2.0


class Stats:
    """Counters as `ipvsadm --stats`, plus the smoothed rates `--rate` prints."""

    __slots__ = (
        "conns", "inpkts", "outpkts", "inbytes", "outbytes",
        "_last", "_avg", "_zero",
    )

    def __init__(self) -> None:
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0
        self._last = (0, 0, 0, 0, 0)
        self._avg = [0, 0, 0, 0, 0]  # cps, inpps, outpps (<<10 scaled), inbps, outbps (<<5 scaled)
        self._zero = (0, 0, 0, 0, 0)

    def _raw(self) -> tuple[int, int, int, int, int]:
        return (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes)

    def counters(self) -> tuple[int, int, int, int, int]:
        """What `--stats` shows: counts since the last zeroing."""
        return tuple(now - zero for now, zero in zip(self._raw(), self._zero, strict=True))  # type: ignore[return-value]

    def estimate(self) -> None:
        """One estimator tick, called every ESTIMATOR_PERIOD seconds (kernel ip_vs_est.c)."""
        raw = self._raw()
        for i, (now, last) in enumerate(zip(raw, self._last, strict=True)):
            rate = (now - last) << (9 if i < 3 else 4)
            self._avg[i] += (rate - self._avg[i]) >> 2
        self._last = raw

    def rates(self) -> tuple[int, int, int, int, int]:
        """What `--rate` shows: CPS, InPPS, OutPPS, InBPS, OutBPS (bytes per second)."""
        a = self._avg
        return (
            (a[0] + 0x1FF) >> 10, (a[1] + 0x1FF) >> 10, (a[2] + 0x1FF) >> 10,
            (a[3] + 0xF) >> 5, (a[4] + 0xF) >> 5,
        )

    def zero(self) -> None:
        """`ipvsadm -Z`: remember the current counters as the zero point and clear the rates."""
        self._zero = self._raw()
        self._last = self._raw()
        self._avg = [0, 0, 0, 0, 0]
