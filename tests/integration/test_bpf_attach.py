"""The fast path on real interfaces: attached to tc ingress in a director namespace, NAT recipes
carry real traffic between a client and a real server namespace; detach, pinning, restart.

    client (cl) eth0 ── vip0 [director: fast path on vip0 and dip0] dip0 ── eth0 real server (rs)

The director's kernel does not forward (ip_forward=0) unless a test says so: a reply can only come
back through the program. Frames are captured with tcpdump and decoded with scapy.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from pyroute2.ethtool import Ethtool
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import rdpcap

from pylvs.datapath.bpf.events import RetiredEvent
from pylvs.datapath.bpf.loader import FastPath, ensure_bpffs, in_netns, is_bpffs, netns_inode, pin_dir, pinned_entries
from pylvs.engine.flow import DIR_IN, DIR_OUT
from pylvs.engine.hops import Hop
from pylvs.lab.netns import Netns, wait_for
from tests.integration.bpf_flows import nat, tun
from tests.unit.director import mac
from tests.unit.test_engine_nat import complete_partial, pseudo_sum

CIP, VIP, GW = "192.0.2.100", "192.0.2.1", "192.0.2.254"
DIP, RIP = "10.1.0.1", "10.1.0.13"


class WireLab:
    def __init__(self) -> None:
        self.net = Netns()

    def up(self) -> WireLab:
        net = self.net
        for role in ("cl", "dir", "rs"):
            net.add(role)
        net.veth("cl", "eth0", "dir", "vip0")
        net.veth("dir", "dip0", "rs", "eth0")
        net.addr("cl", "eth0", f"{CIP}/24")
        net.addr("dir", "vip0", f"{GW}/24")
        net.addr("dir", "dip0", f"{DIP}/24")
        net.addr("rs", "eth0", f"{RIP}/24")
        net.ip("cl", "route", "add", f"{VIP}/32", "via", GW)
        net.ip("rs", "route", "add", "default", "via", DIP)
        net.sysctl("dir", "net.ipv4.ip_forward", 0)
        self.links = {(role, name): self.link(role, name)
                      for role, name in (("cl", "eth0"), ("dir", "vip0"), ("dir", "dip0"), ("rs", "eth0"))}
        self.netns_path = f"/run/netns/{net.name('dir')}"
        return self

    def link(self, role: str, name: str) -> tuple[int, bytes]:
        info = json.loads(self.net.ip(role, "-j", "link", "show", "dev", name).stdout)[0]
        return info["ifindex"], mac(info["address"])

    def hops(self) -> tuple[Hop, Hop]:
        """Towards the real server out of dip0, towards the client out of vip0."""
        dip0, dip0_mac = self.links[("dir", "dip0")]
        vip0, vip0_mac = self.links[("dir", "vip0")]
        return Hop(dip0, self.links[("rs", "eth0")][1], dip0_mac), Hop(vip0, self.links[("cl", "eth0")][1], vip0_mac)

    def python(self, role: str, code: str, timeout: float = 20) -> str:
        r = self.net.exec(role, sys.executable, "-c", code, timeout=timeout, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def capture(self, role: str, ifname: str, flt: str) -> tuple[subprocess.Popen, str]:
        name = f"{role}-{ifname}-{time.monotonic_ns()}"
        path, log = os.path.join(self.net.tmp, name + ".pcap"), self.log(name + ".log")
        proc = self.net.popen(role, "tcpdump", "-i", ifname, "--immediate-mode", "-U", "-n", "-w", path, flt,
                              log=name + ".log")
        wait_for(lambda: log.exists() and "listening on" in log.read_text(), what="tcpdump")
        return proc, path

    def log(self, name: str) -> pathlib.Path:
        return pathlib.Path(self.net.tmp) / name

    def stop_capture(self, proc: subprocess.Popen, path: str) -> list:
        time.sleep(0.2)
        self.net.kill(proc, 2)
        return list(rdpcap(path))


def checksums_right(frame) -> bool:
    """IP and L4 checksums of a captured frame are right. A sender on a veth leaves its L4 checksum
    to the (virtual) NIC: then the field holds the pseudo-header sum, which must be that of the
    rewritten addresses, and completes to a valid checksum."""
    l4 = frame[IP].payload
    if l4.chksum == pseudo_sum(frame[IP].src, frame[IP].dst, frame[IP].proto, frame[IP].len - 20):
        frame = frame.__class__(complete_partial(frame))
    fresh = frame.__class__(bytes(frame))
    fresh[IP].payload.chksum = None
    fresh[IP].chksum = None
    return bytes(fresh.__class__(bytes(fresh))) == bytes(frame)


UDP_CLIENT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({cip!r}, {cport}))
s.connect(({vip!r}, {vport}))
s.settimeout(0.5)
for _ in range({tries}):
    s.send(b"ping")
    try:
        print(s.recv(2000).decode())
        break
    except OSError:
        pass
else:
    print("no answer")
"""


@pytest.fixture(scope="module")
def lab():
    lab = WireLab()
    try:
        lab.up()
        lab.net.popen("rs", sys.executable, "-m", "pylvs.lab.udp_echo", "--bind", f"{RIP}:5353", "--name", "rs1",
                      log="udp_echo.log")
        yield lab
    finally:
        lab.net.teardown()
        assert lab.net.leftovers() == []


@pytest.fixture
def fast(lab):
    with FastPath(pin_root=None, netns=lab.netns_path, max_flows=1024) as f:
        for ifname in ("vip0", "dip0"):
            f.attach(lab.links[("dir", ifname)][0])
        yield f
        for ifname in ("vip0", "dip0"):
            f.detach(lab.links[("dir", ifname)][0])


def ask(lab, cport: int, tries: int = 10) -> str:
    return lab.python("cl", UDP_CLIENT.format(cip=CIP, vip=VIP, cport=cport, vport=53, tries=tries)).strip()


def test_udp_round_trip_through_the_fast_path(lab, fast):
    inbound, outbound = nat(proto=17, cport=40053, vport=53, rport=5353, rip=RIP, client=CIP, vip=VIP,
                            hops=lab.hops())
    fast.flows.put(inbound)
    fast.flows.put(outbound)
    cap, path = lab.capture("cl", "eth0", "udp and src host " + VIP)
    before = fast.counters.read()
    # The echo server names the address it saw: the client's, as NAT keeps it. The client's socket is
    # connected to VIP:53, so the answer proves the reply's rewrite too.
    assert ask(lab, 40053) == f"rs1 {CIP}:40053 ping"
    frames = lab.stop_capture(cap, path)
    after = fast.counters.read()
    assert after["hit"] - before["hit"] >= 2
    assert fast.flows.refresh(inbound) and fast.flows.refresh(outbound)
    assert inbound.packets >= 1 and outbound.packets >= 1 and inbound.last_seen_ns > 0
    reply = frames[-1]
    assert reply[IP].src == VIP and reply[UDP].sport == 53 and reply[IP].dst == CIP and reply[IP].ttl == 63
    assert reply.src.replace(":", "") == lab.links[("dir", "vip0")][1].hex()
    assert checksums_right(reply)


def test_detached_program_sees_nothing(lab, fast):
    inbound, outbound = nat(proto=17, cport=40054, vport=53, rport=5353, rip=RIP, client=CIP, vip=VIP,
                            hops=lab.hops())
    fast.flows.put(inbound)
    fast.flows.put(outbound)
    vip0 = lab.links[("dir", "vip0")][0]
    assert fast.detach(vip0) and not fast.detach(vip0)
    before = fast.counters.read()
    assert ask(lab, 40054, tries=2) == "no answer"  # the director's kernel does not forward
    assert fast.counters.read()["hit"] == before["hit"]
    fast.attach(vip0)
    fast.attach(vip0)  # attaching again replaces our filter, it does not add a second one
    shown = lab.net.exec("dir", "tc", "filter", "show", "dev", "vip0", "ingress").stdout
    assert [line for line in shown.splitlines() if "handle" in line] == [
        line for line in shown.splitlines() if "handle 0x1f10 pylvs_fastpath" in line] != []
    assert ask(lab, 40054) == f"rs1 {CIP}:40054 ping"


TCP_SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(({addr!r}, {port}))
srv.listen(1)
print("ready", flush=True)
conn, peer = srv.accept()
{then}
"""


def tcp_server(lab, role: str, addr: str, port: int, then: str) -> subprocess.Popen:
    """A one-connection TCP server in `role` that does `then` (Python, with `conn`) once accepted."""
    log = f"tcp-{role}-{port}.log"
    proc = lab.net.popen(role, sys.executable, "-c", TCP_SERVER.format(addr=addr, port=port, then=then), log=log)
    wait_for(lambda: "ready" in lab.log(log).read_text(), what="tcp server")
    return proc

TCP_CLIENT = """
import socket, hashlib
s = socket.create_connection(({vip!r}, 80), source_address=({cip!r}, {cport}), timeout=10)
got = b""
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    got += b
print(len(got), hashlib.sha256(got).hexdigest())
"""


def test_tcp_download_runs_through_the_fast_path_with_gso(lab, fast):
    """The director's kernel does the handshake (nftables DNAT, as punted segments would reach the
    engine); every other segment, GSO super-frames with partial checksums and the FINs, is ours."""
    net = lab.net
    net.sysctl("dir", "net.ipv4.ip_forward", 1)
    rules = (f"table ip plvsbpf {{\n chain pre {{\n type nat hook prerouting priority -100;\n"
             f" ip daddr {VIP} tcp dport 80 dnat to {RIP}:8080;\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", net.name("dir"), "nft", "-f", "-"], input=rules, text=True, check=True)
    net.sysctl("dir", "net.netfilter.nf_conntrack_tcp_be_liberal", 1)
    try:
        inbound, outbound = nat(proto=6, cport=40080, vport=80, rport=8080, rip=RIP, client=CIP, vip=VIP,
                                hops=lab.hops())
        fast.flows.put(inbound)
        fast.flows.put(outbound)
        server = tcp_server(lab, "rs", RIP, 8080, "conn.sendall(bytes(range(256)) * 4096 * 4)\nconn.close()")
        before = fast.counters.read()
        cap, path = lab.capture("cl", "eth0", f"tcp and src host {VIP}")
        out = lab.python("cl", TCP_CLIENT.format(vip=VIP, cip=CIP, cport=40080), timeout=30).split()
        frames = lab.stop_capture(cap, path)
        expected = bytes(range(256)) * 4096 * 4  # what the server sends
        assert out == [str(len(expected)), hashlib.sha256(expected).hexdigest()]
        after = fast.counters.read()
        # The last ACK took both entries out (retired by the program): their last counts were reported.
        retired = final_counts(fast, outbound, inbound)
        (outbound.packets, outbound.bytes, _), (inbound.packets, inbound.bytes, _) = (
            retired.counts[DIR_OUT], retired.counts[DIR_IN])
        assert retired.deleted == 1 << DIR_IN | 1 << DIR_OUT
        assert fast.flows.lookup(outbound.pack_key()) is None and fast.flows.lookup(inbound.pack_key()) is None
        # Every byte of the download went through the program, except a last segment that carries the FIN.
        assert outbound.bytes > len(expected) - 65536
        assert inbound.packets >= 1  # the client's ACKs
        assert after["punt_tcp_flags"] - before["punt_tcp_flags"] >= 1  # the SYN (its answer goes by the entry)
        assert after["tcp_event"] - before["tcp_event"] >= 2  # both FINs forwarded here, their changes reported
        assert outbound.packets < len(expected) // 1448  # super-frames, not MTU-sized segments
        assert len(frames) >= 10 and max(f[IP].len for f in frames) > 1500  # (tcpdump may miss some)
        assert all(f[TCP].sport == 80 and f[IP].ttl == 63 and checksums_right(f) for f in frames)
        net.kill(server)
    finally:
        subprocess.run(["ip", "netns", "exec", net.name("dir"), "nft", "delete", "table", "ip", "plvsbpf"])
        net.sysctl("dir", "net.ipv4.ip_forward", 0)


def final_counts(fast, *entries) -> RetiredEvent:
    """The program's report of the connection's end (the ACK after TIME_WAIT, a RST): its entries'
    last counts, read from the event ring."""
    keys = {e.key for e in entries}
    (retired,) = [e for e in fast.events.read() if isinstance(e, RetiredEvent) and e.key in keys]
    return retired


# -- pinning: a restarted loader finds the flows -------------------------------------------------

@pytest.fixture
def bpffs(tmp_path):
    root = str(tmp_path / "bpffs")
    assert not is_bpffs(root)
    ensure_bpffs(root)
    try:
        assert is_bpffs(root)
        yield root
    finally:
        subprocess.run(["umount", root], check=True)


def test_flow_map_is_pinned_per_netns_and_survives_a_restart(lab, bpffs):
    inbound, outbound = nat(proto=17, cport=40055, vport=53, rport=5353, rip=RIP, client=CIP, vip=VIP,
                            hops=lab.hops())
    vip0, dip0 = lab.links[("dir", "vip0")][0], lab.links[("dir", "dip0")][0]
    first = FastPath(pin_root=bpffs, netns=lab.netns_path, max_flows=1024)
    assert first.pin_path == os.path.join(bpffs, "pylvs", f"netns-{netns_inode(lab.netns_path)}", "flows")
    assert first.pin_path == os.path.join(pin_dir(bpffs, lab.netns_path), "flows")
    assert netns_inode(lab.netns_path) != netns_inode()
    first.flows.put(inbound)
    first.flows.put(outbound)
    first.attach(vip0)
    first.attach(dip0)
    assert ask(lab, 40055) == f"rs1 {CIP}:40055 ping"
    # "lvsd stops": the attached program and its pinned map stay in the kernel and keep forwarding.
    first.close()
    assert ask(lab, 40055) == f"rs1 {CIP}:40055 ping"
    # "lvsd starts again": a new load in the same namespace gets the same map, flows and counts kept,
    # and its program replaces the old one on the interfaces.
    with FastPath(pin_root=bpffs, netns=lab.netns_path, max_flows=1024) as second:
        keys = {k for k, _ in second.flows.items()}
        assert keys == {inbound.pack_key(), outbound.pack_key()}
        assert second.flows.refresh(inbound) and inbound.packets >= 2
        second.attach(vip0)
        second.attach(dip0)
        try:
            before = second.counters.read()["hit"]
            assert ask(lab, 40055) == f"rs1 {CIP}:40055 ping"
            assert second.counters.read()["hit"] >= before + 2  # the new program's counters: it ran
        finally:
            second.detach(vip0)
            second.detach(dip0)
    # Another size asked for: the pinned map is kept with its flows (applied after --flush-flows).
    with FastPath(pin_root=bpffs, netns=lab.netns_path, max_flows=2048) as third:
        assert pinned_entries(third.pin_path) == 1024
        assert {k for k, _ in third.flows.items()} == {inbound.pack_key(), outbound.pack_key()}


# -- TUN: a TCP GSO super-frame leaves as one tunnel GSO frame ------------------------------------

TCP_SENDER = """
import socket, struct
s = socket.create_connection(({vip!r}, 80), source_address=({cip!r}, {cport}), timeout=2)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.setblocking(False)
try:
    s.send(bytes(range(256)) * 256)
except OSError:
    pass
import time
time.sleep(1)
s.close()
"""


def set_ipxip4_segmentation(lab, on: bool) -> None:
    """Whether dip0 (a veth) takes ipip GSO frames as they are or has the kernel segment them."""
    def change() -> None:
        tool = Ethtool()
        try:
            features = tool.get_features("dip0")
            features.features["tx-ipxip4-segmentation"].enable = on
            tool.set_features("dip0", features)
        finally:
            tool.close()
    in_netns(lab.netns_path, change)


@pytest.mark.parametrize("segmented", [False, True], ids=["whole", "kernel-segmented"])
def test_tun_keeps_tcp_gso_super_frames_whole(lab, fast, segmented):
    """The handshake is with the director's own stack (VIP on its lo; SYNs are punted); the data
    segments match the TUN recipe and must reach the real server's link inside ipip: as one tunnel
    GSO frame, or, where the egress device cannot take that, as the MSS-sized ipip segments the
    kernel cuts from it (which checks the GSO metadata the program left)."""
    net = lab.net
    net.ip("dir", "addr", "add", f"{VIP}/32", "dev", "lo")
    for role, ifname in (("dir", "dip0"), ("rs", "eth0")):
        net.ip(role, "link", "set", ifname, "mtu", "1600")  # room for 1500-byte packets and the tunnel
    set_ipxip4_segmentation(lab, not segmented)
    try:
        hop = lab.hops()[0]
        hop.mtu = 1600
        entry = tun("ipip", cport=40090, hop=hop)
        fast.flows.put(entry)
        sink = tcp_server(lab, "dir", VIP, 80, "conn.recv(1 << 20)")
        cap, path = lab.capture("rs", "eth0", "ip proto 4")
        lab.python("cl", TCP_SENDER.format(vip=VIP, cip=CIP, cport=40090))
        frames = lab.stop_capture(cap, path)
        net.kill(sink)
    finally:
        set_ipxip4_segmentation(lab, True)
        net.ip("dir", "addr", "del", f"{VIP}/32", "dev", "lo")
        for role, ifname in (("dir", "dip0"), ("rs", "eth0")):
            net.ip(role, "link", "set", ifname, "mtu", "1500")
    # The sender's RST closed the connection and took the entry out, with its counts reported.
    entry.packets = final_counts(fast, entry).counts[DIR_IN][0]
    assert entry.packets >= 1
    assert frames, "nothing reached the real server's link"
    data = bytes(range(256)) * 256
    seen = {}
    for f in frames:
        outer = f[IP]
        assert (outer.src, outer.dst, outer.proto, outer.ttl) == (DIP, RIP, 4, 63)
        assert outer.len == len(bytes(outer)) and checksums_right(f.__class__(bytes(f)))
        inner = outer.payload
        assert (inner.src, inner.dst, inner[TCP].dport, inner.ttl) == (CIP, VIP, 80, 63)
        inner_frame = f.__class__(bytes(f)[:14]) / inner
        assert checksums_right(inner_frame.__class__(bytes(inner_frame)))
        payload = bytes(inner[TCP].payload)
        if len(payload) > len(seen.get(inner[TCP].seq, b"")):  # retransmissions may be shorter
            seen[inner[TCP].seq] = payload
    if segmented:
        assert max(f[IP].len for f in frames) <= 1520
    else:  # one super-frame carries many MSS-sized segments: the kernel kept it whole
        assert max(f[IP].len for f in frames) > 3000
    first = min(seen)
    stream = b""
    for seq in sorted(seen):
        if seq - first == len(stream):
            stream += seen[seq]
        elif seq - first < len(stream):  # overlapping: must agree with what came before
            assert stream[seq - first:seq - first + len(seen[seq])] == seen[seq][:len(stream) - (seq - first)]
    assert len(stream) > 3000 and data.startswith(stream)
