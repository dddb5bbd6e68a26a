"""VRRP tracking on real links (issue 16): a tracked interface going down puts the master in FAULT
(priority 0 on the wire, the backup takes over), and a vrrp_script's negative weight lowers the
master's priority below the backup's, which preempts; both undo themselves."""

from __future__ import annotations

import os

import pytest

from pylvs.lab.netns import wait_for
from pylvs.lab.topology_vrrp import VrrpLab

CONF = """global_defs {{
    vrrp_version 3
}}
vrrp_script no_flag {{
    script "/bin/sh -c '! test -e {flag}'"
    interval 0.2
    weight -60
    fall 1
    rise 1
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface vip0
    virtual_router_id 51
    priority {prio}
    advert_int 0.5
    track_interface {{
        dip0
    }}
    track_script {{
        no_flag
    }}
    virtual_ipaddress {{
        203.0.113.100/24
    }}
}}
"""


@pytest.fixture(scope="module")
def pair():
    lab = VrrpLab(n_rs=0).up()
    try:
        lab.flag = os.path.join(lab.net.tmp, "drain")
        lab.start_lvsd(lab.d1, CONF.format(prio=150, flag=lab.flag))
        lab.start_lvsd(lab.d2, CONF.format(prio=100, flag=os.path.join(lab.net.tmp, "never")))
        wait_for(lambda: lab.vrrp_state(lab.d1) == {"VI_1": "MASTER"}, timeout=10, what="d1 master")
        assert lab.vrrp_state(lab.d2) == {"VI_1": "BACKUP"}
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def states(lab: VrrpLab) -> tuple[str, str]:
    return lab.vrrp_state(lab.d1)["VI_1"], lab.vrrp_state(lab.d2)["VI_1"]


def test_a_tracked_interface_down_faults_the_master(pair):
    lab = pair
    cable = f"p{lab.d1.role[0]}"  # the LAN bridge's end of d1's dip0: down, dip0 loses its carrier
    lab.net.ip("lan", "link", "set", cable, "down")
    wait_for(lambda: states(lab) == ("FAULT", "MASTER"), timeout=5, what="d1 FAULT, d2 MASTER")
    lab.net.ip("lan", "link", "set", cable, "up")
    wait_for(lambda: states(lab) == ("MASTER", "BACKUP"), timeout=8, what="d1 back and preempting")


def test_a_script_weight_moves_mastership_and_back(pair):
    lab = pair
    with open(lab.flag, "w"):
        pass  # the script now fails: 150 - 60 = 90 < 100
    wait_for(lambda: states(lab) == ("BACKUP", "MASTER"), timeout=8, what="d2 preempting")
    status = lab.d1.lvsadm("--vrrp").stdout.splitlines()[1].split()
    assert status[:5] == ["VI_1", "BACKUP", "51", "v3", "90(150)"]
    os.unlink(lab.flag)
    wait_for(lambda: states(lab) == ("MASTER", "BACKUP"), timeout=8, what="d1 preempting back")
