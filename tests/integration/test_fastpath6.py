"""IPv6 through lvsd's kernel fast path (--datapath bpf): NAT66, FULLNAT6 (TOA), DR and TUN over IPv6 (IPv6
in IPv6 and in GRE, to real servers decapsulating with lvs-rs) on real interfaces.

Each transfer must arrive whole, and the kernel must have carried it: the program's hit counter grows by
hundreds of frames, the flow map holds the IPv6 connection while it is open, nothing is punted but what
the punt rules say (frames before the recipes, SYNs, too big for a tunnel), and the engine handled a
small share (the service's packet statistics, which include what the kernel counted, minus its hits).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from pylvs.lab import ipv6, servers
from pylvs.lab.netns import wait_for
from pylvs.lab.topologies_dr_tun import DrLab
from pylvs.lab.topology import NatLab
from tests.integration.labs import shared_lab

BIG = 16 << 20
UPLOAD = 900 << 10  # under nginx's client_max_body_size (1 MB)
ENGINE_FRAMES_PER_CONN = 40  # the handshake and what arrives before the recipes are written (a loaded 2-core
# machine: 10 to 50 frames per connection were measured)


@pytest.fixture(scope="module")
def nat6():
    yield from shared_lab(NatLab(n_rs=1, ipv6=True), "--datapath", "bpf")


@pytest.fixture(scope="module")
def dr6():
    yield from shared_lab(DrLab(n_rs=1, ipv6=True), "--datapath", "bpf")


def counters(lab) -> dict[str, int]:
    status = json.loads(lab.lvsadm("--datapath", "--json").stdout)
    assert status["datapath"] == "bpf", status
    return status["counters"]


def offloaded(lab) -> int:
    return json.loads(lab.lvsadm("--datapath", "--json").stdout)["offloaded_conns"]


def packets(lab) -> int:
    """In + out packets of the only service, as `-L -n --stats --exact` shows them."""
    line = lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines()[3]
    return int(line.split()[3]) + int(line.split()[4])


def one_service(lab, vip: str, real_server: str) -> None:
    """[vip]:80 with one real server (`real_server`: ipvsadm's -r and method options), the only service."""
    lab.lvsadm("-R", stdin=f"-C\n-A -t [{vip}]:80 -s rr\n-a -t [{vip}]:80 {real_server}\n")


def download(lab, url: str, size: int) -> None:
    r = lab.net.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                     "--max-time", "30", url, timeout=40)
    assert r.stdout.split() == ["200", str(size)], r.stdout + r.stderr


def upload(lab, url: str) -> None:
    body = os.path.join(lab.net.tmp, "upload6.bin")
    with open(body, "wb") as f:
        f.write(os.urandom(UPLOAD))
    r = lab.net.exec("client", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                     "--max-time", "30", "--data-binary", f"@{body}", url, timeout=40)
    assert r.stdout.split() == ["200", str(UPLOAD)], r.stdout + r.stderr


def held_open(lab, vip: str):
    """A client connection to [vip]:80 that stays established (an unfinished request)."""
    hold = (f"import socket,time\ns=socket.create_connection(('{vip}',80))\n"
            "s.send(b'GET / HTTP/1.1\\r\\n'); time.sleep(30)\n")
    return lab.net.popen("client", sys.executable, "-c", hold, log="holder6.log")


def kernel_carried(lab, before: dict[str, int], conns: int, at_least: int) -> None:
    """The kernel forwarded `at_least` frames since `before`; what it left to the engine is only what the
    punt rules give it (frames before a connection's recipes are written, SYNs, frames too big for a
    tunnel), a small share, once the kernel's counts are in the statistics."""
    after = counters(lab)
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    hits = moved.get("hit", 0)
    assert hits >= at_least, moved
    # (punt_ext_header: MLD reports, ICMPv6 behind a hop-by-hop header, which the kernel sends on joins)
    allowed = {"hit", "miss", "pass_other", "punt_tcp_flags", "punt_mtu", "tcp_event", "punt_ext_header"}
    assert set(moved) <= allowed, moved
    wait_for(lambda: packets(lab) >= hits, timeout=6, what="the kernel's counts in the statistics")
    engine = packets(lab) - hits
    assert engine <= max(ENGINE_FRAMES_PER_CONN * conns, hits // 10), (engine, moved)


def test_nat66_through_the_kernel(nat6):
    one_service(nat6, ipv6.NAT_VIP6, f"-r [{ipv6.rip6(1)}]:{nat6.rport} -m")
    before = counters(nat6)
    holder = held_open(nat6, ipv6.NAT_VIP6)
    try:
        wait_for(lambda: offloaded(nat6) == 1, timeout=10, what="the IPv6 connection in the kernel's map")
    finally:
        nat6.net.kill(holder)
    download(nat6, ipv6.url6(ipv6.NAT_VIP6, path="/big"), os.path.getsize(os.path.join(nat6.net.tmp, "big.bin")))
    upload(nat6, ipv6.url6(ipv6.NAT_VIP6))
    kernel_carried(nat6, before, conns=3, at_least=300)


def test_fullnat6_after_toa_through_the_kernel(nat6):
    """FULLNAT with an IPv6 local address: TOA goes with the handshake's last ACK (the engine's), the rest
    of each connection through the kernel."""
    lip = "2001:db8:2::200"
    nat6.lvsadm("-R", stdin=f"-C\n-A -t [{ipv6.NAT_VIP6}]:80 -s rr\n-P -t [{ipv6.NAT_VIP6}]:80 -z {lip}\n"
                           f"-a -t [{ipv6.NAT_VIP6}]:80 -r [{ipv6.rip6(1)}]:{nat6.rport} --fullnat\n")
    before = counters(nat6)
    download(nat6, ipv6.url6(ipv6.NAT_VIP6, path="/big"), os.path.getsize(os.path.join(nat6.net.tmp, "big.bin")))
    upload(nat6, ipv6.url6(ipv6.NAT_VIP6))
    assert nat6.access_log("rs1")[-1] == lip  # the real server sees the local address
    kernel_carried(nat6, before, conns=2, at_least=300)


def test_dr6_through_the_kernel(dr6):
    servers.make_big_file(dr6.net, BIG)
    one_service(dr6, ipv6.DR_VIP6, f"-r [{ipv6.rip6(1)}]:80 -g")
    before = counters(dr6)
    download(dr6, ipv6.url6(ipv6.DR_VIP6, path="/big"), BIG)  # the client's ACKs cross the director
    upload(dr6, ipv6.url6(ipv6.DR_VIP6))
    kernel_carried(dr6, before, conns=2, at_least=100)


@pytest.mark.parametrize("tun_type", ["ipip", "gre"])
def test_tun6_through_the_kernel(dr6, tun_type):
    state = os.path.join(dr6.net.tmp, "rs1-lvs-rs6")

    def lvs_rs(*args: str):
        return dr6.net.exec("rs1", sys.executable, "-m", "pylvs.cli.lvs_rs", *args, "--state-dir", state,
                            check=False, timeout=30)

    r = lvs_rs("up", "--vip", ipv6.DR_VIP6, "--method", "tun", "--tun-type", tun_type, "--dev", "lvsrs6")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        one_service(dr6, ipv6.DR_VIP6, f"-r [{ipv6.rip6(1)}]:80 -i --tun-type {tun_type}")
        before = counters(dr6)
        upload(dr6, ipv6.url6(ipv6.DR_VIP6))  # GSO super-frames tunnelled whole by the kernel
        download(dr6, ipv6.url6(ipv6.DR_VIP6, path="/big"), BIG)
        kernel_carried(dr6, before, conns=2, at_least=100)
    finally:
        lvs_rs("down")
