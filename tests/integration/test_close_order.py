"""Who closes first (issue 19): through lvsd a real server's FIN follows its response as closely as through
the kernel, so the real server, which closed first, keeps the TIME_WAIT; a client that read the response
before the FIN came would close first and keep it, and a client making many short connections would run
out of ports. Checked where the Python data path sends each family's frames (a round's frames leave
together, IPv6 as IPv4), with wrk Connection: close and the TIME_WAIT sockets counted on both sides."""

from __future__ import annotations

import re

import pytest

from pylvs.lab import ipv6
from pylvs.lab.topology import VIP, NatLab
from tests.integration.labs import shared_lab


@pytest.fixture(scope="module")
def lab():
    yield from shared_lab(NatLab(ipv6=True), "--datapath", "python")


def time_wait(lab, role: str, family: str) -> int:
    return len(lab.net.exec(role, "ss", "-Htan", f"-{family}", "state", "time-wait").stdout.splitlines())


@pytest.mark.parametrize("family", ["4", "6"])
def test_the_real_servers_keep_the_time_wait_of_short_connections(lab, family):
    vip = f"[{ipv6.NAT_VIP6}]" if family == "6" else VIP
    lab.lvsadm("-C")
    lab.lvsadm("-A", "-t", f"{vip}:80", "-s", "rr")
    for i, addr in enumerate(lab.rips, start=1):
        rip = f"[{ipv6.rip6(i)}]" if family == "6" else addr
        lab.lvsadm("-a", "-t", f"{vip}:80", "-r", f"{rip}:{lab.rport}", "-m")
    before_client = time_wait(lab, "client", family)
    before_servers = sum(time_wait(lab, name, family) for name in lab.rs_names)
    r = lab.net.exec("client", "wrk", "-t1", "-c10", "-d2s", "-H", "Connection: close", f"http://{vip}/",
                     timeout=30)
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    requests = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    client = time_wait(lab, "client", family) - before_client
    servers = sum(time_wait(lab, name, family) for name in lab.rs_names) - before_servers
    # nftables DNAT leaves 1-4 % on the client; frames sent one by one left 30-56 % there
    assert requests > 200 and servers > 0.5 * requests, (requests, client, servers)
    assert client < 0.15 * (client + servers), (requests, client, servers)
