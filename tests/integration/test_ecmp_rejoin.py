"""Active/active scale-out (issue 16): a director stops (lvsd withdraws the VIP at once) and later
rejoins a cluster that carries traffic by the documented procedure (sync daemons and the table with
weights 0 first, the weights once it has learnt the others' connections): with mh and sync no flow
breaks, neither when its flows leave it nor when they come back. Lab: pylvs.lab.ecmp."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from pylvs.lab.ecmp import moved, on, running

CONNS = 60

pytestmark = pytest.mark.skipif(shutil.which("bird") is None and shutil.which("/usr/sbin/bird") is None,
                                reason="BIRD 2 is missing (make deps installs bird2)")


@pytest.fixture(scope="module")
def ecmp():
    with running(hold_time=3, big_mb=1) as lab:
        yield lab
    assert lab.net.leftovers() == []


def test_a_stopped_director_is_withdrawn_at_once_and_rejoins_sync_first_without_breaking_a_flow(ecmp):
    d2 = ecmp.directors[1]
    everyone = {d.addr for d in ecmp.directors}
    # A master sends a connection again every 50 of its packets (--sync-threshold 3 50): at 20 packets a
    # second each of these is resent within 2.5 s, and the message leaves within 2 s more.
    probe = ecmp.probe("probe-join", CONNS, interval=0.05, timeout=3.0)
    time.sleep(3.0)  # synced everywhere
    before = ecmp.flows(0.5)
    stopping = time.monotonic()
    d2.proc.send_signal(signal.SIGTERM)  # lvsd alone: it withdraws, then stops BIRD
    ecmp.wait_nexthops(everyone - {d2.addr}, timeout=5)
    withdrawn = time.monotonic() - stopping
    assert d2.proc.wait(10) == 0
    off = ecmp.flows(1.0)
    joining = time.monotonic()
    ecmp.join(d2, settle=5.5)
    back = ecmp.wait_nexthops(everyone, timeout=15)
    again = ecmp.flows(1.5)
    records = probe.finish()
    broken = [r for r in records if r["error"] or len(r["servers"]) != 1]
    print(f"\nstop and rejoin, mh + sync: {len(on(before, d2.addr))} of {len(before)} flows on the stopped director, "
          f"withdrawn after {withdrawn:.2f}s; moved {len(moved(before, off))} at the stop, {len(moved(off, again))} "
          f"at the rejoin ({time.monotonic() - joining:.1f}s after lvsd started again, announced {back:.2f}s after "
          f"its weights); broken {len(broken)}/{len(records)}")
    assert withdrawn < 1.5
    assert on(before, d2.addr) and not on(off, d2.addr) and on(again, d2.addr), (before, off, again)
    assert broken == [], broken
