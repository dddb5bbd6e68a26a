"""NAT66 end to end: curl, wrk, ping and a bulk transfer through lvsd over IPv6, beside an IPv4 service of
the same table. The client only ever sees the VIP; real servers see the client."""

from __future__ import annotations

import contextlib
import re
import socket
import sys

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6

from pylvs.lab import ipv6, servers
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import VIP, NatLab
from tests.integration.labs import http_get_all, shared_lab, wrk_spread

BIG = 64 << 20
# An echo request over a raw ICMPv6 socket (the kernel fills its checksum); prints the answer's type, id, data.
ECHO6 = """
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(3)
s.sendto(struct.pack("!BBHHH", 128, 0, 0, 4242, 1) + b"pylvs", ("{vip}", 0))
while True:
    data, src = s.recvfrom(2048)
    if data[0] == 129:
        print(data[0], struct.unpack("!H", data[4:6])[0], data[8:].decode())
        break
"""


@pytest.fixture(scope="module")
def nat6():
    yield from shared_lab(NatLab(ipv6=True))


def nat_service(lab) -> None:
    """rr over every real server for the IPv6 VIP, and the same for the IPv4 one (a mixed table)."""
    lines = ["-C", f"-A -t [{ipv6.NAT_VIP6}]:80 -s rr", f"-A -t {VIP}:80 -s rr"]
    for i, addr in enumerate(lab.rips, start=1):
        lines.append(f"-a -t [{ipv6.NAT_VIP6}]:80 -r [{ipv6.rip6(i)}]:{lab.rport} -m")
        lines.append(f"-a -t {VIP}:80 -r {addr}:{lab.rport} -m")
    lab.lvsadm("-R", stdin="\n".join(lines) + "\n")


def test_nat66_curl_reaches_every_real_server_which_sees_the_client(nat6):
    nat_service(nat6)
    before = {n: len(nat6.access_log(n)) for n in nat6.rs_names}
    assert http_get_all(nat6, 3, ipv6.url6(ipv6.NAT_VIP6)) == ["rs3", "rs2", "rs1"]
    for name in nat6.rs_names:
        assert nat6.access_log(name)[before[name]:] == [ipv6.CLIENT6]
    listing = nat6.lvsadm("-L", "-n").stdout
    assert f"TCP  [{ipv6.NAT_VIP6}]:80 rr" in listing
    assert re.search(r"-> \[2001:db8:2::11\]:8080 +Masq +1 ", listing), listing
    conns = nat6.lvsadm("-L", "-n", "-c").stdout
    assert f"[{ipv6.CLIENT6}]:" in conns and f"[{ipv6.NAT_VIP6}]:80" in conns
    # the IPv4 side of the same director still forwards
    assert nat6.curl(f"http://{VIP}/").stdout.strip() in nat6.rs_names
    # the mixed table saved and restored by lvsd comes back the same
    saved = nat6.lvsadm("-S", "-n").stdout
    assert f"-A -t [{ipv6.NAT_VIP6}]:80 -s rr" in saved and f"-A -t {VIP}:80 -s rr" in saved
    nat6.lvsadm("-C")
    nat6.lvsadm("-R", stdin=saved)
    assert nat6.lvsadm("-S", "-n").stdout == saved


def test_nat66_the_client_sees_only_the_vip_with_valid_checksums(nat6):
    nat_service(nat6)
    with Capture(nat6.net, "client", "eth0", "ip6 and tcp port 80", name="nat6-client") as cap:
        http_get_all(nat6, 2, ipv6.url6(ipv6.NAT_VIP6))
    pkts = [p for p in cap.packets() if IPv6 in p and TCP in p]
    replies = [p for p in pkts if p[IPv6].dst == ipv6.CLIENT6]
    assert replies and all(p[IPv6].src == ipv6.NAT_VIP6 and p[TCP].sport == 80 for p in replies)
    for p in replies:
        assert checksum_right(p[IPv6]), p.summary()


def checksum_right(ip: IPv6) -> bool:
    """A complete TCP checksum as scapy computes it, or (a tap on veth sees offloaded segments before the
    checksum is filled in) the sum of the pseudo-header of the rewritten addresses, as CHECKSUM_PARTIAL has it."""
    got = ip[TCP].chksum
    fresh = ip.copy()
    fresh[TCP].chksum = None
    if IPv6(bytes(fresh))[TCP].chksum == got:
        return True
    words = socket.inet_pton(socket.AF_INET6, ip.src) + socket.inet_pton(socket.AF_INET6, ip.dst)
    total = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, 32, 2)) + 6 + len(ip[TCP])
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return got == total


def bulk(lab, url: str) -> None:
    r = lab.net.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "40", url,
                     timeout=50)
    assert int(r.stdout) == BIG, r.stderr


def test_nat66_bulk_transfer_and_wrk(nat6):
    nat_service(nat6)
    bulk(nat6, ipv6.url6(ipv6.NAT_VIP6, path="/big"))
    total, spread = wrk_spread(nat6, ipv6.url6(ipv6.NAT_VIP6), connections=6, seconds=2)
    assert total > 0 and all(spread)


def test_nat66_ping_and_neighbour_discovery_for_the_vip(nat6):
    nat_service(nat6)
    r = nat6.net.exec("client", sys.executable, "-c", ECHO6.format(vip=ipv6.NAT_VIP6), check=False, timeout=10)
    assert r.stdout.strip() == "129 4242 pylvs", r.stdout + r.stderr
    neigh = nat6.net.exec("client", "ip", "-6", "neigh", "show", ipv6.NAT_VIP6).stdout
    assert nat6.net.exec("director", "cat", "/sys/class/net/vip0/address").stdout.strip() in neigh


@contextlib.contextmanager
def fullnat_pp2(lab, name: str, port: int, rs_addr: str, lip: str, addr6: str | None = None):
    """rs1 runs a second nginx (`name`, behind the PROXY protocol) on `port`, and [VIP6]:port is a FULLNAT
    service with PROXY v2 to it from local address `lip`."""
    listen = "127.0.0.1" if addr6 else rs_addr
    proc = servers.start_nginx(lab.net, "rs1", listen, port, name, proxy_protocol=True, addr6=addr6)
    try:
        wait_for(lambda: f"{port}" in lab.net.exec("rs1", "ss", "-Htln", f"sport = :{port}").stdout,
                 what=f"nginx :{port}")
        target = f"[{rs_addr}]" if ":" in rs_addr else rs_addr
        lab.lvsadm("-R", stdin="\n".join([
            "-C", f"-A -t [{ipv6.NAT_VIP6}]:{port} -s rr --proxy-protocol v2",
            f"-P -t [{ipv6.NAT_VIP6}]:{port} -z {lip}",
            f"-a -t [{ipv6.NAT_VIP6}]:{port} -r {target}:{port} --fullnat"]) + "\n")
        yield
    finally:
        lab.net.kill(proc)


def test_fullnat_over_ipv6_with_the_client_address_in_proxy_protocol_v2(nat6):
    """FULLNAT with an IPv6 local address: the real server sees the LIP, and nginx logs the client's IPv6
    address from the PROXY v2 header lvsd puts in front of the first data."""
    with fullnat_pp2(nat6, "rs1pp", 8443, ipv6.rip6(1), "2001:db8:2::200", addr6=ipv6.rip6(1)):
        assert http_get_all(nat6, 2, ipv6.url6(ipv6.NAT_VIP6, 8443)) == ["rs1pp", "rs1pp"]
        assert nat6.access_log("rs1pp")[-2:] == [ipv6.CLIENT6, ipv6.CLIENT6]
        conns = nat6.lvsadm("-L", "-n", "-c").stdout
        assert f"[{ipv6.CLIENT6}]:" in conns and f"[{ipv6.rip6(1)}]:8443" in conns


def test_nat64_ipv6_client_to_ipv4_only_nginx_with_proxy_protocol_v2(nat6):
    """NAT64 through FULLNAT: the IPv6-only client reaches an IPv4-only nginx from an IPv4 local address;
    nginx logs the client's IPv6 address from PROXY v2; a bulk download crosses the translation."""
    with fullnat_pp2(nat6, "rs1v4pp", 8445, nat6.rips[0], "192.0.2.202"):
        assert http_get_all(nat6, 2, ipv6.url6(ipv6.NAT_VIP6, 8445)) == ["rs1v4pp", "rs1v4pp"]
        assert nat6.access_log("rs1v4pp")[-2:] == [ipv6.CLIENT6, ipv6.CLIENT6]
        bulk(nat6, ipv6.url6(ipv6.NAT_VIP6, 8445, "/big"))
        listing = nat6.lvsadm("-L", "-n").stdout
        assert re.search(rf"-> {re.escape(nat6.rips[0])}:8445 +FullNat +1 ", listing), listing


def test_ipv6_fwmark_service(nat6):
    """`-f 7 -6`: nftables marks IPv6 packets on ingress, lvsd's IPv6 ring for the mark takes them. As with
    IPVS, the address of a fwmark service belongs to the director's kernel (it answers neighbour
    discovery); lvsd keeps the kernel off the marked packets."""
    vip = "2001:db8:10::200"
    marking = ('table netdev marks6 {\n chain ingress {\n  type filter hook ingress device "vip0" priority 0;\n'
               f"  ip6 daddr {vip} tcp dport 8090 meta mark set 7\n }}\n}}\n")
    ipv6.addr6(nat6.net, "director", "vip0", vip, 128)
    r = nat6.net.exec("director", "sh", "-c", f"nft -f - <<'EOF'\n{marking}EOF", check=False)
    assert r.returncode == 0, r.stderr
    try:
        lines = ["-C", "-A -f 7 -6 -s rr"] + [f"-a -f 7 -6 -r [{ipv6.rip6(i)}]:{nat6.rport} -m"
                                              for i in range(1, len(nat6.rs_names) + 1)]
        nat6.lvsadm("-R", stdin="\n".join(lines) + "\n")
        assert "FWM  7 IPv6 rr" in nat6.lvsadm("-L", "-n").stdout
        assert http_get_all(nat6, 3, ipv6.url6(vip, 8090)) == ["rs3", "rs2", "rs1"]
        assert "-A -f 7 -6 -s rr" in nat6.lvsadm("-S", "-n").stdout
    finally:
        nat6.net.exec("director", "nft", "delete", "table", "netdev", "marks6", check=False)
        nat6.net.ip("director", "addr", "del", f"{vip}/128", "dev", "vip0")
