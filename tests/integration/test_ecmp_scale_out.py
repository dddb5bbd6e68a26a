"""Active/active scale-out (issue 16): three directors announce one VIP over BGP to a BIRD router
that spreads flows over them with ECMP (L4 hash); DR, `mh` over the same table everywhere.

A director cut off (its LAN port down: no goodbye) is withdrawn by the router when the hold time
runs out; its flows and the others the route change moves land on directors that learnt them
through the sync daemons, keep their real server and do not break; the director coming back moves
flows again without breaking any. Without sync, a stopped director is withdrawn at once and exactly
the moved flows break (mh alone does not schedule a connection's later packets). A stopped director
rejoining: test_ecmp_rejoin.py. The numbers are printed (pytest -s) and recorded in docs/bgp-ecmp.md.
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from pylvs.lab.ecmp import VIP, moved, on, running
from pylvs.lab.netns import wait_for

HOLD = 3
CONNS = 60
DOWNLOADS = 6
BIG_MB = 12  # at 1 MB/s each download lasts the whole of the cut-and-mend phase

pytestmark = pytest.mark.skipif(shutil.which("bird") is None and shutil.which("/usr/sbin/bird") is None,
                                reason="BIRD 2 is missing (make deps installs bird2)")


@pytest.fixture(scope="module")
def ecmp():
    with running(hold_time=HOLD, big_mb=BIG_MB) as lab:
        yield lab
    assert lab.net.leftovers() == []


def test_every_director_announces_the_vip_and_the_router_spreads_flows_over_them(ecmp):
    def sessions() -> list[list[tuple[str, str, int]]]:
        return [[(p["address"], p["state"], p["exported"]) for p in status["peers"]]
                for status in ecmp.each(lambda d: d.bgp())]

    # lvsd reads its sessions' state every second: the router may have the routes a moment before.
    wait_for(lambda: sessions() == [[("192.0.2.254", "Established", 1)]] * 3, timeout=5, what="lvsadm --bgp")
    for status in ecmp.each(lambda d: d.bgp()):
        assert status["announced"] == [VIP] and status["local_as"] == 65001, status
    text = ecmp.directors[0].lvsadm("--bgp").stdout
    assert f"Announced: {VIP}/32" in text and "Established" in text, text
    probe = ecmp.probe("probe-spread", 30)
    spread = ecmp.flows(0.5)
    probe.finish()
    assert len(spread) == 30 and all(len(d) == 1 for d in spread.values()), spread
    assert set().union(*spread.values()) == {d.addr for d in ecmp.directors}, spread
    served = {ecmp.net.exec("client", "curl", "-sS", "--max-time", "3", f"http://{VIP}/").stdout.strip()
              for _ in range(10)}
    assert served <= {"rs1", "rs2", "rs3"} and len(served) >= 2, served


def test_a_cut_director_is_withdrawn_within_the_hold_time_and_no_flow_breaks_with_mh_and_sync(ecmp):
    d1 = ecmp.directors[0]
    # Until the hold time runs out the router still sends a third of the flows into the cut: they wait
    # (TCP retransmits), and only a reset, or no answer for 10 s, counts as broken.
    probe = ecmp.probe("probe-sync", CONNS, timeout=10.0)
    downloads = [ecmp.download(f"dl{i}") for i in range(DOWNLOADS)]
    wrk = ecmp.wrk(seconds=12)
    # Past their third packet every connection was synced; the message leaves within 2 s and a tick.
    time.sleep(3.0)
    before = ecmp.flows(0.5)
    ecmp.cut(d1)
    withdrawn = ecmp.wait_nexthops({d.addr for d in ecmp.directors[1:]}, timeout=HOLD + 5)
    off = ecmp.flows(2.0)  # the flows that were in the cut retransmit into the new route by then
    ecmp.mend(d1)
    back = ecmp.wait_nexthops({d.addr for d in ecmp.directors}, timeout=20)
    again = ecmp.flows(2.0)
    records = probe.finish()
    for proc in downloads:
        proc.wait(40)
    wrk.wait(30)
    wrk_out = ecmp.output("wrk")
    broken = [r for r in records if r["error"]]
    switched = [r for r in records if len(r["servers"]) != 1]
    dl = [ecmp.output(f"dl{i}").split() for i in range(DOWNLOADS)]
    on_cut = on(before, d1.addr)
    print(f"\nmh + sync: {len(before)} client connections, {len(on_cut)} on the cut director; withdrawn "
          f"{withdrawn:.2f}s after the cut (hold time {HOLD}s);"
          f" moved at the cut {len(moved(before, off))}, at the return {len(moved(off, again))} "
          f"(back after {back:.2f}s); broken probe connections {len(broken)}/{len(records)} (longest wait "
          f"{max(r['max_wait'] for r in records):.2f}s), downloads "
          f"{sum(p.returncode != 0 for p in downloads)}/{DOWNLOADS} failed; wrk: "
          f"{' '.join(line.strip() for line in wrk_out.splitlines() if 'requests in' in line or 'errors' in line)}")
    assert withdrawn <= HOLD + 1.0, f"withdrawn after {withdrawn:.2f}s with a {HOLD}s hold time"
    assert on_cut and not on(off, d1.addr) and on(again, d1.addr), (before, off, again)
    assert moved(off, again), "the director's return moved no flow"
    assert broken == [] and switched == [], (broken, switched)
    assert all(r["requests"] > 50 for r in records)
    assert [p.returncode for p in downloads] == [0] * DOWNLOADS, dl
    assert all(fields[:2] == ["200", str(BIG_MB << 20)] for fields in dl), dl
    assert "Socket errors" not in wrk_out and "Non-2xx" not in wrk_out, wrk_out


def test_without_sync_a_stopped_director_is_withdrawn_at_once_and_only_the_moved_flows_break(ecmp):
    d1, d2, d3 = ecmp.directors
    ecmp.each(lambda d: d.stop_sync())
    probe = ecmp.probe("probe-nosync", CONNS, timeout=2.5)
    before = ecmp.flows(0.5)
    assert len(before) == CONNS and all(len(d) == 1 for d in before.values()), before
    # Without sync each director knows only its own flows: where the switch saw a flow go is where
    # lvsd has it.
    for d, seen in zip(ecmp.directors, ecmp.each(lambda d: d.conn_ports()), strict=True):
        assert on(before, d.addr) <= seen, d.role
    stop_at = time.monotonic()
    d2.proc.send_signal(signal.SIGTERM)  # lvsd alone: it withdraws, then stops BIRD
    ecmp.wait_nexthops({d1.addr, d3.addr}, timeout=HOLD + 5)
    withdrawn = time.monotonic() - stop_at
    wait_for(lambda: d2.proc.poll() is not None, timeout=10, what="d2's lvsd to stop")
    after = ecmp.flows(1.0)
    time.sleep(2.5)  # a moved flow stalls past the probe's 2.5 s timeout
    records = probe.finish()
    broken = {r["port"] for r in records if r["error"]}
    shifted = moved(before, after)
    on_stopped = len(on(before, d2.addr))
    print(f"\nno sync: {len(records)} connections, {on_stopped} on the stopped director, withdrawn after "
          f"{withdrawn:.2f}s; moved {len(shifted)}, broken {len(broken)}")
    assert withdrawn < 1.5, f"withdrawn after {withdrawn:.2f}s"
    assert on_stopped > 0
    assert broken == shifted, (sorted(broken), sorted(shifted))
