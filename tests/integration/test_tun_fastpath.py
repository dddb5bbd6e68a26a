"""TUN through lvsd's kernel fast path, to real servers that decapsulate in userspace (lvs-rs).

Inside one machine the client's packets are CHECKSUM_PARTIAL and GSO super-frames; the fast path
encapsulates them as they are. The userspace decapsulator must hand them to the real server's
stack with that state (virtio_net_hdr on the TUN device), or its TCP drops them. Downloads and
uploads through ipip, GUE and GRE must arrive whole; a packet whose checksum is really wrong must
still be dropped by the real server's kernel.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import GRE

from pylvs.lab import servers
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topologies_dr_tun import CLIENT, DIP, GUE_PORT, ROUTER_RSNET, VIP, TunLab

SINK_PORT = 8080
BIG = 16 << 20
UPLOAD = 8 << 20
# A PUT sink on every real server: answers the sha256 of the body it received.
SINK = """
import hashlib, http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        left, digest = int(self.headers["Content-Length"]), hashlib.sha256()
        while left:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), Sink).serve_forever()
"""
SEND_RAW = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
            "for p in map(bytes.fromhex, sys.argv[1:]): s.sendto(p, (socket.inet_ntoa(p[16:20]), 0))")


@pytest.fixture(scope="module")
def lab():
    lab = TunLab(("ipip", "gue", "gre"))
    try:
        lab.up()
        servers.make_big_file(lab.net, BIG)
        for name in lab.rs_names:
            lab.net.popen(name, sys.executable, "-c", SINK, str(SINK_PORT), log=f"{name}-sink.out")
        for name in lab.rs_names:
            wait_for(lambda n=name: bool(lab.net.exec(n, "ss", "-Htln", f"sport = :{SINK_PORT}").stdout.strip()),
                     what=f"upload sink on {name}")
        lab.start_lvsd("--datapath", "bpf")
        lab.service()
        lab.lvsadm("-A", "-t", f"{VIP}:{SINK_PORT}", "-s", "rr")
        for addr, kind in zip(lab.rips, lab.tun_types, strict=True):
            lab.lvsadm("-a", "-t", f"{VIP}:{SINK_PORT}", "-r", addr, "-i", *lab.tun_args(kind), "-w", "1")
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def datapath(lab) -> dict:
    return json.loads(lab.lvsadm("--datapath", "--json").stdout)


def inpkts(lab, port: int = 80) -> int:
    """InPkts of the VIP:port service (lvsd reads the fast path's counters back before listing)."""
    for line in lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines():
        if line.startswith(f"TCP  {VIP}:{port} "):
            return int(line.split()[3])
    raise AssertionError(f"no service {VIP}:{port}")


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_downloads_through_ipip_gue_and_gre_arrive_whole(lab):
    status = datapath(lab)
    assert status["datapath"] == "bpf", status
    expected = sha256_of(os.path.join(lab.net.tmp, "big.bin"))
    before = {n: len(lab.access_log(n)) for n in lab.rs_names}
    steady = []
    for _ in lab.rs_names:
        # Paced to take a few seconds. Recipes go to the kernel 50 ms after ESTABLISHED: the burst that
        # fills the client's receive window first is acknowledged through the engine, the rest through
        # the kernel, which the counts between 1.5 s in and the end show.
        curl = lab.net.popen("client", "sh", "-c",
                             f"curl -sS --max-time 30 --limit-rate 4M http://{VIP}/big | sha256sum", log="dl.log")
        time.sleep(1.5)
        hits, packets = datapath(lab)["counters"]["hit"], inpkts(lab)
        assert curl.wait(40) == 0
        steady.append((datapath(lab)["counters"]["hit"] - hits, inpkts(lab) - packets))
        with open(os.path.join(lab.net.tmp, "dl.log")) as f:
            assert f.read().split()[0] == expected
    assert {n: len(lab.access_log(n)) - before[n] for n in lab.rs_names} == {"rs1": 1, "rs2": 1, "rs3": 1}
    # Each kind of tunnel: once established, the client's packets went through the kernel path, all but
    # those that close the connection (FIN and the ACK after it change its state: the engine's).
    assert all(total - got <= 3 for got, total in steady) and sum(got for got, _ in steady) > 10, steady


def test_uploads_through_ipip_gue_and_gre_arrive_whole_as_gso_frames(lab):
    body = os.path.join(lab.net.tmp, "upload.bin")
    with open(body, "wb") as f:
        f.write(os.urandom(UPLOAD))
    expected = sha256_of(body)
    hits = datapath(lab)["counters"]["hit"]
    with Capture(lab.net, "router", "rs0", f"ip and src host {DIP}", name="fp-up") as cap:
        for _ in lab.rs_names:
            r = lab.curl(f"http://{VIP}:{SINK_PORT}/up", "-T", body, "--limit-rate", "4M", timeout=30)
            assert (r.returncode, r.stdout) == (0, expected), (r.stderr, r.stdout)
    status = datapath(lab)
    assert status["counters"]["hit"] - hits > 100, status
    # Super-frames crossed the tunnels whole (the real servers' stacks took them as such).
    sizes = {rip: max((p[IP].len for p in cap.packets() if IP in p and p[IP].dst == rip), default=0)
             for rip in lab.rips}
    assert all(size > 1500 for size in sizes.values()), sizes


def test_a_wrong_inner_checksum_is_still_dropped_by_the_real_server(lab):
    """Complete checksums are not vouched for: the real server's kernel verifies them as always."""
    good = IP(src=CLIENT, dst=VIP) / TCP(sport=41001, dport=80, flags="S", seq=1)
    bad = IP(src=CLIENT, dst=VIP) / TCP(sport=41002, dport=80, flags="S", seq=1, chksum=0x1234)
    errors = tcp_csum_errors(lab, "rs1")
    packets = [tunnelled("ipip", lab.rips[0], bad), tunnelled("ipip", lab.rips[0], good)]
    assert syn_acked(lab, packets, range(41001, 41003)) == {41001}
    assert tcp_csum_errors(lab, "rs1") == errors + 1


def test_outer_fragments_are_reassembled_by_the_kernel_and_decapsulated(lab):
    """The kernel reassembles them for the link-level socket (its defragmenting fanout group)."""
    packets = []
    for i, (rip, kind) in enumerate(zip(lab.rips, lab.tun_types, strict=True)):
        inner = IP(src=CLIENT, dst=VIP) / TCP(sport=42000 + i, dport=80, flags="S", seq=1) / bytes(1800)
        packets += fragment(tunnelled(kind, rip, inner), fragsize=1000)
    assert len(packets) == 6
    assert syn_acked(lab, packets, range(42000, 42003)) == {42000, 42001, 42002}


def test_the_decapsulators_carried_partial_checksums_and_gso_frames(lab):
    for name, kind in zip(lab.rs_names, lab.tun_types, strict=True):
        counts = decap_counts(lab, name)
        assert counts["partial"] > 100 and counts["gso"] > 20, (kind, counts)
        assert not {"inject_error", "gso_unsupported", "csum_outside_inner", "too_big"} & counts.keys(), counts


def decap_counts(lab, role: str) -> dict[str, int]:
    """What the real server's decapsulator counted: it logs its counters on SIGUSR1."""
    state_dir = os.path.join(lab.net.tmp, f"{role}-lvs-rs")
    with open(os.path.join(state_dir, "decap.pid")) as f:
        pid = int(f.read())
    log = os.path.join(state_dir, "decap.log")

    def reports() -> list[str]:
        with open(log) as f:
            return [line for line in f.read().splitlines() if "counts: " in line]

    seen = len(reports())
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: len(reports()) > seen, what=f"counters of {role}'s decapsulator")
    return ast.literal_eval(reports()[-1].split("counts: ", 1)[1])


def tunnelled(kind: str, rip: str, inner: IP) -> IP:
    """A packet as the director would tunnel it to `rip`, sent from the router (no DF)."""
    outer = IP(src=ROUTER_RSNET, dst=rip, ttl=64)
    if kind == "ipip":
        return outer / inner
    if kind == "gre":
        return outer / GRE(proto=0x0800) / inner
    return outer / UDP(sport=40000, dport=GUE_PORT, chksum=0) / (b"\x00\x04\x00\x00" + bytes(inner))


def syn_acked(lab, packets: list[IP], ports: range) -> set[int]:
    """Send the packets from the router; which of the client `ports` the real servers answered with a
    SYN-ACK (earlier tests' SYN-ACKs may be retransmitted meanwhile)."""
    bpf = f"tcp and src host {VIP} and dst portrange {ports[0]}-{ports[-1]}"
    with Capture(lab.net, "router", "rs0", bpf, name="fp-synack") as cap:
        lab.net.exec("router", sys.executable, "-c", SEND_RAW, *(bytes(p).hex() for p in packets))
        time.sleep(0.5)
    return {p[TCP].dport for p in cap.packets() if TCP in p and p[TCP].flags & 0x12 == 0x12}


def tcp_csum_errors(lab, role: str) -> int:
    """The namespace's Tcp InCsumErrors (/proc/net/snmp)."""
    lines = [line.split() for line in lab.net.exec(role, "cat", "/proc/net/snmp").stdout.splitlines()
             if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("InCsumErrors")])
