"""NAT end to end: real clients (curl, wrk) and real servers (nginx, UDP) through lvsd in namespaces."""

from __future__ import annotations

import os
import re
import sys

from scapy.layers.inet import ICMP, IP, TCP

from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP
from tests.integration import labs


def http_get_all(lab, n, url=f"http://{VIP}/"):
    return labs.http_get_all(lab, n, url)


def test_curl_reaches_all_real_servers_in_round_robin_order(lab):
    lab.nat_service()
    # rr starts at the newest real server, as the kernel does (ipvs.md §2)
    assert http_get_all(lab, 6) == ["rs3", "rs2", "rs1"] * 2


def test_listing_shows_the_service_and_connections(lab):
    lab.nat_service()
    pattern = rf"TCP .* {CLIENT}:(\d+) +{VIP}:80 +192\.0\.2\.1[123]:8080"
    before = set(re.findall(pattern, lab.lvsadm("-L", "-n", "-c").stdout))
    # Earlier tests' connections still in TIME_WAIT count for the same real server added again, as
    # in the kernel (its dest_trash): the listing grows by this test's one connection per server.
    inact = int(lab.lvsadm("-L", "-n").stdout.splitlines()[4].split()[5])
    http_get_all(lab, 3)
    out = lab.lvsadm("-L", "-n").stdout.splitlines()
    assert out[3] == f"TCP  {VIP}:80 rr"
    assert out[4] == f"  -> 192.0.2.11:8080              Masq    1      0          {inact + 1:<10}"
    after = set(re.findall(pattern, lab.lvsadm("-L", "-n", "-c").stdout))
    assert len(after - before) == 3


def test_real_servers_log_the_client_address(lab):
    lab.nat_service()
    before = {n: len(lab.access_log(n)) for n in lab.rs_names}
    http_get_all(lab, 6)
    for name in lab.rs_names:
        new = lab.access_log(name)[before[name]:]
        assert new == [CLIENT, CLIENT], (name, new)


def test_client_only_ever_sees_the_vip(lab):
    lab.nat_service()
    with Capture(lab.net, "client", "eth0", "ip") as cap:
        http_get_all(lab, 6)
    pkts = [p for p in cap.packets() if IP in p]
    assert len(pkts) >= 6 * 6
    for p in pkts:
        assert {p[IP].src, p[IP].dst} == {CLIENT, VIP}, p.summary()
        if TCP in p:
            assert 80 in (p[TCP].sport, p[TCP].dport)


def test_wrk_load_spreads_over_all_real_servers_without_errors(lab):
    lab.nat_service()
    total, counts = labs.wrk_spread(lab, f"http://{VIP}/")
    assert total > 500
    assert total <= sum(counts) <= total + 12  # wrk does not count requests in flight when it stops
    assert min(counts) >= total // 6  # 12 keep-alive connections spread 4/4/4 by rr; rates differ under load


def test_new_connections_with_connection_close(lab):
    lab.nat_service()
    r = lab.net.exec("client", "wrk", "-t1", "-c8", "-d2s", "-H", "Connection: close", f"http://{VIP}/", timeout=30)
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    assert int(re.search(r"(\d+) requests in", r.stdout).group(1)) > 100


def udp_exchange(lab, port, payloads, timeout=2.0):
    """Send each payload from a new socket (a new source port, so a new IPVS connection)."""
    script = (
        "import socket,sys\n"
        "for p in sys.argv[1:]:\n"
        f"    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout({timeout!r})\n"
        f"    s.bind(('{CLIENT}', 0))\n"
        f"    s.connect(('{VIP}', {port})); s.send(p.encode())\n"  # connected: ICMP errors are reported
        "    try:\n"
        "        data, peer = s.recvfrom(2048); print(peer[0], peer[1], data.decode())\n"
        "    except (TimeoutError, ConnectionRefusedError) as e: print('ERR', type(e).__name__)\n"
    )
    r = lab.net.exec("client", sys.executable, "-c", script, *payloads, timeout=30)
    return r.stdout.splitlines()


def test_udp_service_with_port_mapping(lab):
    lab.nat_service(vport=53, udp=True)
    lines = udp_exchange(lab, 53, ["a", "b", "c"])
    assert len(lines) == 3
    names = []
    for line in lines:
        peer_ip, peer_port, name, client, payload = line.split()
        assert (peer_ip, peer_port) == (VIP, "53")  # the reply comes from the VIP, port-mapped back
        assert client.startswith(CLIENT + ":")
        names.append(name)
    assert sorted(names) == ["rs1", "rs2", "rs3"]


def test_udp_port_unreachable_from_real_server_reaches_client_as_vip(lab):
    lab.lvsadm("-A", "-u", f"{VIP}:54", "-s", "rr")
    lab.lvsadm("-a", "-u", f"{VIP}:54", "-r", "192.0.2.11:9999", "-m")  # nothing listens there
    with Capture(lab.net, "client", "eth0", "icmp") as cap:
        assert udp_exchange(lab, 54, ["x"]) == ["ERR ConnectionRefusedError"]
    icmps = [p for p in cap.packets() if ICMP in p]
    assert icmps and all(p[IP].src == VIP for p in icmps)


def test_tcp_port_mapping_to_another_vport(lab):
    lab.lvsadm("-A", "-t", f"{VIP}:8081", "-s", "rr")
    lab.lvsadm("-a", "-t", f"{VIP}:8081", "-r", "192.0.2.12:8080", "-m")
    assert http_get_all(lab, 2, f"http://{VIP}:8081/") == ["rs2", "rs2"]


def test_no_destination_refuses_the_connection(lab):
    lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
    with Capture(lab.net, "client", "eth0", "icmp", name="nodest") as cap:
        r = lab.curl(f"http://{VIP}/", timeout=5)
    assert r.returncode == 7, r.stderr  # refused at once, no timeout
    unreach = [p for p in cap.packets() if ICMP in p and p[ICMP].type == 3 and p[ICMP].code == 3]
    assert unreach and unreach[0][IP].src == VIP


def test_ping_vip(lab):
    lab.nat_service()
    r = lab.net.exec("client", sys.executable, "-c", (
        "from scapy.all import IP, ICMP, sr1, conf\nconf.verb=0\n"
        f"r = sr1(IP(dst='{VIP}')/ICMP(id=9, seq=1)/b'hello', timeout=2)\n"
        "print(r[IP].src if r else 'none', r[ICMP].type if r else '', bytes(r[ICMP].payload) if r else '')"),
        timeout=30)
    assert r.stdout.split()[:2] == [VIP, "0"]


def test_big_download_is_intact(lab):
    lab.nat_service()
    r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 30 http://{VIP}/big | sha256sum", timeout=40)
    with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
        import hashlib
        expected = hashlib.sha256(f.read()).hexdigest()
    assert r.stdout.split()[0] == expected


def test_persistence_keeps_a_client_on_one_real_server(lab):
    lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr", "-p", "30")
    for addr in lab.rips:
        lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{addr}:8080", "-m")
    answers = http_get_all(lab, 5)
    assert len(set(answers)) == 1
    assert "persistent 30" in lab.lvsadm("-L", "-n").stdout
    conns = lab.lvsadm("-L", "-n", "-c").stdout
    assert re.search(rf"TCP \d\d:\d\d  ASSURED +{CLIENT}:0 +{VIP}:80 +192\.0\.2\.1\d:8080", conns), conns


def test_persistence_ends_with_the_template_timeout(lab):
    lab.lvsadm("--set", "0", "0", "1")  # UDP connections expire after 1 s ...
    try:
        lab.lvsadm("-A", "-u", f"{VIP}:53", "-s", "rr", "-p", "2")  # ... their template 2 s after last use
        for addr in lab.rips:
            lab.lvsadm("-a", "-u", f"{VIP}:53", "-r", f"{addr}:{lab.udp_port}", "-m")
        first = {line.split()[2] for line in udp_exchange(lab, 53, ["a", "b", "c"])}
        assert len(first) == 1
        wait_for(lambda: not re.search(r"UDP .* ASSURED", lab.lvsadm("-L", "-n", "-c").stdout), timeout=10,
                 what="template expiry")
        after = {line.split()[2] for line in udp_exchange(lab, 53, ["d"])}
        assert after != first  # rr moved on once the template was gone
    finally:
        lab.lvsadm("--set", "0", "0", "300")
