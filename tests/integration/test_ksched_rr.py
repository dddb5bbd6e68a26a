"""Kernel scheduling of an rr service end to end: NAT over three nginx through `lvsd --datapath bpf`.

The tc program takes each SYN's real server from the rr sequence lvsd publishes, and the engine adopts
the connections from the event ring: 30 curls are answered by the real servers in rotation, 10 each,
`lvsadm --datapath` counts them as scheduled in the kernel and `lvsadm -L -n --stats` on their real
servers. A real server set to weight 0 with lvsadm takes no new connection (the sequence republished).
"""

from __future__ import annotations

import pytest

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab, settle
from tests.integration.labs import http_get_all, shared_lab
from tests.integration.test_ksched import rs_conns, status

URL = f"http://{VIP}/"


@pytest.fixture(scope="module")
def lab():
    yield from shared_lab(NatLab(n_rs=3), "--datapath", "bpf")


def kernel_sched_grown(lab, before: dict) -> dict[str, int]:
    now = status(lab)["kernel_sched"]
    return {k: now[k] - before["kernel_sched"][k] for k in now}


def all_in_kernel(lab) -> bool:
    """A turn of the rotation (one connection to each real server) scheduled in the kernel."""
    before = status(lab)["kernel_sched"]["created"]
    http_get_all(lab, len(lab.rips), URL)
    return status(lab)["kernel_sched"]["created"] == before + len(lab.rips)


def in_rotation(answers: list[str], servers: int) -> bool:
    """Each real server in turn: the first `servers` answers differ, then they repeat in that order."""
    return len(set(answers[:servers])) == servers and all(
        a == answers[i % servers] for i, a in enumerate(answers))


def test_rr_syns_are_scheduled_in_the_kernel_in_rotation(lab):
    lab.nat_service(scheduler="rr")
    # The first connections go through the engine (each real server's next hop is learnt with its
    # first one); then lvsd publishes the recipes at a tick, for each real server once its hop is known.
    http_get_all(lab, 3, URL)
    wait_for(lambda: all_in_kernel(lab), timeout=6, what="kernel scheduling of the rr service on")
    before, conns0 = status(lab), rs_conns(lab)
    answers = http_get_all(lab, 30, URL)
    assert in_rotation(answers, 3) and sorted(answers) == sorted(lab.rs_names * 10), (answers, status(lab))
    wait_for(lambda: kernel_sched_grown(lab, before)["adopted"] >= kernel_sched_grown(lab, before)["created"],
             timeout=5, what="every connection adopted")
    ks = kernel_sched_grown(lab, before)
    # A SYN arriving while lvsd republishes at a tick (generation 0) is the engine's, by design; it
    # keeps the rotation (above), the engine and the kernel following each other.
    assert ks["created"] + ks["punt_off"] == 30 and ks["punt_off"] <= 1, ks
    assert ks["adopted"] == ks["created"] and ks["refused"] == 0 and ks["rerouted"] == 0, ks
    assert "kernel scheduling of new connections (mh, sh, dh, rr, wrr): on" in lab.lvsadm("--datapath").stdout
    conns = rs_conns(lab)
    assert {rip: conns[rip] - conns0[rip] for rip in lab.rips} == dict.fromkeys(lab.rips, 10), (conns, conns0)

    # rs2 quiesced: the sequence is published again without it, and rr alternates over the other two.
    lab.lvsadm("-e", "-t", f"{VIP}:80", "-r", f"{lab.rips[1]}:{lab.rport}", "-m", "-w", "0")
    settle(0.5)  # lvsd republishes when it next reads the event ring (every 20 ms at least)
    before = status(lab)
    answers = http_get_all(lab, 12, URL)
    assert in_rotation(answers, 2) and sorted(answers) == sorted(["rs1", "rs3"] * 6), (answers, status(lab))
    wait_for(lambda: kernel_sched_grown(lab, before)["adopted"] >= kernel_sched_grown(lab, before)["created"],
             timeout=5, what="every connection adopted")
    ks = kernel_sched_grown(lab, before)
    assert ks["created"] + ks["punt_off"] == 12 and ks["punt_off"] <= 1, ks
