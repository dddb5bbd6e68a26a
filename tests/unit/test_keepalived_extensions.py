"""What pylvs accepts or says beyond keepalived 2.2.7, and keepalived's own words where it has some.

* DPVS's extensions are accepted and each use is warned about, naming the extension. Stock
  keepalived 2.2.7 (`keepalived -t`) reports `local_address_group`, its lines and its `}` as
  unknown keywords, `lb_kind FNAT` as `PARSER : unknown [FNAT] routing method for virtual server.`
  (then defaults to NAT), and `laddr_group_name` as an unknown keyword.
* Messages keepalived does not give start with `pylvs: `.
* SMTP_CHECK `host` blocks: keepalived's one message, its checkers.
"""

from __future__ import annotations

import pytest

from pylvs.keepalived import loads
from pylvs.keepalived.model import SmtpCheck


def conf(text: str):
    return loads(text, echo=False)


FNAT = """local_address_group laddr_g1 {
    192.168.88.240 dpdk0.102
}
virtual_server 192.168.88.1 80 {
    lb_algo rr
    lb_kind FNAT
    protocol TCP
    laddr_group_name laddr_g1
    syn_proxy
    real_server 192.168.88.30 80 {
        lvs_method FULLNAT
    }
    sorry_server 192.168.88.99 80
    sorry_server_lvs_method FNAT
}
tunnel_group tg {
    192.168.88.5
}
"""


def test_dpvs_extensions_are_built_and_named_in_warnings():
    config = conf(FNAT)
    (vs,) = config.virtual_servers
    assert vs.forwarding.method == "FNAT" and vs.real_servers[0].forwarding.method == "FNAT"
    assert vs.sorry_server.forwarding.method == "FNAT" and vs.syn_proxy and vs.laddr_group_name == "laddr_g1"
    assert config.local_address_groups["laddr_g1"].addresses == [("192.168.88.240", "dpdk0.102")]
    assert config.warnings == [
        "(keepalived.conf:1) pylvs: DPVS extension 'local_address_group' accepted (keepalived 2.2.7 does not know it)",
        "(keepalived.conf:6) pylvs: DPVS extension 'lb_kind FNAT' accepted (stock keepalived rejects it and uses NAT)",
        "(keepalived.conf:8) pylvs: DPVS extension 'laddr_group_name' accepted (keepalived 2.2.7 does not know it)",
        "(keepalived.conf:9) pylvs: DPVS extension 'syn_proxy' accepted (keepalived 2.2.7 does not know it)",
        "(keepalived.conf:11) pylvs: DPVS extension 'lvs_method FULLNAT' accepted (stock keepalived rejects it and "
        "uses the virtual server's method)",
        "(keepalived.conf:14) pylvs: DPVS extension 'sorry_server_lvs_method FNAT' accepted (stock keepalived rejects "
        "it and uses the virtual server's method)",
        "(keepalived.conf:16) pylvs: DPVS extension 'tunnel_group' accepted (keepalived 2.2.7 does not know it)",
    ]


def test_stock_methods_give_no_dpvs_warning():
    config = conf("virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n"
                  " real_server 10.0.0.2 80 {\n  lvs_method TUN type gue port 6080\n }\n}\n")
    assert config.warnings == []


def test_smtp_host_blocks_as_keepalived_2_2_7_builds_them():
    config = conf("""virtual_server 192.0.2.100 25 {
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 192.0.2.11 25 {
        SMTP_CHECK {
            helo_name lb.example
            retry 2
            host {
                connect_ip 192.0.2.21
                connect_port 2525
                delay_before_retry 7
            }
            host {
                bindto 192.0.2.1
            }
        }
        SMTP_CHECK {
            connect_timeout 9
            host {
                connect_ip 192.0.2.22
            }
        }
    }
}
""")
    checkers = config.virtual_servers[0].real_servers[0].checkers
    assert all(isinstance(c, SmtpCheck) for c in checkers)
    # 1st SMTP_CHECK has no connection option of its own: its hosts replace it. A host's options
    # are its own (the 2nd host does not get the 1st's port), the others are the checker's, shared
    # (delay_before_retry set in a host applies to both). The 2nd SMTP_CHECK has one (connect_timeout),
    # so it stays, and its host is one more checker.
    # (port 25: the real server's, see test_checker_port_is_the_real_servers_port_as_written)
    assert [(c.connect_ip, c.connect_port, c.bindto, c.retry, c.delay_before_retry, c.helo_name) for c in checkers] == [
        ("192.0.2.21", 2525, None, 2, 7.0, "lb.example"),
        (None, 25, "192.0.2.1", 2, 7.0, "lb.example"),
        (None, 25, None, 1, 1.0, "smtpchecker.keepalived.org"),
        ("192.0.2.22", 25, None, 1, 1.0, "smtpchecker.keepalived.org"),
    ]
    # keepalived leaves the connect timeout of a host without one at 0; pylvs inherits it
    assert [c.connect_timeout for c in checkers] == [5.0, 5.0, 9.0, 5.0]
    # keepalived's words, once per SMTP_CHECK with hosts, without a location (log_message)
    assert config.warnings == ["The SMTP_CHECK host block is deprecated. Please define additional checkers."] * 2


@pytest.mark.parametrize("head, rs, port, message", [
    # keepalived copies the real server's address into the checker when it reads the checker,
    # port as written: a DR real server's port is reset or cleared later, its checker's is not
    ("fwmark 1", "10.0.0.2 8080", 8080,
     "(keepalived.conf:5) WARNING - fwmark virtual server FWM 1, real server [10.0.0.2]:none:8080 has port specified "
     "- clearing"),
    ("10.0.0.1 80", "10.0.0.2 8080", 8080,
     "(keepalived.conf:5) WARNING - virtual server [10.0.0.1]:tcp:80 and real server [10.0.0.2]:tcp:8080 ports "
     "don't match - resetting"),
    # no port written: keepalived checks port 0; pylvs checks the port the real server gets
    ("10.0.0.1 80", "10.0.0.2", None,
     "(keepalived.conf:6) pylvs: TCP_CHECK for real server [10.0.0.2]:tcp:80 has no port: keepalived checks port 0, "
     "pylvs checks port 80 - set connect_port"),
    ("fwmark 1", "10.0.0.2", None,
     "(keepalived.conf:6) pylvs: TCP_CHECK for real server [10.0.0.2]:none:0 has no port: keepalived checks port 0, "
     "so does pylvs - set connect_port"),
])
def test_checker_port_is_the_real_servers_port_as_written(head, rs, port, message):
    config = conf(f"virtual_server {head} {{\nlb_algo rr\nlb_kind DR\n"
                  f"{'persistence_timeout' if 'fwmark' in head else 'protocol TCP'}\n"
                  f"real_server {rs} {{\nTCP_CHECK {{\n}}\n}}\n}}\n")
    (chk,) = config.virtual_servers[0].real_servers[0].checkers
    assert chk.connect_port == port
    assert config.warnings == ([message] if message else [])


def test_duplicate_virtual_server_is_pylvs_own_error():
    block = ("virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
             " real_server 10.0.0.2 80 {\n }\n}\n")
    config = conf(block + block)
    assert len(config.virtual_servers) == 1
    assert config.warnings == ["(keepalived.conf:8) pylvs: virtual server [10.0.0.1]:tcp:80 is duplicated - ignoring "
                               "the second one"]


def test_extra_parameters_is_pylvs_own_warning():
    config = conf("virtual_server 10.0.0.1 80 {\n lb_algo rr extra\n lb_kind NAT\n protocol TCP\n"
                  " real_server 10.0.0.2 80 {\n }\n}\n")
    assert config.warnings == ["(keepalived.conf:2) pylvs: extra parameters ignored after 'lb_algo': extra"]
