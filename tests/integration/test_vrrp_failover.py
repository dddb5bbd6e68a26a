"""Failover between two pylvs directors paired by VRRP (issue 16): three nginx real servers behind
NAT, the connection sync daemon started by `lvs_sync_daemon dip0 VI_1`, the real servers' gateway
a VRRP address in the same sync group as the VIP. With a download and wrk keep-alive connections
running through the VIP, the master lvsd is killed (-9): the backup must become master within
3 × advert_int + skew, the download must finish intact, and wrk must see no errors afterwards.

The failover time is taken from the wire (client-side capture): from the kill to the new master's
first advert, and to its first gratuitous ARP for the VIP."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP
from scapy.layers.vrrp import VRRPv3

from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology_vrrp import ADDRS, CLIENT, GATEWAY, VIP, VrrpLab, keepalived_conf

ADVERT_INT = 0.5  # VRRPv3 takes fractions (keepalived's centiseconds)
D1_PRIO, D2_PRIO = 150, 100
BACKUP_DOWN_INTERVAL = 3 * ADVERT_INT + (256 - D2_PRIO) / 256 * ADVERT_INT  # 1.80 s
SLACK = 0.3  # timer and scheduling latency allowed on a busy 2-core machine


@pytest.fixture(scope="module")
def pair():
    lab = VrrpLab(n_rs=3, big_mb=12).up()
    try:
        for node, prio in ((lab.d1, D1_PRIO), (lab.d2, D2_PRIO)):
            lab.start_lvsd(node, keepalived_conf(prio, version=3, advert_int=ADVERT_INT, rips=lab.rips))
        wait_for(lambda: lab.vrrp_state(lab.d1) == {"VI_1": "MASTER", "VI_2": "MASTER"}, timeout=10,
                 what="d1 master")
        assert lab.vrrp_state(lab.d2) == {"VI_1": "BACKUP", "VI_2": "BACKUP"}
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def conns(lab: VrrpLab, node) -> dict[str, str]:
    """client address:port -> state, from `lvsadm -L -n -c`."""
    out = node.lvsadm("-L", "-n", "-c").stdout.splitlines()[2:]
    return {f[3]: f[2] for f in (line.split() for line in out)}


def wrk_errors(output: str) -> int:
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(n) for n in found.groups()) if found else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return errors + (int(non2xx.group(1)) if non2xx else 0)


def test_the_master_holds_the_vip_the_gateway_and_the_master_sync_daemon(pair):
    lab = pair
    assert lab.has_addr(lab.d1, "dip0", GATEWAY) and not lab.has_addr(lab.d2, "dip0", GATEWAY)
    assert not lab.has_addr(lab.d1, "vip0", VIP)  # the VIP is lvsd's own (ARP from the engine), never the kernel's
    assert "master sync daemon (mcast=dip0, syncid=51" in lab.d1.lvsadm("-L", "--daemon").stdout
    assert "backup sync daemon (mcast=dip0, syncid=51" in lab.d2.lvsadm("-L", "--daemon").stdout
    for _ in range(3):
        r = lab.curl(f"http://{VIP}/")
        assert r.returncode == 0 and r.stdout.strip() in ("rs1", "rs2", "rs3"), r.stderr


def test_kill_9_of_the_master_fails_over_with_established_connections_intact(pair):
    lab = pair
    lab.net.sysctl("client", "net.ipv4.tcp_rmem", "4096 16384 65536")  # curl's slow reading paces the server
    out = os.path.join(lab.net.tmp, "download.bin")
    curl = lab.net.popen("client", "curl", "-sS", "--max-time", "40", "--limit-rate", "1M", "-o", out,
                         f"http://{VIP}/big", log="download.log")

    def download_synced() -> str | None:
        return next((c for c, state in conns(lab, lab.d2).items() if state == "ESTABLISHED"
                     and c.startswith(CLIENT) and conns(lab, lab.d1).get(c) == "ESTABLISHED"), None)

    wait_for(lambda: download_synced() is not None, timeout=8, what="connections synced to the backup")
    download = download_synced()  # the only connection yet
    wrk_during = lab.net.popen("client", "wrk", "-t1", "-c4", "-d6s", "--timeout", "3s", f"http://{VIP}/",
                               log="wrk-during.log")
    time.sleep(1.0)  # wrk's connections are established and synced too
    with Capture(lab.net, "client", "eth0", "ip proto 112 or arp", name="failover") as cap:
        time.sleep(0.3)
        killed = time.time()
        lab.net.kill(lab.d1.proc, signal.SIGKILL)
        lab.d1.proc = None
        assert curl.poll() is None, "the download ended before the failover"
        wait_for(lambda: lab.vrrp_state(lab.d2) == {"VI_1": "MASTER", "VI_2": "MASTER"}, timeout=10,
                 what="d2 master")
        time.sleep(0.5)
    d2_out, d2_in = ADDRS[lab.d2.role]
    first_advert = min(p.time for p in cap.packets() if VRRPv3 in p and p[IP].src == d2_out)
    first_garp = min(p.time for p in cap.packets() if ARP in p and p[ARP].psrc == VIP == p[ARP].pdst)
    failover, garp = float(first_advert) - killed, float(first_garp) - killed
    print(f"\nfailover: first advert of the new master {failover:.3f} s after kill -9, gratuitous ARP for the VIP "
          f"{garp:.3f} s (master down interval {BACKUP_DOWN_INTERVAL:.3f} s)")
    assert 0 < failover <= BACKUP_DOWN_INTERVAL + SLACK, failover
    assert garp <= BACKUP_DOWN_INTERVAL + SLACK, garp
    assert lab.has_addr(lab.d2, "dip0", GATEWAY)  # the real servers' gateway moved with the VIP (sync group)
    assert "master sync daemon (mcast=dip0, syncid=51" in lab.d2.lvsadm("-L", "--daemon").stdout
    # The download that started on d1 ends on d2, complete, on the same connection.
    code = curl.wait(40)
    with open(os.path.join(lab.net.tmp, "download.log")) as log:
        assert code == 0, log.read()
    with open(out, "rb") as got, open(os.path.join(lab.net.tmp, "big.bin"), "rb") as want:
        assert hashlib.sha256(got.read()).digest() == hashlib.sha256(want.read()).digest()
    assert conns(lab, lab.d2)[download] != "ESTABLISHED"  # d2 saw its end
    wrk_during.wait(20)
    with open(os.path.join(lab.net.tmp, "wrk-during.log")) as f:
        during = f.read()
    print(f"wrk across the failover: {wrk_errors(during)} errors\n{during}")
    # After the failover window: keep-alive traffic through the new master, without a single error.
    after = lab.net.exec("client", "wrk", "-t1", "-c4", "-d3s", "--timeout", "2s", f"http://{VIP}/", timeout=30)
    print(f"wrk after the failover:\n{after.stdout}")
    assert wrk_errors(after.stdout) == 0, after.stdout
    assert int(re.search(r"(\d+) requests in", after.stdout).group(1)) > 100
    stats = next(line for line in lab.d2.lvsadm("-L", "-n", "--stats").stdout.splitlines() if line.startswith("TCP"))
    assert int(stats.split()[3]) > 100  # inpkts: the new master forwarded


def test_the_old_master_returns_preempts_and_hands_over_cleanly_on_sigterm(pair):
    lab = pair
    os.unlink(lab.d1.control)  # the killed lvsd's socket file (lvsd would replace it; start() waits for it)
    lab.start_lvsd(lab.d1, keepalived_conf(D1_PRIO, version=3, advert_int=ADVERT_INT, rips=lab.rips))
    wait_for(lambda: lab.vrrp_state(lab.d1) == {"VI_1": "MASTER", "VI_2": "MASTER"}, timeout=10,
             what="d1 preempting")
    wait_for(lambda: lab.vrrp_state(lab.d2) == {"VI_1": "BACKUP", "VI_2": "BACKUP"}, timeout=5, what="d2 backup")
    assert not lab.has_addr(lab.d2, "dip0", GATEWAY)
    assert "backup sync daemon" in lab.d2.lvsadm("-L", "--daemon").stdout
    r = lab.curl(f"http://{VIP}/")
    assert r.returncode == 0 and r.stdout.strip() in ("rs1", "rs2", "rs3"), r.stderr
    with Capture(lab.net, "client", "eth0", "ip proto 112", name="sigterm") as cap:
        stopped = time.monotonic()
        lab.d1.stop()  # SIGTERM: priority 0, addresses removed
        wait_for(lambda: lab.vrrp_state(lab.d2) == {"VI_1": "MASTER", "VI_2": "MASTER"}, timeout=5,
                 what="d2 master")
        took = time.monotonic() - stopped
    zero = [p for p in cap.packets() if VRRPv3 in p and p[IP].src == ADDRS[lab.d1.role][0] and p[VRRPv3].priority == 0]
    assert zero, "d1's priority-0 advert"
    assert took < BACKUP_DOWN_INTERVAL, took  # skew time after the priority-0 advert, not the down interval
    assert not lab.has_addr(lab.d1, "dip0", GATEWAY) and lab.has_addr(lab.d2, "dip0", GATEWAY)
    r = lab.curl(f"http://{VIP}/")
    assert r.returncode == 0 and r.stdout.strip() in ("rs1", "rs2", "rs3"), r.stderr
