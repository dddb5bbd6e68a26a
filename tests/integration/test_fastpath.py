"""The kernel fast path inside lvsd (--datapath bpf): established flows leave through the tc program,
while the engine keeps the table, the statistics and the expiry exact."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology import CLIENT, VIP, NatLab


@pytest.fixture(scope="module")
def lab():
    lab = NatLab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def datapath(lab) -> dict:
    out = lab.lvsadm("--datapath", "--json").stdout
    return json.loads(out)


def service_stats(lab) -> tuple[int, int, int, int, int]:
    line = lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines()[3]
    conns, inpkts, outpkts, inbytes, outbytes = map(int, line.split()[2:7])
    return conns, inpkts, outpkts, inbytes, outbytes


def test_bpf_carries_established_flows_and_the_engine_still_counts_them(lab):
    lab.start_lvsd("--datapath", "bpf")
    try:
        lab.nat_service()
        status = datapath(lab)
        assert status["datapath"] == "bpf" and status["counters"]["hit"] == 0
        # A first request: the director learns the neighbours' MACs (a recipe waits for its next hop, and
        # under load the first connection's whole download could pass before that).
        assert lab.curl(f"http://{VIP}/").returncode == 0
        wait_for(lambda: datapath(lab)["offloaded_conns"] == 0, timeout=6, what="the first connection's recipes out")
        before = datapath(lab)["counters"]["hit"]
        with open(os.path.join(lab.net.tmp, "big.bin"), "rb") as f:
            size = len(f.read())
        # Paced over several seconds: counts are read back from the kernel every 2 s while it runs.
        r = lab.net.exec("client", "sh", "-c", f"curl -sS --max-time 30 --limit-rate 20M http://{VIP}/big | wc -c",
                         timeout=40)
        assert int(r.stdout) == size
        status = datapath(lab)
        # The download's frames (GSO super-frames on veth) went through the kernel, not through Python.
        assert status["counters"]["hit"] - before > 200, status
        # The engine was told: its statistics hold the kernel's packets within two refresh periods.
        wait_for(lambda: service_stats(lab)[4] >= size, timeout=6, what="OutBytes to include the download")
        conns, inpkts, outpkts, _, _ = service_stats(lab)
        assert conns == 2 and inpkts > 10 and outpkts > 100
        # The connection closed (its FINs through the kernel, TIME_WAIT reported): its recipes left the map.
        wait_for(lambda: datapath(lab)["offloaded_conns"] == 0, timeout=6, what="recipes withdrawn")
        listing = lab.lvsadm("-L", "-n", "-c").stdout
        assert re.search(r"TCP .* (TIME_WAIT|CLOSE|FIN_WAIT|CLOSE_WAIT|LAST_ACK) ", listing), listing
    finally:
        lab.stop_lvsd()


def test_python_datapath_when_asked(lab):
    lab.start_lvsd("--datapath", "python")
    try:
        lab.nat_service()
        assert lab.curl(f"http://{VIP}/").returncode == 0
        status = datapath(lab)
        assert status == {"datapath": "python", "reason": "--datapath python"}
        assert "data path: python (--datapath python)" in lab.lvsd_log()
    finally:
        lab.stop_lvsd()


def test_stop_with_flush_flows_removes_the_program_and_a_restart_starts_clean(lab):
    lab.start_lvsd("--datapath", "bpf", "--flush-flows")
    lab.nat_service()
    assert lab.curl(f"http://{VIP}/").returncode == 0
    assert lab.stop_lvsd() == 0
    filters = lab.net.exec("director", "tc", "filter", "show", "dev", lab.director_interfaces[0], "ingress").stdout
    assert "pylvs" not in filters and "bpf" not in filters, filters
    time.sleep(0.1)
    lab.start_lvsd("--datapath", "bpf")
    try:
        assert datapath(lab)["offloaded_conns"] == 0
    finally:
        lab.stop_lvsd()


def test_frames_for_another_mac_are_not_forwarded_by_the_kernel_path(lab):
    """A switch flooding an unknown unicast address hands the director frames for other hosts; the
    kernel drops them before IPVS (ip_rcv), and so must the fast path, even for an offloaded flow."""
    lab.start_lvsd("--datapath", "bpf")
    holder = None
    try:
        lab.lvsadm("-A", "-t", f"{VIP}:80", "-s", "rr")
        lab.lvsadm("-a", "-t", f"{VIP}:80", "-r", f"{lab.rips[0]}:{lab.rport}", "-m")
        # An established connection from a known port, held open (an unfinished request).
        hold = (f"import socket,time\ns=socket.create_connection(('{VIP}',80),source_address=('{CLIENT}',45555))\n"
                "s.send(b'GET / HTTP/1.1\\r\\n'); time.sleep(30)\n")
        holder = lab.net.popen("client", sys.executable, "-c", hold, log="holder.log")
        wait_for(lambda: datapath(lab)["offloaded_conns"] >= 1, timeout=10, what="the flow in the kernel map")
        send = ("from scapy.all import Ether, IP, TCP, sendp\n"
                f"sendp(Ether(dst='02:de:ad:00:00:01')/IP(src='{CLIENT}',dst='{VIP}')/"
                "TCP(sport=45555,dport=80,flags='A')/b'OTHERHOST-MARKER', iface='eth0', verbose=False)\n")
        with Capture(lab.net, lab.rs_names[0], "eth0", "tcp", name="otherhost") as at_rs:
            before = datapath(lab)["counters"].get("hit", 0)
            lab.net.exec("client", sys.executable, "-c", send, timeout=30)
            time.sleep(0.3)
        assert not [p for p in at_rs.packets() if b"OTHERHOST-MARKER" in bytes(p)]
        assert datapath(lab)["counters"].get("hit", 0) == before
    finally:
        if holder is not None:
            lab.net.kill(holder)
        lab.stop_lvsd()
