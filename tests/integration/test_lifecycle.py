"""lvsd start/stop: nothing stray is left (rules, sockets, processes), and the kernel stays out."""

from __future__ import annotations

import os
import signal
import sys
import time

from scapy.layers.inet import ICMP, IP, TCP

from pylvs.lab.netns import Capture, run, wait_for
from pylvs.lab.topology import CLIENT, DIP, VIP, NatLab


def nft_tables(lab) -> str:
    return lab.net.exec("director", "nft", "list", "tables").stdout


def lvsd_pids(lab) -> list[str]:
    """lvsd processes still running in the lab's director namespace."""
    pids = run(["ip", "netns", "pids", lab.net.name("director")], check=False).stdout.split()
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pylvs.cli.lvsd" in f.read():
                    found.append(pid)
        except FileNotFoundError:
            pass
    return found


def test_kill_and_restart_leaves_nothing_stray():
    lab = NatLab(n_rs=2).up(udp=False)
    try:
        lab.start_lvsd()
        lab.nat_service()
        assert lab.curl(f"http://{VIP}/").stdout.strip() in ("rs1", "rs2")
        assert "table inet pylvs" in nft_tables(lab)
        pid = lab.lvsd.pid
        assert lab.stop_lvsd(signal.SIGTERM) == 0
        assert "pylvs" not in nft_tables(lab)
        assert lab.net.exec("director", "test", "-e", lab.control, check=False).returncode != 0
        assert run(["ps", "-p", str(pid)], check=False).returncode != 0
        # a daemon killed hard leaves its rules; the next start replaces them
        lab.start_lvsd()
        lab.stop_lvsd(signal.SIGKILL)
        assert "pylvs" in nft_tables(lab)
        lab.start_lvsd()
        lab.nat_service()
        assert lab.curl(f"http://{VIP}/").stdout.strip() in ("rs1", "rs2")
        assert lab.net.exec("director", "nft", "list", "tables").stdout.count("pylvs") == 1
        lab.stop_lvsd()
        assert lvsd_pids(lab) == []
    finally:
        lab.down()
    assert lab.net.leftovers() == []


def test_director_kernel_neither_answers_nor_forwards_with_ip_forward_on():
    lab = NatLab(n_rs=2, director_forwarding=True).up(udp=False)
    try:
        lab.start_lvsd()
        lab.nat_service()
        with Capture(lab.net, "client", "eth0", "tcp") as client_cap, \
                Capture(lab.net, "lan", "br0", "tcp", name="lan") as lan_cap:
            for _ in range(4):
                assert lab.curl(f"http://{VIP}/").returncode == 0
        client = [p for p in client_cap.packets() if TCP in p]
        # on failure, the whole exchange: whose RST it was (the kernel's, or a real server's passed on)
        trace = "\n".join(f"{float(p.time):.6f} {p[IP].src}:{p[TCP].sport} > {p[IP].dst}:{p[TCP].dport} "
                          f"{p[TCP].flags} seq={p[TCP].seq} ack={p[TCP].ack} len={len(p[TCP].payload)}"
                          for p in client + [q for q in lan_cap.packets() if TCP in q])
        assert not [p for p in client if p[TCP].flags.R], f"director kernel sent a RST:\n{trace}"
        assert all(p[IP].src in (CLIENT, VIP) and p[IP].dst in (CLIENT, VIP) for p in client)
        syns_to_rs = [p for p in lan_cap.packets() if TCP in p and p[TCP].flags == "S"]
        assert len(syns_to_rs) == 4, "duplicate or missing SYNs on the real-server LAN"
        replies_on_lan = [p for p in lan_cap.packets() if TCP in p and p[IP].src == VIP]
        assert not replies_on_lan, "the director kernel forwarded a reply back onto the LAN"
        assert sum(len(lab.access_log(n)) for n in lab.rs_names) == 4
    finally:
        lab.down()


def test_tpacket_v3_ring_forwards_too():
    lab = NatLab(n_rs=2).up(udp=False)
    try:
        lab.start_lvsd("--ring", "3")
        lab.nat_service()
        assert sorted(lab.curl(f"http://{VIP}/").stdout.strip() for _ in range(4)) == ["rs1", "rs1", "rs2", "rs2"]
        r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 30 http://{VIP}/big | wc -c", timeout=40)
        assert int(r.stdout) == 64 << 20
    finally:
        lab.down()


def test_real_server_icmp_errors_reach_the_client_only_translated_with_ip_forward_on():
    """The director's kernel would forward the real server's own error (from the RIP, quoting RIP:port)
    beside lvsd's translated one: the steering table keeps ICMP errors about NAT traffic from it."""
    lab = NatLab(n_rs=1, director_forwarding=True).up(http=False, udp=False)
    try:
        lab.start_lvsd()
        lab.lvsadm("-A", "-u", f"{VIP}:54", "-s", "rr")
        lab.lvsadm("-a", "-u", f"{VIP}:54", "-r", "192.0.2.11:9999", "-m")  # nothing listens there
        script = (
            "import socket\n"
            "for _ in range(3):\n"
            "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
            f"    s.connect(('{VIP}', 54)); s.send(b'x')\n"
            "    try: s.recv(100); print('data')\n"
            "    except (TimeoutError, ConnectionRefusedError) as e: print(type(e).__name__)\n"
        )
        with Capture(lab.net, "client", "eth0", "icmp", name="icmp") as cap:
            r = lab.net.exec("client", sys.executable, "-c", script, timeout=30)
        assert r.stdout.split() == ["ConnectionRefusedError"] * 3
        icmps = [p for p in cap.packets() if ICMP in p]
        assert [(p[IP].src, p[ICMP].type, p[ICMP].code) for p in icmps] == [(VIP, 3, 3)] * 3
        assert all(p[ICMP].payload.src == CLIENT and p[ICMP].payload.dst == VIP for p in icmps)
    finally:
        lab.down()


def test_an_interface_that_goes_away_costs_nothing_and_forwarding_resumes_when_it_returns():
    """issue 10 item 3: no busy loop on a lost interface, a log line, and its rings back when it returns."""
    lab = NatLab(n_rs=1).up(udp=False)
    try:
        lab.start_lvsd()
        lab.nat_service()
        assert lab.curl(f"http://{VIP}/").returncode == 0
        lab.net.ip("director", "link", "del", "dip0")
        wait_for(lambda: "interface dip0 is gone" in lab.lvsd_log(), timeout=5, what="the log line")
        used = cpu_seconds(lab.lvsd.pid)
        time.sleep(2)
        assert cpu_seconds(lab.lvsd.pid) - used < 0.5, "lvsd spins on the lost interface"
        assert lab.lvsadm("-L", "-n").returncode == 0  # the rest of the director goes on
        lab.net.veth("director", "dip0", "lan", "p0")
        lab.net.ip("lan", "link", "set", "p0", "master", "br0")
        lab.net.addr("director", "dip0", f"{DIP}/24")
        lab.net.ip("rs1", "neigh", "flush", "all")  # the real server learns the new interface's MAC
        wait_for(lambda: "interface dip0 is back" in lab.lvsd_log(), timeout=5, what="the rings reopened")
        wait_for(lambda: lab.curl(f"http://{VIP}/", timeout=2).returncode == 0, timeout=10,
                 what="forwarding through the returned interface")
    finally:
        lab.down()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_download_survives_a_graceful_restart_with_keep_conns():
    """issue 10: established connections survive SIGTERM and a new start (--keep-conns); the same download
    without it hangs for good, its packets dropped as no_conn."""
    lab = NatLab(n_rs=1).up(udp=False)
    try:
        config, kept = os.path.join(lab.net.tmp, "rules"), os.path.join(lab.net.tmp, "conns")
        args = ("--config", config, "--save-config", "--keep-conns", kept)
        lab.start_lvsd(*args)
        lab.nat_service()
        out = os.path.join(lab.net.tmp, "download.bin")
        curl = lab.net.popen("client", "curl", "-sS", "--max-time", "40", "--limit-rate", "8M", "-o", out,
                             f"http://{VIP}/big", log="download.log")
        time.sleep(2)
        assert lab.stop_lvsd() == 0
        assert curl.poll() is None, "the download ended before the restart"
        assert os.path.getsize(kept) > 0
        lab.start_lvsd(*args)
        wait_for(lambda: "restored 1 connections" in lab.lvsd_log(), timeout=5, what="the connection restored")
        assert not os.path.exists(kept)
        code = curl.wait(40)
        with open(os.path.join(lab.net.tmp, "download.log")) as log:
            assert code == 0, log.read()
        with open(out, "rb") as got, open(os.path.join(lab.net.tmp, "big.bin"), "rb") as want:
            assert got.read() == want.read()
    finally:
        lab.down()
