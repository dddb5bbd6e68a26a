"""Which VIPs this director announces: a pure function of the engine's table and ownership.

A VIP (an address, across all the services on it) is announced while at least one of its services
has at least one real server with weight > 0: a real server that health checks took out (removed,
or weight 0 with keepalived's inhibit_on_failure) or an operator quiesced (`-e -w 0`) does not
count, a keepalived sorry server does (it serves). A director that stands by (`--backup-only` with
its backup sync daemon running) owns nothing and announces nothing. fwmark services have no
address of their own and are not announced; IPv4 only.
"""

from __future__ import annotations

import socket

from pylvs.engine.engine import Engine


def healthy_vips(engine: Engine) -> frozenset[str]:
    """The IPv4 VIPs to announce, as dotted quads."""
    owned = engine.owned
    return frozenset(socket.inet_ntoa(svc.addr) for svc in engine.table
                     if not svc.fwmark and len(svc.addr) == 4 and svc.addr in owned
                     and any(dest.weight > 0 for dest in svc.dests))
