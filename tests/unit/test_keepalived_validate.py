"""keepalived's config-time corrections and their warnings (reference §1.2, §3.8).

The expected messages, and their order, are those `keepalived -t` of Debian's keepalived 2.2.7 gave
for the same text (it reports them without a location; pylvs adds the block's).
"""

from __future__ import annotations

from pylvs.keepalived import loads


def conf(text: str):
    return loads(text, echo=False)


def vs_block(body: str, head: str = "10.0.0.1 80") -> str:
    return f"virtual_server {head} {{\n{body}\n}}\n"


def test_missing_scheduler_method_protocol():
    config = conf(vs_block("real_server 10.0.0.2 80 {\n}"))
    assert config.warnings == [
        "(keepalived.conf:1) Virtual server [10.0.0.1]:none:80: no protocol set - defaulting to UDP",
        "(keepalived.conf:1) Virtual server [10.0.0.1]:udp:80: no scheduler set, setting default 'wlc'",
        "(keepalived.conf:1) Virtual server [10.0.0.1]:udp:80: no forwarding method set, setting default NAT",
    ]


def test_no_forwarding_warning_when_every_server_has_its_own():
    config = conf(vs_block("lb_algo rr\nprotocol TCP\nreal_server 10.0.0.2 80 {\nlvs_method DR\n}"))
    assert config.warnings == [] and config.virtual_servers[0].real_servers[0].forwarding.method == "DR"


def test_ops_requires_udp():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nops\nreal_server 10.0.0.2 80 {\n}"))
    assert not config.virtual_servers[0].ops
    assert config.warnings == ["(keepalived.conf:1) Virtual server [10.0.0.1]:tcp:80: one packet scheduling requires "
                               "UDP - resetting"]
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol UDP\nops\nreal_server 10.0.0.2 80 {\n}"))
    assert config.virtual_servers[0].ops and config.warnings == []


def test_zero_port_only_for_persistent_services():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\n}", "10.0.0.1"))
    assert config.virtual_servers[0].persistence_timeout == 360
    assert config.warnings == ["(keepalived.conf:1) Virtual server [10.0.0.1]:tcp:0: zero port only valid for "
                               "persistent services - setting"]
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\npersistence_timeout 20\n"
                           "real_server 10.0.0.2 80 {\n}", "10.0.0.1 0"))
    assert config.virtual_servers[0].persistence_timeout == 20 and config.warnings == []


def test_group_entry_without_port_forces_persistence():
    config = conf("virtual_server_group G {\n10.0.0.1\n}\n" + vs_block(
        "lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\n}", "group G"))
    assert config.virtual_servers[0].persistence_timeout == 360
    assert "zero port only valid for persistent services - setting" in config.warnings[0]


def test_protocol_on_fwmark_is_ignored():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nha_suspend\npersistence_timeout\n"
                           "real_server 10.0.0.2 80 {\n}", "fwmark 3"))
    vs = config.virtual_servers[0]
    assert vs.protocol is None and not vs.ha_suspend
    assert config.warnings == [
        "(keepalived.conf:1) Virtual server FWM 3: cannot use ha_suspend with fwmarks - clearing ha_suspend",
        "(keepalived.conf:1) Warning: Virtual server FWM 3: protocol specified for fwmark - protocol will be ignored"]


def test_quorum_and_hysteresis_are_corrected():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nquorum 10\nhysteresis 5\n"
                           "real_server 10.0.0.2 80 {\nweight 2\n}\nreal_server 10.0.0.3 80 {\nweight 3\n}"))
    vs = config.virtual_servers[0]
    assert (vs.quorum, vs.hysteresis) == (5, 4)
    assert config.warnings == [
        "(keepalived.conf:1) Warning - quorum 10 for [10.0.0.1]:tcp:80 exceeds total weight of real servers 5, "
        "reducing quorum to 5",
        "(keepalived.conf:1) Virtual server [10.0.0.1]:tcp:80: hysteresis 5 >= quorum 5; setting hysteresis to 4"]


def test_duplicate_real_server_is_removed():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\nweight 1\n}\n"
                           "real_server 10.0.0.2 80 {\nweight 9\n}\nreal_server 10.0.0.2 81 {\n}"))
    assert [(r.port, r.weight) for r in config.virtual_servers[0].real_servers] == [(80, 1), (81, 1)]
    assert config.warnings == ["(keepalived.conf:8) VS [10.0.0.1]:tcp:80: real server [10.0.0.2]:tcp:80 "
                               "is duplicated - removing second rs"]


def test_real_servers_that_are_duplicates_once_their_port_is_set():
    # keepalived compares real servers as written (80 and no port differ) and would then add the same
    # destination twice; pylvs keeps the first and says so in its own words
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\nweight 1\n}\n"
                           "real_server 10.0.0.2 {\nweight 9\n}"))
    assert [(r.port, r.weight) for r in config.virtual_servers[0].real_servers] == [(80, 1)]
    assert config.warnings == ["(keepalived.conf:8) pylvs: VS [10.0.0.1]:tcp:80: real server [10.0.0.2]:tcp:80 is "
                               "duplicated once its port is set - removing second rs"]


def test_virtual_server_without_real_servers_is_ignored():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nsorry_server 10.0.0.9 80"))
    assert config.virtual_servers == []
    assert config.warnings == ["(keepalived.conf:1) Virtual server [10.0.0.1]:tcp:80 has no real servers - ignoring"]


def test_missing_group_ignores_the_virtual_server():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\n}", "group NOPE"))
    assert config.virtual_servers == []
    assert "Virtual server group NOPE specified but not configured" in config.warnings[0]


def test_port_rules_per_forwarding_method():
    config = conf(vs_block("lb_algo rr\nlb_kind DR\nprotocol TCP\nsorry_server 10.0.0.9 8080\n"
                           "real_server 10.0.0.2 8080 {\n}\nreal_server 10.0.0.3 {\n}\n"
                           "real_server 10.0.0.4 8080 {\nlvs_method NAT\n}\nreal_server 10.0.0.5 {\nlvs_method NAT\n}"))
    vs = config.virtual_servers[0]
    assert [(r.addr, r.port) for r in vs.real_servers] == [("10.0.0.2", 80), ("10.0.0.3", 80), ("10.0.0.4", 8080),
                                                          ("10.0.0.5", 80)]
    assert vs.sorry_server.port == 80 and vs.sorry_server.forwarding.method == "DR"
    assert config.warnings == [
        "(keepalived.conf:6) WARNING - virtual server [10.0.0.1]:tcp:80 and real server [10.0.0.2]:tcp:8080 ports "
        "don't match - resetting",
        "(keepalived.conf:5) WARNING - virtual server [10.0.0.1]:tcp:80 and sorry server ports don't match - resetting"]
    fw = conf(vs_block("lb_algo rr\nlb_kind DR\npersistence_timeout\nreal_server 10.0.0.2 80 {\n}\n"
                       "sorry_server 10.0.0.9 80", "fwmark 1"))
    assert fw.virtual_servers[0].real_servers[0].port == 0 and fw.virtual_servers[0].sorry_server.port == 0
    assert fw.warnings == [
        "(keepalived.conf:5) WARNING - fwmark virtual server FWM 1, real server [10.0.0.2]:none:80 has port specified "
        "- clearing",
        "(keepalived.conf:7) WARNING - virtual server FWM 1, sorry server has port specified - clearing"]


def test_address_family_mismatch_skips_the_real_server_unless_tunnelled():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 2001:db8::2 80 {\n}\n"
                           "real_server 2001:db8::3 80 {\nlvs_method TUN\n}\nreal_server 10.0.0.2 80 {\n}"))
    assert [r.addr for r in config.virtual_servers[0].real_servers] == ["2001:db8::3", "10.0.0.2"]
    # reported at the real server's `}`, when keepalived drops it
    assert config.warnings == ["(keepalived.conf:6) Address family of virtual server and real server 2001:db8::2 "
                               "don't match - skipping real server."]


def test_sorry_server_equal_to_a_real_server_shares_its_inhibit_setting():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nsorry_server 10.0.0.2 80\n"
                           "real_server 10.0.0.2 80 {\ninhibit_on_failure\n}"))
    assert config.virtual_servers[0].sorry_server.inhibit


def test_sorry_server_inhibit_and_method():
    config = conf(vs_block("lb_algo rr\nlb_kind NAT\nprotocol TCP\nsorry_server_inhibit\nsorry_server 10.0.0.9 80\n"
                           "sorry_server_inhibit\nsorry_server_lvs_method DR\nreal_server 10.0.0.2 80 {\n}"))
    ss = config.virtual_servers[0].sorry_server
    assert ss.inhibit and ss.forwarding.method == "DR"
    assert config.warnings == ["(keepalived.conf:5) Ignoring sorry_server inhibit used before or without sorry_server"]


def test_duplicate_virtual_server_is_ignored():
    body = "lb_algo rr\nlb_kind NAT\nprotocol TCP\nreal_server 10.0.0.2 80 {\n}"
    config = conf(vs_block(body) + vs_block(body))
    assert len(config.virtual_servers) == 1
    assert "is duplicated - ignoring the second one" in config.warnings[0]
