"""Kernel scheduling over IPv6 end to end: an mh NAT66 service (mh-port) through `lvsd --datapath bpf`.

curl connects from chosen source ports; the tc program schedules each SYN itself (none reaches Python),
on the real server Python's mh picks for that client and port, and the engine adopts every connection
from the event ring: `lvsadm --datapath` counts them as scheduled in the kernel, `lvsadm -L -n --stats`
counts them on their real servers and `lvsadm -L -n -c` lists them, as IPVS would.
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from pylvs.engine.engine import Engine
from pylvs.engine.hops import StaticRoutes
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip
from pylvs.ipvs_uapi import SVC_F_SCHED2
from pylvs.lab import ipv6
from pylvs.lab.netns import wait_for
from pylvs.lab.topology import NatLab
from pylvs.sched.base import Flow
from tests.integration.labs import shared_lab
from tests.integration.test_ksched import rs_conns, status  # (-L -n --stats keys: "[address]")

PORTS = range(41000, 41024)  # the client's source ports: one connection each
URL = ipv6.url6(ipv6.NAT_VIP6)


@pytest.fixture(scope="module")
def lab():
    yield from shared_lab(NatLab(n_rs=2, ipv6=True), "--datapath", "bpf")


def python_mh(lab) -> VirtualService:
    """The same service in an engine of its own: Python's mh table for it."""
    engine = Engine(StaticRoutes({}))
    svc = engine.table.add_service(VirtualService(6, pack_ip(ipv6.NAT_VIP6), 80, "mh", flags=SVC_F_SCHED2))
    for i in range(1, len(lab.rips) + 1):
        engine.table.add_dest(svc, RealServer(pack_ip(ipv6.rip6(i)), lab.rport, method=Method.MASQ))
    return svc


def test_ipv6_syns_are_scheduled_in_the_kernel_as_python_mh_and_adopted(lab):
    lines = [f"-A -t [{ipv6.NAT_VIP6}]:80 -s mh -b mh-port"]
    lines += [f"-a -t [{ipv6.NAT_VIP6}]:80 -r [{ipv6.rip6(i)}]:{lab.rport} -m"
              for i in range(1, len(lab.rips) + 1)]
    lab.lvsadm("-R", stdin="\n".join(lines) + "\n")
    # The first connection goes through the engine (the real servers' next hops are learnt with it);
    # then lvsd publishes the recipes at a tick.
    assert lab.curl(URL, "--local-port", "40999").returncode == 0
    wait_for(lambda: lab.curl(URL).returncode == 0 and status(lab)["kernel_sched"]["created"] > 0,
             timeout=5, what="kernel scheduling of the IPv6 service on")
    before, conns0 = status(lab), rs_conns(lab)
    svc = python_mh(lab)
    names = {ipv6.rip6(i): name for i, name in enumerate(lab.rs_names, start=1)}
    want: dict[str, int] = {}
    for port in PORTS:
        r = lab.curl(URL, "--local-port", str(port))
        assert r.returncode == 0, (r.stderr, lab.lvsd_log()[-1000:])
        dest = svc.sched.schedule(svc, Flow(6, pack_ip(ipv6.CLIENT6), port, svc.addr, 80))
        rip = str(ipaddress.IPv6Address(dest.addr))
        assert r.stdout.strip() == names[rip], port  # each real server answers its name
        want[rip] = want.get(rip, 0) + 1
    assert len(want) == 2  # the ports spread over both real servers

    def grown(now: dict) -> dict[str, int]:
        return {k: now["kernel_sched"][k] - before["kernel_sched"][k] for k in now["kernel_sched"]}

    n = len(PORTS)
    wait_for(lambda: grown(status(lab))["adopted"] >= grown(status(lab))["created"] >= n - 1,
             timeout=5, what="every connection adopted")
    after = status(lab)
    ks = grown(after)
    # A SYN arriving while lvsd republishes at a tick (generation 0) is the engine's, by design.
    assert ks["created"] + ks["punt_off"] == n and ks["punt_off"] <= 1, ks
    assert ks["adopted"] == ks["created"] and ks["refused"] == 0 and ks["rerouted"] == 0, ks
    fp = {k: after["counters"][k] - before["counters"][k] for k in after["counters"]}
    assert fp["punt_tcp_flags"] == ks["punt_off"], json.dumps([fp, ks])  # no other SYN, nor SYN+ACK
    assert "kernel scheduling of new connections (mh, sh, dh, rr, wrr): on" in lab.lvsadm("--datapath").stdout
    # -L -n --stats: each connection counted on the real server mh picked.
    conns = rs_conns(lab)
    assert {rip: conns[f"[{rip}]"] - conns0.get(f"[{rip}]", 0) for rip in want} == want, (conns, conns0)
    # -L -n -c: the engine's connection table holds them, IPv6 tuples and all.
    listed = lab.lvsadm("-L", "-n", "-c").stdout
    for port in PORTS:
        assert re.search(rf"\[{ipv6.CLIENT6}\]:{port} +\[{ipv6.NAT_VIP6}\]:80 +\[2001:db8:2::1[12]\]:{lab.rport}",
                         listed), (port, listed)
