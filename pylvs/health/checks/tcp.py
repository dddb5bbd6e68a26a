"""TCP_CHECK: a TCP connect within connect_timeout succeeds; the socket is closed at once."""

from __future__ import annotations

from pylvs.health.checks.base import Probe
from pylvs.health.net import tcp_connect
from pylvs.health.pool import Result


class TcpProbe(Probe):
    async def run(self, recovering: bool) -> Result:
        t = self.target
        try:
            sock = await tcp_connect(t.ip, t.port, self.bind, self.timeout)
        except TimeoutError:
            return Result(False, f"TCP connection to {t.label} timeout.")
        except OSError:
            return Result(False, f"TCP connection to {t.label} failed.")
        sock.close()
        return Result(True)
