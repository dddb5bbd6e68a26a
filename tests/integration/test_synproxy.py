"""The SYN proxy on the wire (issue 13): a bounded flood of spoofed SYNs beside a curl loop and a long
download; then FULLNAT with the PROXY protocol behind the proxy, whose shifts must compose."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time

from scapy.layers.inet import IP, TCP

from pylvs.lab import servers
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP, NatLab

SYNS = 20_000
RATE = 5_000  # per second: 4 s of flood
SOURCES = "198.18.0.0/15"
DOWNLOAD = 24 << 20  # bytes of /big, at 4 MB/s: longer than the flood
SYN_ONLY = "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0"


def conn_entries(lab) -> list[str]:
    """Client addresses of the connection table's entries."""
    out = lab.lvsadm("-L", "-n", "-c").stdout
    return re.findall(r"^TCP\s+\S+\s+\S+\s+([\d.]+):\d+", out, re.M)


def digest(lab) -> str:
    with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
        return hashlib.sha256(f.read(DOWNLOAD)).hexdigest()


def test_spoofed_syn_flood_leaves_no_entries_and_never_reaches_the_real_servers():
    lab = NatLab(n_rs=2).up(udp=False)
    try:
        lab.start_lvsd()
        lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr", "-j", "enable")
        for addr in lab.rips:
            lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{addr}:8080", "-m")
        url = f"http://{VIP}/"
        # SYN-ACKs to the flood's sources go to the client namespace, which answers them with a RST
        # like any host that did not send the SYN.
        lab.net.ip("director", "route", "add", SOURCES, "via", CLIENT)
        lab.net.ip("client", "route", "add", "local", SOURCES, "dev", "lo")
        assert lab.curl(url).returncode == 0

        captures = [Capture(lab.net, name, "eth0", SYN_ONLY, name="syns") for name in lab.rs_names]
        for cap in captures:
            cap.__enter__()
        try:
            download = lab.net.popen("client", "sh", "-c",
                                     f"curl -sS --max-time 40 --limit-rate 4M -r 0-{DOWNLOAD - 1} {url}big"
                                     " | sha256sum", log="download.log")
            flood = lab.net.popen("client", sys.executable, "-m", "pylvs.lab.synflood", VIP, "80", str(SYNS),
                                  str(RATE), SOURCES, log="flood.log")
            served, most_entries, foreign = [], 0, set()
            started = time.monotonic()
            while flood.poll() is None and time.monotonic() - started < 30:
                served.append(lab.curl(url, timeout=3).returncode == 0)
                entries = conn_entries(lab)
                most_entries = max(most_entries, len(entries))
                foreign |= set(entries) - {CLIENT}
            assert flood.wait(30) == 0
            datapath = json.loads(lab.lvsadm("--datapath", "--json").stdout)  # the download still runs
            assert download.wait(45) == 0
        finally:
            for cap in captures:
                cap.__exit__()
        with open(os.path.join(lab.net.tmp, "flood.log")) as f:
            sent = float(f.read().split()[0])
        with open(os.path.join(lab.net.tmp, "download.log")) as f:
            downloaded = f.read().split()[0]
        syns = [p for cap in captures for p in cap.packets() if TCP in p]
        stats = lab.lvsadm("-L", "-n", "--stats", "--exact", "-t", f"{VIP}:80").stdout
        conns = int(next(line for line in stats.splitlines() if line.startswith("TCP")).split()[2])
        print(f"\nsynproxy flood: {sent:.0f} spoofed SYNs at {RATE}/s; real requests served {sum(served)}/"
              f"{len(served)}; connections created {conns}; most entries listed {most_entries}; "
              f"SYNs at the real servers {len(syns)}; data path {datapath['datapath']}")
        assert lab.lvsd.poll() is None and "Traceback" not in lab.lvsd_log(), lab.lvsd_log()[-2000:]
        assert sent >= 0.9 * SYNS
        assert not foreign, sorted(foreign)[:5]  # no spoofed source ever had an entry
        # Every entry is a real connection: the curls (1 + the loop's), the download; nothing more.
        assert conns <= len(served) + 2
        assert served and sum(served) >= 0.8 * len(served), served  # as test_flood: a busy shared machine
        assert downloaded == digest(lab)
        assert datapath.get("offloaded_conns", 0) == 0  # proxied connections stay in the engine (their shifts)
        assert syns and {p[IP].src for p in syns} == {CLIENT}  # the real servers saw real clients only
        assert len(syns) >= sum(served)
    finally:
        lab.down()
        assert lab.net.leftovers() == []


LIP = "192.0.2.200"


def test_fullnat_with_proxy_protocol_behind_the_syn_proxy():
    lab = NatLab(n_rs=1).up(udp=False)
    try:
        lab.net.ip("rs1", "route", "del", "default")  # no way back to the client but the local address
        servers.start_nginx(lab.net, "rs1", lab.rips[0], 8081, "rs1-pp", proxy_protocol=True)
        wait_for(lambda: lab._listening("rs1", lab.rips[0], 8081), what="nginx with proxy_protocol")
        lab.start_lvsd()
        for vport, rport, extra in ((80, 8080, ()), (81, 8081, ("--proxy-protocol", "v2"))):
            lab.lvsadm("-A", "-t", f"{VIP}:{vport}", "-s", "rr", "-j", "enable", *extra)
            lab.lvsadm("-P", "-t", f"{VIP}:{vport}", "-z", LIP)
            lab.lvsadm("-a", "-t", f"{VIP}:{vport}", "-r", f"{lab.rips[0]}:{rport}", "--fullnat")
        assert [lab.curl(f"http://{VIP}/").stdout.strip() for _ in range(2)] == ["rs1", "rs1"]
        assert [lab.curl(f"http://{VIP}:81/").stdout.strip() for _ in range(2)] == ["rs1-pp", "rs1-pp"]
        assert lab.access_log("rs1-pp") == [CLIENT, CLIENT]  # the PROXY header survived the proxy's shift
        for vport in (80, 81):  # a larger exchange: SACK, timestamps and windows through both shifts
            r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 20 -r 0-{(8 << 20) - 1} "
                             f"http://{VIP}:{vport}/big | sha256sum", timeout=30)
            with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
                assert r.stdout.split()[0] == hashlib.sha256(f.read(8 << 20)).hexdigest()
        drops = lab.lvsadm("--drops").stdout
        assert "synproxy_bad_cookie" not in drops and "synproxy_setup" not in drops, drops
        assert "Traceback" not in lab.lvsd_log(), lab.lvsd_log()[-2000:]
    finally:
        lab.down()
        assert lab.net.leftovers() == []
