"""lvsadm --doctor's decisions, from probe observations to verdicts (no packets: pylvs.doctor.diagnose)."""

from __future__ import annotations

import json

import pytest

from pylvs.doctor import report
from pylvs.doctor.diagnose import diagnose, tunnel_size
from pylvs.doctor.model import (
    CERTAIN,
    CHECKS,
    LIKELY,
    NA,
    OK,
    POSSIBLE,
    PROBLEM,
    UNKNOWN,
    Observation,
    Reply,
    Report,
    Target,
)

VIP, RIP, DIP = "192.0.2.100", "192.0.2.11", "192.0.2.1"
RS_MAC, OTHER_MAC = "02:00:00:00:00:11", "02:00:00:00:00:99"
DR = Target("TCP 192.0.2.100:80", VIP, 80, True, "dr", RIP)
TUN = Target("TCP 192.0.2.100:80", VIP, 80, True, "tun", RIP, "ipip")
GUE = Target("TCP 192.0.2.100:80", VIP, 80, True, "tun", RIP, "gue", 6080)

SYNACK_VIP = Reply("synack", VIP, mss=1460)
SYNACK_RIP = Reply("synack", RIP, mss=1460)
SILENCE = Reply("none")


def seen(onlink: bool = True, **kw) -> Observation:
    base = dict(source=DIP, onlink=onlink, next_hop=RIP if onlink else "198.51.100.1", next_hop_mac=RS_MAC,
                rs_mac=RS_MAC if onlink else None, rip=SYNACK_RIP, method=SYNACK_VIP, egress_mtu=1500,
                client_mtu=1500)
    base.update(kw)
    return Observation(**base)


def verdicts(t: Target, o: Observation) -> dict[str, object]:
    found = diagnose(t, o)
    assert [v.check for v in found] == list(CHECKS)
    return {v.check: v for v in found}


def statuses(t: Target, o: Observation) -> dict[str, str]:
    return {name: v.status for name, v in verdicts(t, o).items()}


def test_a_healthy_dr_real_server_passes_every_check_that_applies():
    assert statuses(DR, seen()) == {"reachable": OK, "arp": OK, "decap": NA, "rp_filter": NA, "vip": OK,
                                    "listening": OK, "reply_source": OK, "mtu": NA}


def test_the_real_server_answering_arp_for_the_vip_is_named_with_the_sysctls():
    v = verdicts(DR, seen(vip_arp=[RS_MAC]))["arp"]
    assert (v.status, v.certainty) == (PROBLEM, CERTAIN)
    assert RS_MAC in v.text and "arp_ignore=1" in v.fix and "arp_announce=2" in v.fix


def test_a_real_server_announcing_the_vip_in_its_arp_requests_is_arp_announce():
    v = verdicts(DR, seen(vip_announced=[RS_MAC]))["arp"]
    assert v.status == PROBLEM and "arp_announce" in v.text


def test_another_host_answering_arp_for_the_vip_is_a_problem_of_its_own():
    v = verdicts(DR, seen(vip_arp=[OTHER_MAC]))["arp"]
    assert v.status == PROBLEM and OTHER_MAC in v.text and "another host" in v.text


def test_no_arp_check_for_a_real_server_behind_a_router():
    assert verdicts(TUN, seen(onlink=False))["arp"].status == NA


def test_dr_needs_the_real_server_on_a_segment_of_the_director():
    v = statuses(DR, seen(onlink=False))
    assert v["reachable"] == PROBLEM and {v[c] for c in ("arp", "vip", "listening", "reply_source")} == {UNKNOWN}


def test_no_arp_answer_for_the_next_hop_leaves_every_other_check_unknown():
    v = verdicts(DR, seen(next_hop_mac=None, rs_mac=None))
    assert (v["reachable"].status, v["reachable"].certainty) == (PROBLEM, LIKELY)
    assert {v[c].status for c in ("arp", "vip", "listening", "reply_source")} == {UNKNOWN}


def test_silence_for_the_vip_while_the_rip_answers_is_a_missing_vip_likely():
    v = verdicts(DR, seen(method=SILENCE))
    assert (v["vip"].status, v["vip"].certainty) == (PROBLEM, LIKELY)
    assert "lvs-rs up --vip 192.0.2.100 --method dr" in v["vip"].fix
    assert v["listening"].status == UNKNOWN and v["listening"].text.startswith("could not tell")


def test_time_exceeded_from_the_real_server_proves_it_does_not_own_the_vip():
    v = verdicts(DR, seen(method=Reply("icmp", RIP, icmp_type=11, icmp_code=0)))["vip"]
    assert (v.status, v.certainty) == (PROBLEM, CERTAIN) and "forwarded" in v.text


def test_a_reply_from_the_rip_is_a_wrong_reply_source():
    v = verdicts(DR, seen(method=SYNACK_RIP))
    assert (v["reply_source"].status, v["reply_source"].certainty) == (PROBLEM, CERTAIN)
    assert RIP in v["reply_source"].text and v["vip"].status == UNKNOWN


def test_a_rst_from_the_vip_means_nothing_listens_for_a_tcp_service_only():
    rst = seen(method=Reply("rst", VIP))
    assert statuses(DR, rst)["listening"] == PROBLEM and statuses(DR, rst)["vip"] == OK
    udp = Target("UDP 192.0.2.100:53", VIP, 53, False, "dr", RIP)
    assert statuses(udp, rst)["listening"] == NA and statuses(udp, rst)["vip"] == OK


def test_nothing_answering_at_all_is_unreachable_and_nothing_else_is_guessed():
    v = statuses(DR, seen(method=SILENCE, rip=SILENCE))
    assert v["reachable"] == PROBLEM
    assert {v[c] for c in ("vip", "listening", "reply_source")} == {UNKNOWN}
    assert v["arp"] == OK  # it answered ARP for its own address, and nobody for the VIP


def test_a_healthy_tunnel_real_server_passes_every_check():
    o = seen(onlink=False, method=Reply("synack", VIP, mss=1440), big=SYNACK_VIP)
    assert set(statuses(TUN, o).values()) == {OK, NA}
    assert report.exit_code([Report(TUN, diagnose(TUN, o))]) == 0


@pytest.mark.parametrize("code", [2, 3])
def test_protocol_or_port_unreachable_for_the_tunnel_packet_is_no_decapsulation(code):
    o = seen(onlink=False, method=Reply("icmp", RIP, icmp_type=3, icmp_code=code, about_outer=True))
    v = verdicts(GUE, o)
    assert (v["decap"].status, v["decap"].certainty) == (PROBLEM, CERTAIN)
    assert "--tun-type gue --tun-port 6080" in v["decap"].fix
    assert {v[c].status for c in ("rp_filter", "vip", "mtu")} == {UNKNOWN}


def test_tunnel_silence_behind_a_router_names_rp_filter_but_says_the_vip_looks_the_same():
    v = verdicts(TUN, seen(onlink=False, method=SILENCE))
    assert (v["decap"].status, v["decap"].certainty) == (OK, LIKELY)
    assert (v["rp_filter"].status, v["rp_filter"].certainty) == (PROBLEM, POSSIBLE)
    assert "rp_filter=0" in v["rp_filter"].fix and "look the same" in v["rp_filter"].text
    assert v["vip"].status == UNKNOWN


def test_tunnel_silence_while_the_vip_answers_without_the_tunnel_is_rp_filter():
    v = verdicts(TUN, seen(method=SILENCE, plain_vip=SYNACK_VIP))
    assert (v["rp_filter"].status, v["rp_filter"].certainty) == (PROBLEM, LIKELY)
    assert v["vip"].status == OK


def test_tunnel_silence_and_no_answer_without_the_tunnel_is_the_vip():
    v = verdicts(TUN, seen(method=SILENCE, plain_vip=SILENCE))
    assert v["vip"].status == PROBLEM and v["rp_filter"].status == UNKNOWN


def test_time_exceeded_about_the_inner_packet_means_decapsulated_but_the_vip_is_missing():
    v = statuses(TUN, seen(onlink=False, method=Reply("icmp", RIP, icmp_type=11, icmp_code=0)))
    assert (v["decap"], v["rp_filter"], v["vip"]) == (OK, OK, PROBLEM)


def test_tunnel_silence_with_a_silent_real_server_tells_nothing():
    v = statuses(TUN, seen(onlink=False, method=SILENCE, rip=SILENCE))
    assert v["reachable"] == PROBLEM and v["decap"] == v["rp_filter"] == v["vip"] == UNKNOWN


def test_the_tunnel_size_of_a_full_packet_follows_the_mss_and_the_client_link():
    assert tunnel_size(TUN, 1460, 1500) == 1520
    assert tunnel_size(TUN, 1440, 1500) == 1500
    assert tunnel_size(GUE, 1440, 1500) == 1512
    assert tunnel_size(TUN, 0, 1400) == 1420  # no MSS seen: the client link decides


def test_a_link_too_small_for_full_packets_in_the_tunnel_is_certain_without_a_probe():
    v = verdicts(TUN, seen(onlink=False))["mtu"]
    assert (v.status, v.certainty) == (PROBLEM, CERTAIN)
    assert "1520" in v.text and "advmss 1440" in v.fix


def test_fragmentation_needed_for_the_full_size_probe_names_the_path_mtu():
    big = Reply("icmp", "198.51.100.1", icmp_type=3, icmp_code=4, icmp_mtu=1400, about_outer=True)
    v = verdicts(TUN, seen(onlink=False, method=Reply("synack", VIP, mss=1440), big=big))["mtu"]
    assert (v.status, v.certainty) == (PROBLEM, CERTAIN)
    assert "1400" in v.text and "advmss 1340" in v.fix


def test_a_lost_full_size_probe_after_a_small_one_passed_is_likely_mtu():
    v = verdicts(TUN, seen(onlink=False, method=Reply("synack", VIP, mss=1440), big=SILENCE))["mtu"]
    assert (v.status, v.certainty) == (PROBLEM, LIKELY)


def test_an_unprobed_target_says_why_in_every_check():
    v = verdicts(DR, Observation(error="a fwmark service does not say which addresses its clients use"))
    assert all(x.status in (UNKNOWN, NA) for x in v.values())
    assert "fwmark" in v["reachable"].text


def test_reports_in_text_and_json_carry_status_certainty_and_fix():
    r = [Report(DR, diagnose(DR, seen(vip_arp=[RS_MAC]))), Report(TUN, diagnose(TUN, seen(onlink=False)))]
    out = report.text(r)
    assert "PROBLEM  arp" in out and "[certain]" in out and "fix: on 192.0.2.11: sysctl -w" in out
    assert out.rstrip().endswith("on 2 of 2 real server(s).")
    data = json.loads(report.as_json(r))
    assert data["clean"] is False
    arp = next(c for c in data["real_servers"][0]["checks"] if c["check"] == "arp")
    assert (arp["status"], arp["certainty"]) == (PROBLEM, CERTAIN)
    assert report.exit_code(r) == 1
    assert report.exit_code([]) == 0 and "No DR or TUN" in report.text([])


def test_a_mac_answering_for_the_vip_is_charged_to_its_own_real_server_only():
    from pylvs.doctor.probe import Link, Path, Prober

    link = Link("dip0", b"\x02" * 6, 1500)
    rs1, rs2 = (Path(DR, seen(rs_mac=mac, vip_arp=[RS_MAC, OTHER_MAC]), link) for mac in (RS_MAC, "02:00:00:00:00:12"))
    Prober._attribute_arp([rs1, rs2])
    assert rs1.obs.vip_arp == [RS_MAC, OTHER_MAC]  # its own, and an unknown host's
    assert rs2.obs.vip_arp == [OTHER_MAC]  # rs1's MAC is rs1's finding
