"""Connection sync over an IPv6 group (ipvsadm --mcast-group ff02::...): a master and a --backup-only
backup exchange IPv6 and IPv4 connections in IPv6 multicast datagrams on the LAN, and the backup lists
the master's connections of both families."""

from __future__ import annotations

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from pylvs.lab import ipv6 as lab6
from pylvs.lab.netns import Capture, wait_for
from pylvs.lab.topology_ha import VIP, VIP6, HaNatLab
from tests.integration.test_sync import conns

GROUP = "ff02::81"
DAEMON = ("--mcast-interface", "dip0", "--mcast-group", GROUP, "--syncid", "6", "--mcast-port", "8849")
DAEMON_LINE = "{} sync daemon (mcast=dip0, syncid=6, maxlen=1452, group=ff02::81, port=8849, ttl=1)\n"


@pytest.fixture(scope="module")
def ha6():
    lab = HaNatLab(big_mb=1, ipv6=True).up()
    try:
        lab.master.start()
        lab.backup.start("--backup-only")
        lab.backup.lvsadm("--start-daemon", "backup", *DAEMON)
        lab.backup.lvsadm("-R", stdin=lab.rules())
        lab.master.lvsadm("-R", stdin=lab.rules())
        lab.master.lvsadm("--start-daemon", "master", *DAEMON)
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def test_ipv6_group_daemons_are_listed_as_ipvsadm_lists_them(ha6):
    assert ha6.master.lvsadm("-L", "--daemon").stdout == DAEMON_LINE.format("master")
    assert ha6.backup.lvsadm("-L", "--daemon").stdout == DAEMON_LINE.format("backup")


def test_the_backup_follows_ipv6_and_ipv4_connections_over_the_ipv6_group(ha6):
    with Capture(ha6.net, "backup", "dip0", "udp port 8849", name="sync6") as capture:
        for url in (lab6.url6(VIP6), f"http://{VIP}/") * 3:
            r = ha6.curl(url)
            assert r.returncode == 0 and r.stdout.strip() in ("rs1", "rs2"), (url, r.stderr)
        master = conns(ha6.master)
        assert {key[1] for key in master} == {f"[{VIP6}]:80", f"{VIP}:80"}, master
        assert len(master) == 6 and set(master.values()) <= {"TIME_WAIT", "CLOSE"}, master
        wait_for(lambda: conns(ha6.backup) == master, timeout=8, what="the backup's connection table")
    masters = ha6.net.exec("master", "ip", "-6", "-brief", "addr", "show", "dev", "dip0").stdout
    masters = {cidr.split("/")[0] for cidr in masters.split()[2:]}  # the source is one of the master's
    datagrams = [p for p in capture.packets() if UDP in p]
    assert datagrams, "no sync message seen on the LAN"
    for p in datagrams:  # all of them IPv6 multicast, none over IPv4
        assert IPv6 in p and p[IPv6].dst == GROUP and p[IPv6].hlim == 1, p.summary()
        assert p[IPv6].src in masters and p[UDP].dport == 8849
        assert p[UDP].load[1] == 6  # the syncid in the version-1 header
