"""The checker implementations, one module per type, and `make_probe` to pick one."""

from __future__ import annotations

from pylvs.health.checks.base import Probe, ProbeEnv
from pylvs.health.checks.dns import DnsProbe
from pylvs.health.checks.file import FileProbe
from pylvs.health.checks.http import HttpProbe
from pylvs.health.checks.misc import MiscProbe
from pylvs.health.checks.ping import PingProbe
from pylvs.health.checks.smtp import SmtpProbe
from pylvs.health.checks.tcp import TcpProbe
from pylvs.health.checks.udp import UdpProbe
from pylvs.health.pool import CheckerState

PROBES: dict[str, type[Probe]] = {
    "TCP_CHECK": TcpProbe,
    "HTTP_GET": HttpProbe,
    "SSL_GET": HttpProbe,
    "SMTP_CHECK": SmtpProbe,
    "UDP_CHECK": UdpProbe,
    "DNS_CHECK": DnsProbe,
    "PING_CHECK": PingProbe,
    "MISC_CHECK": MiscProbe,
    "FILE_CHECK": FileProbe,
}


def make_probe(state: CheckerState, env: ProbeEnv) -> Probe:
    return PROBES[state.cfg.kind](state, env)


__all__ = ["PROBES", "Probe", "ProbeEnv", "make_probe"]
