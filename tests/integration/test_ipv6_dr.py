"""DR over IPv6 end to end: curl and a bulk transfer through a one-armed lvsd to real servers holding the
IPv6 VIP on lo; the director answers the router's neighbour solicitations for the VIP."""

from __future__ import annotations

import pytest

from pylvs.lab import ipv6, servers
from pylvs.lab.topologies_dr_tun import DrLab
from tests.integration.labs import http_get_all, shared_lab

BIG = 16 << 20


@pytest.fixture(scope="module")
def dr6():
    yield from shared_lab(DrLab(ipv6=True))


def test_dr_over_ipv6(dr6):
    lines = [f"-A -t [{ipv6.DR_VIP6}]:80 -s rr"]
    lines += [f"-a -t [{ipv6.DR_VIP6}]:80 -r [{ipv6.rip6(i)}]:80 -g" for i in range(1, len(dr6.rs_names) + 1)]
    dr6.lvsadm("-R", stdin="\n".join(lines) + "\n")
    before = {n: len(dr6.access_log(n)) for n in dr6.rs_names}
    assert http_get_all(dr6, 3, ipv6.url6(ipv6.DR_VIP6)) == ["rs3", "rs2", "rs1"]
    for name in dr6.rs_names:
        assert dr6.access_log(name)[before[name]:] == [ipv6.CLIENT6]
    servers.make_big_file(dr6.net, BIG)
    r = dr6.net.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "40",
                     ipv6.url6(ipv6.DR_VIP6, path="/big"), timeout=50)
    assert int(r.stdout) == BIG, r.stderr
    listing = dr6.lvsadm("-L", "-n", "--stats").stdout
    assert f"TCP  [{ipv6.DR_VIP6}]:80" in listing, listing
