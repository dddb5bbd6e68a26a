"""VRRP blocks of keepalived.conf as keepalived 2.2.7's VRRP process reads them. The messages are
the ones `keepalived -t` (Debian's 2.2.7) printed for the same lines."""

from __future__ import annotations

import pytest

from pylvs import keepalived
from pylvs.keepalived import Diagnostics
from pylvs.vrrp import plan as vrrp_plan
from pylvs.vrrp.packet import AUTH_PASS
from pylvs.vrrp.router import Tracked

CONF = """
global_defs {
    vrrp_version 2
    lvs_sync_daemon dip0 VI_1
}
vrrp_script chk {
    script "/bin/true"
    interval 2
    weight -20
    fall 2
    rise 3
}
vrrp_sync_group VG1 {
    group {
        VI_1
        VI_2
    }
    notify_master "/bin/true master"
}
vrrp_instance VI_1 {
    state MASTER
    interface vip0
    virtual_router_id 51
    priority 150
    advert_int 0.5
    nopreempt
    preempt_delay 5
    bogus_kw 1
    authentication {
        auth_type PASS
        auth_pass secretpassword
    }
    virtual_ipaddress {
        203.0.113.100/24 dev vip0
        203.0.113.101
    }
    track_script {
        chk
        nochk
    }
    track_interface {
        dip0 weight 10
    }
    notify "/usr/local/bin/notify.sh"
}
vrrp_instance VI_2 {
    interface dip0
    virtual_router_id 52
    priority 300
    virtual_ipaddress {
        192.0.2.1/24
    }
}
vrrp_instance VI_3 {
    interface dip0
    priority 100
}
"""


def load():
    config = keepalived.loads(CONF, echo=False)
    diags = Diagnostics(echo=False)
    plan = vrrp_plan.build(config, lambda ifname: {"vip0": "203.0.113.2", "dip0": "192.0.2.2"}[ifname], diags)
    return config, plan, [*config.warnings, *(str(d) for d in diags.items)]


def test_keepalived_messages_for_the_vrrp_blocks():
    _, _, messages = load()
    expected = [
        "Unknown keyword 'bogus_kw'",
        "Truncating auth_pass to 8 characters",
        "number '300' outside range [1, 255]",
        "(VI_2) Priority not valid! must be between 1 & 255. Using default 100",
        "(VI_3) the virtual router id must be set",
        "(VI_1) Warning - nopreempt will not work with initial state MASTER - clearing",
        "(VI_1) Warning - preempt delay will not work with initial state MASTER - clearing",
        "(VI_1) VRRPv2 advertisement interval 0.500000s must be an integer. rounding",
        "(VI_1) track script nochk not found, ignoring...",
    ]
    for text in expected:
        assert any(m.endswith(text) for m in messages), (text, messages)


def test_the_plan_has_keepalived_defaults_and_corrections():
    config, plan, _ = load()
    assert set(plan.instances) == {"VI_1", "VI_2"}  # VI_3 has no virtual_router_id: not run
    vi1 = plan.router.instances["VI_1"].config
    assert (vi1.vrid, vi1.priority, vi1.advert_int, vi1.version, vi1.preempt, vi1.preempt_delay) == \
        (51, 150, 1.0, 2, True, 0.0)
    assert (vi1.auth_type, vi1.auth_data) == (AUTH_PASS, b"secretpa")
    assert vi1.addresses == ("203.0.113.100", "203.0.113.101") and vi1.primary_ip == "203.0.113.2"
    assert (vi1.garp_delay, vi1.garp_repeat) == (5.0, 5)  # vrrp_garp_master_delay/_repeat defaults
    assert plan.instances["VI_1"].addresses["203.0.113.100"].prefix == 24
    assert plan.router.instances["VI_2"].config.priority == 100
    assert plan.router.tracking["VI_1"] == [Tracked("interface", "vip0"), Tracked("interface", "dip0", 10),
                                            Tracked("script", "chk", -20)]
    assert plan.router.groups == {"VG1": ["VI_1", "VI_2"]}
    assert (plan.router.scripts["chk"].rise, plan.router.scripts["chk"].fall) == (3, 2)
    assert plan.scripts["chk"][1] == 2.0
    assert plan.sync_daemon.interface == "dip0" and plan.sync_daemon.instance == "VI_1"
    assert plan.instances["VI_1"].notify[""].command == ["/usr/local/bin/notify.sh"]
    assert plan.instances["VI_2"].group_notify["MASTER"].command == ["/bin/true", "master"]


def test_version_3_takes_fractional_intervals_and_master_without_priority_is_the_owner():
    config = keepalived.loads("""
global_defs {
    vrrp_version 3
}
vrrp_instance VI_1 {
    state MASTER
    interface vip0
    virtual_router_id 9
    advert_int 0.25
    virtual_ipaddress {
        203.0.113.100
    }
}
""", echo=False)
    plan = vrrp_plan.build(config, lambda ifname: "203.0.113.2", Diagnostics(echo=False))
    cfg = plan.router.instances["VI_1"].config
    assert (cfg.version, cfg.advert_int, cfg.priority) == (3, 0.25, 255)


def test_virtual_server_addresses_stay_the_engines():
    config = keepalived.loads(CONF + """
virtual_server_group VSG {
    198.51.100.10-20 80
}
virtual_server 203.0.113.100 80 {
    protocol TCP
    real_server 192.0.2.11 80 {
    }
}
virtual_server group VSG {
    protocol TCP
    real_server 192.0.2.11 80 {
    }
}
""", echo=False)
    plan = vrrp_plan.build(config, lambda ifname: "203.0.113.2", Diagnostics(echo=False))
    assert plan.is_service_address("203.0.113.100") and plan.is_service_address("198.51.100.15")
    assert not plan.is_service_address("203.0.113.101") and not plan.is_service_address("192.0.2.1")


def test_virtual_servers_are_read_as_before_beside_vrrp_blocks():
    config, _, _ = load()
    assert config.virtual_servers == []  # none in this file; the checker side still parsed it
    assert config.vrrp_instances["VI_1"].virtual_ipaddress == ["203.0.113.100", "203.0.113.101"]


def test_an_instance_on_a_missing_interface_stops_lvsd_as_keepalived_stops(caplog):
    from pylvs.keepalived import ConfigError
    from pylvs.vrrp.director import check_interfaces

    config = keepalived.loads("""
vrrp_instance VI_1 {
    interface nosuch0
    virtual_router_id 51
}
""", echo=False)
    with pytest.raises(ConfigError, match="Non-existent interface specified in configuration"):
        check_interfaces(config)
    assert "WARNING - interface nosuch0 for vrrp_instance VI_1 doesn't exist" in caplog.text
