"""A pylvs director paired by VRRP with Debian's keepalived (issue 16): they agree on master and
backup by priority, pylvs takes over when keepalived stops, and keepalived takes back with
preempt. The adverts of both sides are checked on the wire with scapy."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP, VRRPv3

from pylvs.lab.netns import Capture, LabError, wait_for
from pylvs.lab.topology_vrrp import ADDRS, VIP, VrrpLab, keepalived_conf

PYLVS_PRIO, KEEPALIVED_PRIO = 100, 150
RS = "192.0.2.11"  # no real server needed: lvsd answers ARP for the VIPs it owns


def client_arp(lab: VrrpLab) -> str | None:
    """Who answers the client's ARP for the VIP now (a fresh resolution, not the cache)."""
    lab.net.exec("client", "ip", "neigh", "flush", "dev", "eth0", check=False)
    send = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{VIP}', 9))"
    lab.net.exec("client", sys.executable, "-c", send)
    found: list[str] = []

    def resolved() -> bool:
        out = lab.net.exec("client", "ip", "neigh", "show", VIP).stdout.split()
        found[:] = [out[out.index("lladdr") + 1]] if "lladdr" in out else []
        return bool(found)

    try:
        wait_for(resolved, timeout=3, what="ARP for the VIP")
    except LabError:
        return None
    return found[0]


def adverts(capture: Capture, src: str, layer) -> list:
    return [p for p in capture.packets() if IP in p and p[IP].src == src and layer in p]


def check_on_wire(pkt, layer, version: int, prio: int, src_mac: str, interval: float) -> None:
    ip = pkt[IP]
    assert (ip.dst, ip.ttl, ip.proto) == ("224.0.0.18", 255, 112)
    assert pkt[Ether].src == src_mac and pkt[Ether].dst == "01:00:5e:00:00:12"
    v = pkt[layer]
    assert (v.version, v.type, v.vrid, v.priority, v.ipcount, v.addrlist) == (version, 1, 51, prio, 1, [VIP])
    assert v.adv == (interval if version == 2 else round(interval * 100))
    again = IP(bytes(ip))
    again[layer].chksum = None  # scapy computes the checksum again (v3: with the pseudo-header)
    assert IP(bytes(again))[layer].chksum == v.chksum


@pytest.fixture(scope="module", params=[2, 3], ids=["vrrpv2-pass", "vrrpv3"])
def pair(request):
    version = request.param
    lab = VrrpLab(n_rs=0).up()
    try:
        options = {"gateway": False, "sync": False, "version": version,
                   "advert_int": 1 if version == 2 else 0.5, "auth": "k3epal1v" if version == 2 else None}
        lab.notified = os.path.join(lab.net.tmp, "notify.out")
        script = os.path.join(lab.net.tmp, "notify.sh")
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\necho "$@" >> {lab.notified}\n')
        os.chmod(script, 0o755)
        service = keepalived_conf(PYLVS_PRIO, rips=[RS], notify=script, **options)
        lab.start_lvsd(lab.d1, service)
        lab.kad_conf = keepalived_conf(KEEPALIVED_PRIO, **options)
        lab.options = options
        lab.kad.start(lab.kad_conf)
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def test_pylvs_and_keepalived_agree_takeover_and_preempt(pair):
    lab, o = pair, pair.options
    layer = VRRP if o["version"] == 2 else VRRPv3
    d1_mac, d2_mac = lab.mac(lab.d1, "vip0"), lab.mac(lab.d2, "vip0")
    # 1. keepalived has the higher priority: it is master, pylvs backs it up and owns nothing.
    wait_for(lambda: "Entering MASTER STATE" in lab.kad.output(), timeout=10, what="keepalived master")
    with Capture(lab.net, "client", "eth0", "ip proto 112", name="ka") as cap:
        time.sleep(2.2 * o["advert_int"])
    assert lab.vrrp_state(lab.d1) == {"VI_1": "BACKUP"}
    assert lab.has_addr(lab.d2, "vip0", VIP) and not lab.has_addr(lab.d1, "vip0", VIP)
    theirs = adverts(cap, ADDRS[lab.d2.role][0], layer)
    assert len(theirs) >= 2 and not adverts(cap, ADDRS[lab.d1.role][0], layer)  # a backup stays silent
    check_on_wire(theirs[0], layer, o["version"], KEEPALIVED_PRIO, d2_mac, o["advert_int"])
    if o["version"] == 2:
        assert theirs[0][VRRP].authtype == 1
    assert client_arp(lab) == d2_mac
    # 2. keepalived stops (priority 0 advert): pylvs takes over after its skew time.
    with Capture(lab.net, "client", "eth0", "ip proto 112 or arp", name="takeover") as cap:
        lab.kad.stop()
        stopped = time.monotonic()
        wait_for(lambda: lab.vrrp_state(lab.d1) == {"VI_1": "MASTER"}, timeout=10, what="pylvs master")
        took = time.monotonic() - stopped
        time.sleep(2.2 * o["advert_int"])
    assert took < 3 * o["advert_int"], took  # the priority-0 advert: skew time, not the down interval
    zero = [p for p in adverts(cap, ADDRS[lab.d2.role][0], layer) if p[layer].priority == 0]
    assert zero, "keepalived's priority-0 advert"
    ours = adverts(cap, ADDRS[lab.d1.role][0], layer)
    assert len(ours) >= 2
    for pkt in ours:
        check_on_wire(pkt, layer, o["version"], PYLVS_PRIO, d1_mac, o["advert_int"])
    if o["version"] == 2:
        assert ours[0][VRRP].authtype == 1
        assert ours[0][VRRP].auth1.to_bytes(4, "big") + ours[0][VRRP].auth2.to_bytes(4, "big") == b"k3epal1v"
    garps = [p for p in cap.packets() if ARP in p and p[ARP].psrc == VIP == p[ARP].pdst and p[ARP].hwsrc == d1_mac]
    assert len(garps) >= 5  # vrrp_garp_master_repeat 5
    assert client_arp(lab) == d1_mac  # lvsd owns the VIP now (answers ARP and ping)
    # 3. keepalived comes back with the higher priority and preempts.
    lab.kad.start(lab.kad_conf)
    wait_for(lambda: lab.vrrp_state(lab.d1) == {"VI_1": "BACKUP"}, timeout=15, what="keepalived preempting")
    wait_for(lambda: lab.has_addr(lab.d2, "vip0", VIP), timeout=5, what="keepalived's VIP")
    assert client_arp(lab) == d2_mac
    status = lab.d1.lvsadm("--vrrp").stdout.splitlines()
    assert status[0].split() == ["Instance", "State", "VRID", "Ver", "Prio", "Interface", "Master", "Addresses"]
    assert status[1].split() == ["VI_1", "BACKUP", "51", f"v{o['version']}", "100", "vip0", ADDRS[lab.d2.role][0], VIP]
    # keepalived's notify convention: INSTANCE name state priority, once for every transition (with
    # advert_int 0.5, lvsd may time out once before keepalived, started after it, speaks).
    became_master = json.loads(lab.d1.lvsadm("--vrrp", "--json").stdout)["instances"][0]["stats"]["became_master"]
    with open(lab.notified) as f:
        lines = f.read().splitlines()
    assert lines == ["INSTANCE VI_1 BACKUP 100"] + ["INSTANCE VI_1 MASTER 100", "INSTANCE VI_1 BACKUP 100"] * \
        became_master
    assert became_master in (1, 2)
