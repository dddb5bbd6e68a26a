"""lvsd notices `nft flush ruleset` and restores its steering table (needs the director wiring)."""

from __future__ import annotations

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP


def test_flush_ruleset_is_restored(lab):
    lab.nat_service()
    assert lab.curl(f"http://{VIP}/").returncode == 0
    lab.net.exec("director", "nft", "flush", "ruleset")
    wait_for(lambda: "pylvs" in lab.net.exec("director", "nft", "list", "tables").stdout, timeout=10,
             what="the steering table back")
    assert "restoring it" in lab.lvsd_log()
    vips = lab.net.exec("director", "nft", "list", "set", "inet", "pylvs", "vips").stdout
    assert VIP in vips
    assert lab.curl(f"http://{VIP}/").returncode == 0


def test_ring_counters_are_readable(lab):
    from pylvs.control import client as control_client

    answer = control_client.request({"op": "rings"}, lab.control)
    assert answer["ok"], answer
    counters = answer["result"]["vip0/ip"]
    assert set(counters) == {"packets", "drops", "truncated", "resyncs"}


def test_lvsadm_drops_shows_reasons_and_ring_counters(lab):
    lab.nat_service()
    assert lab.curl(f"http://{VIP}:81/", timeout=1).returncode != 0  # no service on port 81: dropped
    out = lab.lvsadm("--drops").stdout
    assert "no_service" in out and "to a VIP port without a virtual service" in out, out
    assert "vip0/ip" in out and "dip0/ip" in out and "vip0/ip6" in out, out
