"""NAT66 end to end: curl, wrk, ping and a bulk transfer through lvsd over IPv6, beside an IPv4 service of
the same table. The client only ever sees the VIP; real servers see the client."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, TCPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPerror6, IPv6

from pylvs.lab import ipv6, servers
from pylvs.lab.inject import inject
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP, NatLab
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
def fullnat_pp2(lab, name: str, port: int, rs_addr: str, lip: str, addr6: str | None = None,
                vip: str = ipv6.NAT_VIP6):
    """rs1 runs a second nginx (`name`, behind the PROXY protocol) on `port`, and vip:port is a FULLNAT
    service with PROXY v2 to it from local address `lip`."""
    listen = "127.0.0.1" if addr6 else rs_addr
    proc = servers.start_nginx(lab.net, "rs1", listen, port, name, proxy_protocol=True, addr6=addr6)
    try:
        wait_for(lambda: f"{port}" in lab.net.exec("rs1", "ss", "-Htln", f"sport = :{port}").stdout,
                 what=f"nginx :{port}")
        target = f"[{rs_addr}]" if ":" in rs_addr else rs_addr
        service = f"[{vip}]:{port}" if ":" in vip else f"{vip}:{port}"
        lab.lvsadm("-R", stdin="\n".join([
            "-C", f"-A -t {service} -s rr --proxy-protocol v2",
            f"-P -t {service} -z {lip}",
            f"-a -t {service} -r {target}:{port} --fullnat"]) + "\n")
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


def test_nat46_ipv4_client_to_ipv6_only_nginx_with_proxy_protocol_v2(nat6):
    """NAT46 through FULLNAT: the client reaches, over IPv4, an nginx listening on IPv6 only (and loopback),
    from an IPv6 local address; nginx logs the client's IPv4 address from PROXY v2 (TCP4); a bulk download
    crosses the translation."""
    with fullnat_pp2(nat6, "rs1v6pp", 8447, ipv6.rip6(1), "2001:db8:2::202", addr6=ipv6.rip6(1), vip=VIP):
        assert http_get_all(nat6, 2, f"http://{VIP}:8447/") == ["rs1v6pp", "rs1v6pp"]
        assert nat6.access_log("rs1v6pp")[-2:] == [CLIENT, CLIENT]
        bulk(nat6, f"http://{VIP}:8447/big")
        listing = nat6.lvsadm("-L", "-n").stdout
        assert re.search(rf"TCP  {re.escape(VIP)}:8447 rr\n +-> \[{ipv6.rip6(1)}\]:8447 +FullNat +1 ", listing), listing


# The client holds a keep-alive connection idle and reports the path MTU its kernel learns for it.
PMTU_CLIENT = """
import socket, time
s = socket.create_connection(("{vip}", {port}), timeout=5)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: pylvs\\r\\n\\r\\n")
data = b""
while b"\\r\\n\\r\\n" not in data:
    data += s.recv(4096)
print("ready", s.getsockname()[1], flush=True)
deadline = time.time() + 15
while time.time() < deadline:
    mtu = s.getsockopt(socket.IPPROTO_IPV6, 24)  # IPV6_MTU: the path MTU of the connected socket
    if mtu < 1500:
        print("mtu", mtu, flush=True)
        break
    time.sleep(0.05)
"""


def test_nat64_path_mtu_error_from_the_real_server_side_reaches_the_client_translated(nat6):
    """A router beside the IPv4 real server says Fragmentation Needed (MTU 1400) about a packet of a NAT64
    connection; the IPv6 client gets Packet Too Big (1420) quoting its own packet, and its kernel accepts it:
    the connection's path MTU drops to 1420 (the quote's addresses, ports and sequence number match the
    client's socket, and the checksum is right)."""
    lip, port, rs = "192.0.2.203", 8446, nat6.rips[0]
    with fullnat_pp2(nat6, "rs1pmtu", port, rs, lip):
        rs_filter = f"tcp and src host {lip} and dst port {port}"
        with Capture(nat6.net, "rs1", "eth0", rs_filter, name="pmtu-rs") as rs_cap, \
                Capture(nat6.net, "client", "eth0", "icmp6", name="pmtu-client") as client_cap:
            proc = nat6.net.popen("client", sys.executable, "-c", PMTU_CLIENT.format(vip=ipv6.NAT_VIP6, port=port),
                                  log="pmtu-client.log")
            log = Path(nat6.net.tmp) / "pmtu-client.log"
            wait_for(lambda: "ready" in log.read_text(), what="the client's request answered")
            cport = int(log.read_text().split()[1])
            time.sleep(0.3)  # the client's last ACK reaches the real server
            segs = [p[TCP] for p in rs_cap.packets() if TCP in p]
            lport = segs[0].sport
            # The next byte the real server expects, as a router would quote the client's next segment.
            nxt = max(s.seq + len(s.payload) + (1 if s.flags & 0x03 else 0) for s in segs)
            quoted = IP(src=lip, dst=rs, ttl=63, flags="DF") / TCP(sport=lport, dport=port, seq=nxt,
                                                                   ack=segs[-1].ack, flags="PA") / b"x"
            error = IP(src=rs, dst=lip) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quoted)
            inject(nat6.net, "rs1", [bytes(error)], wait=0.1)
            wait_for(lambda: "mtu" in log.read_text(), timeout=10, what="the client's path MTU lowered")
            assert log.read_text().split()[-1] == "1420"
            nat6.net.kill(proc)
        pkts = [p for p in client_cap.packets() if ICMPv6PacketTooBig in p]
        assert pkts, [p.summary() for p in client_cap.packets()]
        ptb = pkts[0]
        assert (ptb[IPv6].src, ptb[IPv6].dst, ptb[ICMPv6PacketTooBig].mtu) == (ipv6.NAT_VIP6, ipv6.CLIENT6, 1420)
        q = ptb[IPerror6]
        assert (q.src, q.dst, q[TCPerror].sport, q[TCPerror].dport) == (ipv6.CLIENT6, ipv6.NAT_VIP6, cport, port)


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
