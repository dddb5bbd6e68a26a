"""lvsd --flow-entries: the fast path's flow map at its smallest size, more connections than it holds,
and a restart that asks for another size.

A NAT connection takes two entries (one a direction): 700 connections held open through a map of
1024 entries want 1400, so the kernel evicts; every connection still answers with the server's
bytes, the evicted directions through the engine (the program's misses). `lvsadm --datapath` says
the map's size and how many entries are in use. A restarted lvsd asking for another size keeps the
pinned map, its size and its flows (one log line says how to apply the new one); after a stop with
--flush-flows the next lvsd makes the map of the size asked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from pylvs.datapath.bpf.flowsize import flow_map_bytes
from pylvs.datapath.bpf.loader import FastPath
from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab
from tests.integration.test_fastpath_continuity import lab_with_rules, status
from tests.integration.test_fastpath_continuity import start as start_with_rules

SMALL = 1024  # lvsd's smallest flow map
HELD = 700    # NAT connections held open at once: 1400 entries wanted


@pytest.fixture(scope="module")
def lab():
    yield from lab_with_rules(NatLab(n_rs=2), lambda lab: lab.up(udp=False), VIP, "rport", "-m")


def start(lab, *extra: str) -> None:
    start_with_rules(lab, *extra)
    assert lab.lvsd.poll() is None, lab.lvsd_log()


class Held:
    """pylvs.lab.held_conns in the client: `count` connections, a first round of requests, then (go())
    a second one on the same connections."""

    def __init__(self, lab, count: int, name: str) -> None:
        self.lab, self.count = lab, count
        tmp = lab.net.tmp
        self.ready, self.go_file, self.log = (os.path.join(tmp, f"{name}.{x}") for x in ("ready", "go", "log"))
        self.proc = lab.net.popen("client", sys.executable, "-m", "pylvs.lab.held_conns", "--host", VIP,
                                  "--count", str(count), "--file", os.path.join(tmp, "big.bin"),
                                  "--ready", self.ready, "--go", self.go_file, log=f"{name}.log")
        wait_for(lambda: os.path.exists(self.ready) or self.proc.poll() is not None, timeout=30,
                 what=f"{count} connections and their first answers")
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        with open(self.log) as f:
            return f.read()

    def go(self) -> dict:
        """The second round; the client's summary."""
        open(self.go_file, "w").close()
        assert self.proc.wait(30) == 0, self.output()
        return json.loads(self.output())

    def close(self) -> None:
        self.lab.net.kill(self.proc)


def test_the_kernel_charges_what_the_help_says_an_entry_costs():
    """flow_map_bytes (lvsd --help's 240 bytes an entry) against the kernel's own account of the map."""
    for entries in (SMALL, 65536, 100_000):
        fast = FastPath(pin_root=None, max_flows=entries)
        try:
            with open(f"/proc/self/fdinfo/{fast.flows.fd}") as f:
                info = f.read()
        finally:
            fast.close()
        assert int(re.search(r"max_entries:\s+(\d+)", info).group(1)) == entries
        memlock = int(re.search(r"memlock:\s+(\d+)", info).group(1))
        assert 0 <= memlock - flow_map_bytes(entries) < 4096, (entries, memlock)  # + the LRU's per-CPU lists


def test_more_connections_than_the_map_holds_all_get_their_bytes(lab):
    start(lab, "--flow-entries", str(SMALL), "--flush-flows")
    held = None
    try:
        assert lab.curl(f"http://{VIP}/").returncode == 0  # the director learns its neighbours
        held = Held(lab, HELD, "many")
        wait_for(lambda: status(lab)["offloaded_conns"] == HELD, timeout=10, what="every connection offloaded")
        before = status(lab)
        # The engine wrote 1400 entries into a map of 1024: the kernel evicted the least recently used.
        assert before["flow_entries"] == SMALL and before["flow_map_bytes"] == flow_map_bytes(SMALL)
        assert SMALL // 2 < before["flow_entries_used"] <= SMALL, before
        text = lab.lvsadm("--datapath").stdout
        assert f"flow map: {SMALL} entries (240 KiB of kernel memory), " in text, text
        summary = held.go()
        assert summary == {"first": HELD, "second": HELD, "errors": []}, summary
        after = status(lab)["counters"]
        # The evicted directions went to the engine (misses, at least one a missing entry); the
        # rest through the kernel (hits).
        assert after["miss"] - before["counters"]["miss"] >= 2 * HELD - SMALL, (before, after)
        assert after["hit"] > before["counters"]["hit"], (before, after)
        assert lab.lvsd.poll() is None
    finally:
        if held is not None:
            held.close()
        lab.stop_lvsd()


def test_a_restart_with_another_size_keeps_the_pinned_map_and_its_flows(lab):
    start(lab, "--flow-entries", str(SMALL))
    held = None
    try:
        assert lab.curl(f"http://{VIP}/").returncode == 0
        held = Held(lab, 4, "restart")
        wait_for(lambda: status(lab)["offloaded_conns"] == 4, timeout=10, what="the connections offloaded")
        assert lab.stop_lvsd(signal.SIGTERM) == 0
        start(lab, "--flow-entries", str(4 * SMALL), "--flush-flows")
        wait_for(lambda: "adopted 4 connections" in lab.lvsd_log(), timeout=5, what="the adoption")
        log = lab.lvsd_log()
        kept = [line for line in log.splitlines() if "keeping the pinned flow map" in line]
        assert len(kept) == 1 and f"of {SMALL} entries, and its flows; --flow-entries {4 * SMALL} applies after " \
            "a stop with --flush-flows, or after removing the pin (rm " in kept[0], log
        now = status(lab)
        assert now["flow_entries"] == SMALL and now["flow_entries_used"] == 8, now  # NAT: two a connection
        assert held.go() == {"first": 4, "second": 4, "errors": []}
        # This lvsd was started with --flush-flows: its stop takes the map out, the next one has the new size.
        assert lab.stop_lvsd() == 0
        start(lab, "--flow-entries", str(4 * SMALL), "--flush-flows")
        now = status(lab)
        assert now["flow_entries"] == 4 * SMALL and now["flow_entries_used"] == 0, now
        assert "keeping the pinned flow map" not in lab.lvsd_log().split("data path: bpf")[-1]
        assert lab.curl(f"http://{VIP}/").returncode == 0
    finally:
        if held is not None:
            held.close()
        lab.stop_lvsd()
