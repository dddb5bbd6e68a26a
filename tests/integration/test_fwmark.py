"""fwmark services: nftables marks packets on ingress, lvsd balances what carries the mark."""

from __future__ import annotations

import re
import sys

from pylvs.lab.topology import CLIENT, VIP, NatLab

MARKING = f"""
table netdev marks {{
    chain ingress {{
        type filter hook ingress device "vip0" priority 0;
        ip daddr {VIP} tcp dport 8080 meta mark set 1
        ip daddr {VIP} udp dport 5353 meta mark set 1
    }}
}}
"""


def test_marked_tcp_and_udp_share_one_persistent_fwmark_service():
    lab = NatLab(n_rs=2).up()
    try:
        # As with IPVS, the addresses of a fwmark service belong to the director's kernel (it answers
        # ARP for them); lvsd keeps the kernel off the marked packets.
        lab.net.ip("director", "addr", "add", f"{VIP}/32", "dev", "vip0")
        r = lab.net.exec("director", "sh", "-c", f"nft -f - <<'EOF'\n{MARKING}\nEOF")
        assert r.returncode == 0, r.stderr
        lab.start_lvsd()
        lab.lvsadm("-A", "-f", "1", "-s", "rr", "-p", "60")
        for addr in lab.rips:
            lab.lvsadm("-a", "-f", "1", "-r", f"{addr}:0", "-m")
        assert "FWM  1 rr persistent 60" in lab.lvsadm("-L", "-n").stdout
        names = {lab.curl(f"http://{VIP}:8080/").stdout.strip() for _ in range(3)}
        assert len(names) == 1 and names <= {"rs1", "rs2"}
        script = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
            f"s.connect(('{VIP}', 5353)); s.send(b'hi'); print(s.recv(100).decode().split()[0])\n"
        )
        udp = lab.net.exec("client", sys.executable, "-c", script, timeout=20).stdout.strip()
        assert udp == names.pop()  # one template (protocol IP) for every protocol of the mark
        conns = lab.lvsadm("-L", "-n", "-c").stdout
        assert re.search(rf"IP  +\d\d:\d\d +\w+ +{CLIENT}:0 +0\.0\.0\.1:0 +192\.0\.2\.1\d:0", conns), conns
        # unmarked traffic to the same address is the kernel's (here: nothing listens, RST)
        assert lab.curl(f"http://{VIP}:9999/", timeout=3).returncode == 7
    finally:
        lab.down()
