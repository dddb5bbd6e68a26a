"""A DR download through the kernel fast path survives an lvsd killed with -9.

A DR recipe rewrites only MACs: the next lvsd finds the connection's real server by the recipe's
destination MAC among the service's real servers' next hops (two here, so the choice is a real one)."""

from __future__ import annotations

import signal

import pytest

from pylvs.lab import servers
from pylvs.lab.netns import wait_for
from pylvs.lab.topologies_dr_tun import VIP, DrLab
from tests.integration.test_fastpath_continuity import (
    acknowledged,
    download,
    established,
    finished,
    lab_with_rules,
    serving,
    start,
    status,
)

SIZE = 32 << 20


def up(lab: DrLab) -> None:
    lab.up()
    servers.make_big_file(lab.net, 64 << 20)


@pytest.fixture(scope="module")
def lab():
    yield from lab_with_rules(DrLab(n_rs=2), up, VIP, "port", "-g")


def inpkts(lab) -> int:
    line = lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines()[3]
    return int(line.split()[3])


def test_a_dr_download_goes_on_across_a_kill_and_is_adopted_by_its_real_servers_mac(lab):
    start(lab)
    for _ in lab.rips:  # round robin: the director learns both real servers' MACs
        assert lab.curl(f"http://{VIP}/").returncode == 0
    proc = download(lab, "dr.bin", SIZE)
    try:
        wait_for(lambda: status(lab)["offloaded_conns"] == 1, timeout=5, what="the download in the kernel map")
        rip = serving(lab)
        assert lab.stop_lvsd(signal.SIGKILL) == -signal.SIGKILL
        acknowledged(lab, 4 << 20)  # the client's ACKs still reach the real server, through the kernel
        start(lab)
        wait_for(lambda: "adopted 1 connections" in lab.lvsd_log(), timeout=3, what="the adoption")
        listing = established(lab)
        assert len(listing) == 1 and f"{rip}:{lab.port}" in listing[0], listing
        assert status(lab)["offloaded_conns"] == 1
        first = inpkts(lab)
        finished(lab, proc, "dr.bin", SIZE)
        assert inpkts(lab) > first + 20  # the kernel's packets, counted by this lvsd
    finally:
        lab.net.kill(proc)
        lab.stop_lvsd()
