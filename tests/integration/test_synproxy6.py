"""The SYN proxy over IPv6 on the wire: an IPv6 client curls and downloads through SYN-proxied NAT66 and
FULLNAT-over-IPv6 services. Captures on both sides show the director answered the SYN itself with its
cookie and opened the connection to the real server with the client's own ISN afterwards."""

from __future__ import annotations

import hashlib
import os

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from pylvs.lab import ipv6
from pylvs.lab.netns import Capture
from pylvs.lab.topology import NatLab
from tests.integration.labs import shared_lab

VIP6 = ipv6.NAT_VIP6
LIP6 = "2001:db8:2::200"  # the FULLNAT service's local address, on the real servers' LAN
BIG = 8 << 20


@pytest.fixture(scope="module")
def lab6():
    yield from shared_lab(NatLab(n_rs=2, ipv6=True))


@pytest.fixture(scope="module")
def services(lab6):
    lines = [f"-A -t [{VIP6}]:80 -s rr -j enable", f"-A -t [{VIP6}]:81 -s rr -j enable",
             f"-P -t [{VIP6}]:81 -z {LIP6}", f"-a -t [{VIP6}]:81 -r [{ipv6.rip6(1)}]:{lab6.rport} --fullnat"]
    lines += [f"-a -t [{VIP6}]:80 -r [{ipv6.rip6(i)}]:{lab6.rport} -m" for i in (1, 2)]
    lab6.lvsadm("-R", stdin="\n".join(lines) + "\n")
    assert " -j enable" in lab6.lvsadm("-S", "-n").stdout
    return lab6


def handshakes(packets) -> dict[int, dict[str, TCP]]:
    """Client port -> the SYN, SYN-ACK of each connection seen in a capture."""
    found: dict[int, dict[str, TCP]] = {}
    for p in packets:
        if IPv6 not in p or TCP not in p:
            continue
        tcp = p[TCP]
        if tcp.flags == "S":
            found.setdefault(tcp.sport, {})["S"] = tcp
        elif tcp.flags == "SA":
            found.setdefault(tcp.dport, {})["SA"] = tcp
    return found


def test_curl_through_a_syn_proxied_nat66_service(services):
    lab = services
    url = ipv6.url6(VIP6)
    with Capture(lab.net, "client", "eth0", "tcp port 80", name="c6") as client_side, \
            Capture(lab.net, "rs1", "eth0", "tcp port 8080", name="r6") as rs_side:
        answers = [lab.curl(url) for _ in range(4)]
    assert [r.returncode for r in answers] == [0] * 4, [r.stderr for r in answers]
    assert sorted(r.stdout.strip() for r in answers) == ["rs1", "rs1", "rs2", "rs2"]
    assert set(lab.access_log("rs1")) >= {ipv6.CLIENT6}  # NAT66: the real server sees the client
    seen_by_client, seen_by_rs = handshakes(client_side.packets()), handshakes(rs_side.packets())
    assert len(seen_by_rs) == 2, seen_by_rs  # rs1's two connections
    for cport, rs in seen_by_rs.items():
        client = seen_by_client[cport]
        # The real server got the client's SYN with the client's ISN, but only after the handshake the
        # director completed: the SYN-ACK the client saw is not the real server's (another ISN, our MSS).
        assert rs["S"].seq == client["S"].seq
        assert client["SA"].seq != rs["SA"].seq
        assert dict(client["SA"].options)["MSS"] == 1500 - 60 and dict(client["SA"].options).get("WScale") == 7
    stats = lab.lvsadm("-L", "-n", "--stats", "--exact", "-t", f"[{VIP6}]:80").stdout
    assert int(next(line for line in stats.splitlines() if line.startswith("TCP")).split()[2]) >= 4


def test_a_download_through_the_syn_proxy_over_ipv6_arrives_whole(services):
    lab = services
    for vport in (80, 81):  # NAT66, then FULLNAT over IPv6: SACK, timestamps and windows shifted all along
        r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 20 -r 0-{BIG - 1} "
                         f"{ipv6.url6(VIP6, vport, '/big')} | sha256sum", timeout=30)
        with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
            assert r.stdout.split()[0] == hashlib.sha256(f.read(BIG)).hexdigest(), (vport, r.stderr)


def test_fullnat_over_ipv6_behind_the_syn_proxy(services):
    lab = services
    before = len(lab.access_log("rs1"))
    assert [lab.curl(ipv6.url6(VIP6, 81)).stdout.strip() for _ in range(2)] == ["rs1", "rs1"]
    assert lab.access_log("rs1")[before:] == [LIP6, LIP6]  # FULLNAT: the real server sees the local address
    drops = lab.lvsadm("--drops").stdout
    assert "synproxy_bad_cookie" not in drops and "synproxy_setup" not in drops, drops
    assert "Traceback" not in lab.lvsd_log(), lab.lvsd_log()[-2000:]
