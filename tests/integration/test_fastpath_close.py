"""Connections closed through the kernel fast path end with the engine's state and counts.

A NAT and a DR connection, closed by the server first (HTTP/1.0), by the client first (keep-alive,
then close) or reset by the client: the FINs and the RST are forwarded by the tc program (no punt but
the handshake's SYNs), their state changes reach lvsd over the event ring, and `lvsadm -L -n -c` and
`-L -n` show what the engine's IPVS state table gives (NAT: TIME_WAIT, DR: FIN_WAIT since only the
client's half crosses the director, a reset: CLOSE), the connection counted inactive. The SYNs go to
the engine (--no-kernel-sched): kernel-scheduled connections' closes are test_ksched*.py's.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from pylvs.lab import topologies_dr_tun as drt
from pylvs.lab import topology as nat_topology
from pylvs.lab.netns import wait_for
from pylvs.lab.topologies_dr_tun import DrLab
from pylvs.lab.topology import NatLab

CLIENT_SCRIPT = r"""
import socket, struct, sys, time
mode, vip, cport = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((vip, 80), source_address=("0.0.0.0", cport), timeout=10)
time.sleep(0.3)  # established: the recipes are in the kernel by now
s.sendall(b"GET / HTTP/1.0\r\n\r\n" if mode == "server" else b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
got = b""
while b"\r\n\r\n" not in got:
    got += s.recv(65536)
head, body = got.split(b"\r\n\r\n", 1)
if mode == "server":
    while chunk := s.recv(65536):  # up to the server's FIN
        body += chunk
else:
    length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")).split(b":")[1])
    while len(body) < length:
        body += s.recv(65536)
time.sleep(0.2)
if mode == "rst":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print(body.decode().strip())
"""
# The IPVS state each close ends in, and the state changes the kernel reports on the way.
EXPECTED = {
    ("nat", "server"): ("TIME_WAIT", 2),  # rs FIN: ES -> FIN_WAIT; client FIN: -> TIME_WAIT
    ("nat", "client"): ("TIME_WAIT", 2),  # client FIN: ES -> CLOSE_WAIT; rs FIN: -> TIME_WAIT
    ("nat", "rst"): ("CLOSE", 1),
    ("dr", "server"): ("FIN_WAIT", 1),    # the rs's FIN goes straight to the client; client FIN: -> FIN_WAIT
    ("dr", "client"): ("FIN_WAIT", 1),
    ("dr", "rst"): ("CLOSE", 1),
}
# Punted to the engine: the client's SYN only (its recipes go to the kernel with it: the SYN-ACK, where
# replies cross, and the client's ACK go through the kernel, the ACK's change to ESTABLISHED reported).
SYNS = {"nat": 1, "dr": 1}
HANDSHAKE_CHANGES = 1
# Connections whose entries the program took out itself: all of them. NAT's with the last ACK after
# TIME_WAIT or with the RST; DR's with the client's FIN (FIN_WAIT: nothing crosses back to end it later).
RETIRED = {("nat", "server"): 1, ("nat", "client"): 1, ("nat", "rst"): 1,
           ("dr", "server"): 1, ("dr", "client"): 1, ("dr", "rst"): 1}


@pytest.fixture(scope="module", params=["nat", "dr"])
def lab(request):
    lab = NatLab(n_rs=1) if request.param == "nat" else DrLab(n_rs=1)
    lab.kind = request.param
    lab.vip = nat_topology.VIP if request.param == "nat" else drt.VIP
    try:
        lab.up()
        lab.start_lvsd("--datapath", "bpf", "--no-kernel-sched")  # the handshake through the engine
        if request.param == "nat":
            lab.nat_service()
        else:
            lab.service()
        # A first connection: the director learns its neighbours (a recipe waits for its next hop).
        assert lab.curl(f"http://{lab.vip}/").returncode == 0
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def datapath(lab) -> dict:
    return json.loads(lab.lvsadm("--datapath", "--json").stdout)


def counters(lab) -> dict:
    return datapath(lab)["counters"]


def offloaded(lab) -> int:
    return json.loads(lab.lvsadm("--datapath", "--json").stdout)["offloaded_conns"]


def conns(lab) -> tuple[int, int]:
    """(ActiveConn, InActConn) of the one real server, from `lvsadm -L -n`."""
    line = next(ln for ln in lab.lvsadm("-L", "-n").stdout.splitlines() if ln.strip().startswith("->")
                and "RemoteAddress" not in ln)
    active, inactive = map(int, line.split()[-2:])
    return active, inactive


def listed_state(lab, cport: int) -> str | None:
    for line in lab.lvsadm("-L", "-n", "-c").stdout.splitlines():
        if re.search(rf" \S+:{cport} ", line):
            return line.split()[2]
    return None


@pytest.mark.parametrize("mode", ["server", "client", "rst"])  # the reset last: CLOSE expires in 10 s
def test_a_connection_closed_through_the_kernel_ends_as_in_the_engine(lab, mode):
    cport = {"server": 41001, "client": 41002, "rst": 41003}[mode]
    state, changes = EXPECTED[(lab.kind, mode)]
    active0, inactive0 = conns(lab)
    offloaded0 = offloaded(lab)
    retired0 = datapath(lab)["retired_conns"]
    before = counters(lab)
    r = lab.net.exec("client", sys.executable, "-c", CLIENT_SCRIPT, mode, lab.vip, str(cport), timeout=20)
    assert r.stdout.strip() == "rs1"
    wait_for(lambda: listed_state(lab, cport) == state, timeout=5,
             what=f"{state} in lvsadm -c (got {listed_state(lab, cport)}; {lab.lvsd_log()[-500:]})")
    after = counters(lab)
    grown = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    # the handshake's last ACK, the FINs / the RST: forwarded and reported by the kernel
    assert grown.get("tcp_event") == HANDSHAKE_CHANGES + changes, grown
    assert grown.get("punt_tcp_flags") == SYNS[lab.kind], grown  # only the handshake's SYNs reached Python
    assert grown.get("hit", 0) >= 3 and not grown.get("punt_ring_full"), grown
    assert conns(lab) == (active0, inactive0 + 1)  # counted, and inactive (as IPVS: not ESTABLISHED)
    # The recipes are out: taken by the program with the last segment (DR: the FIN), not by lvsd.
    wait_for(lambda: offloaded(lab) == offloaded0, timeout=3, what="the recipes out of the kernel")
    assert datapath(lab)["retired_conns"] == retired0 + RETIRED[(lab.kind, mode)]
    assert datapath(lab)["tcp_state_mismatches"] == 0
