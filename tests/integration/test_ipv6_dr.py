"""DR and TUN over IPv6 end to end: curl and a bulk transfer through a one-armed lvsd to real servers
holding the IPv6 VIP on lo (the director answers the router's neighbour solicitations for the VIP), and
IPv6-in-IPv6 to the same servers, decapsulated by lvs-rs."""

from __future__ import annotations

import os
import sys

import pytest
from scapy.layers.inet6 import IPv6

from pylvs.lab import ipv6, servers
from pylvs.lab.netns import Capture
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


@pytest.mark.parametrize("tun_type", ["ipip", "gre", "gue"])
def test_tun_over_ipv6_decapsulated_by_lvs_rs(dr6, tun_type):
    """IPv6-in-IPv6 (and IPv6 in GRE or GUE over IPv6) to the same real servers, each decapsulating with
    lvs-rs in userspace (this kernel has no ip6_tunnel, ip6_gre or fou6); they answer the client from the
    VIP, through the router."""
    states = {name: os.path.join(dr6.net.tmp, f"{name}-lvs-rs6") for name in dr6.rs_names}
    port = ["--tun-port", "6080"] if tun_type == "gue" else []

    def lvs_rs(name: str, *args: str):
        return dr6.net.exec(name, sys.executable, "-m", "pylvs.cli.lvs_rs", *args, "--state-dir", states[name],
                            check=False, timeout=30)

    try:
        for name in dr6.rs_names:
            r = lvs_rs(name, "up", "--vip", ipv6.DR_VIP6, "--method", "tun", "--tun-type", tun_type, *port,
                       "--dev", "lvsrs6")
            assert r.returncode == 0, r.stdout + r.stderr
            assert "userspace" in r.stdout, r.stdout
        lines = ["-C", f"-A -t [{ipv6.DR_VIP6}]:80 -s rr"]
        lines += [f"-a -t [{ipv6.DR_VIP6}]:80 -r [{ipv6.rip6(i)}]:80 -i --tun-type {tun_type} {' '.join(port)}"
                  for i in range(1, len(dr6.rs_names) + 1)]
        dr6.lvsadm("-R", stdin="\n".join(lines) + "\n")
        before = {n: len(dr6.access_log(n)) for n in dr6.rs_names}
        nh, skip = {"ipip": (41, 0), "gre": (47, 4), "gue": (17, 12)}[tun_type]
        with Capture(dr6.net, "rs1", "eth0", f"ip6 proto {nh}", name=f"tun6-{tun_type}-rs1") as at_rs1:
            assert http_get_all(dr6, 6, ipv6.url6(ipv6.DR_VIP6)) == ["rs3", "rs2", "rs1"] * 2
        for name in dr6.rs_names:
            assert dr6.access_log(name)[before[name]:] == [ipv6.CLIENT6] * 2
        tunnelled = [p for p in at_rs1.packets() if IPv6 in p and p[IPv6].nh == nh]
        assert tunnelled and all((p[IPv6].src, p[IPv6].dst) == (ipv6.DIP6, ipv6.rip6(1)) for p in tunnelled)
        inner = [IPv6(bytes(p[IPv6].payload)[skip:]) for p in tunnelled]
        assert all(q.dst == ipv6.DR_VIP6 and q.src == ipv6.CLIENT6 for q in inner)
        assert "Tunnel" in dr6.lvsadm("-L", "-n").stdout
        # an upload: the client's data crosses the tunnel (super-frames are cut to their MSS first)
        body = os.path.join(dr6.net.tmp, "upload.bin")
        with open(body, "wb") as f:
            f.write(os.urandom(900 << 10))  # under nginx's client_max_body_size (1 MB)
        r = dr6.net.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                         "--max-time", "30", "--data-binary", f"@{body}", ipv6.url6(ipv6.DR_VIP6), timeout=40)
        assert r.stdout.split() == ["200", str(900 << 10)], r.stdout + r.stderr
    finally:
        for name in dr6.rs_names:
            lvs_rs(name, "down")
