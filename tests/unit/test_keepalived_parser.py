"""Parsing the keepalived.conf corpus (reference §5 samples, re-typed) into the typed model."""

from __future__ import annotations

import glob
import os

import pytest

from pylvs.keepalived import load, loads
from pylvs.keepalived.model import (
    DnsCheck,
    FileCheck,
    HttpCheck,
    MiscCheck,
    PingCheck,
    SmtpCheck,
    TcpCheck,
    UdpCheck,
)

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived")
SAMPLES = sorted(glob.glob(os.path.join(DATA, "samples", "*")))


def sample(name: str):
    return load(os.path.join(DATA, "samples", name), echo=False)


def conf(text: str):
    return loads(text, echo=False)


@pytest.mark.parametrize("path", SAMPLES, ids=os.path.basename)
def test_every_sample_parses_without_unknown_keywords(path):
    config = load(path, echo=False)
    assert config.virtual_servers
    assert not [w for w in config.warnings if "Unknown keyword" in w or "extra parameters" in w]


def test_sample_nat_with_digest_and_sorry_server():
    config = sample("keepalived.conf.sample")
    g = config.global_defs
    assert g.router_id == "LVS_DEVEL" and g.smtp_server == "192.168.200.1" and g.smtp_connect_timeout == 30
    assert g.notification_email == ["acassen@firewall.loc", "failover@firewall.loc", "sysadmin@firewall.loc"]
    assert config.vrrp_instances["VI_1"].virtual_ipaddress == ["192.168.200.11", "192.168.200.12", "192.168.200.13"]
    (vs,) = config.virtual_servers
    assert (vs.addr, vs.port, vs.protocol, vs.scheduler) == ("10.10.10.2", 1358, "TCP", "rr")
    assert vs.forwarding.method == "NAT" and vs.persistence_timeout == 50 and vs.delay_loop == 6
    assert (vs.sorry_server.addr, vs.sorry_server.port) == ("192.168.200.200", 1358)
    rs2, rs3 = vs.real_servers
    (http,) = rs2.checkers
    assert isinstance(http, HttpCheck) and http.kind == "HTTP_GET"
    assert [(u.path, u.digest) for u in http.urls] == [("/testurl3/test.jsp", "640205b7b0fc66c1ea91c463fac6334d")]
    assert (http.connect_timeout, http.retry, http.delay_before_retry, http.delay_loop) == (3, 3, 3, 6)
    assert len(rs3.checkers[0].urls) == 2
    assert config.warnings == []


def test_defaults_when_nothing_is_set():
    config = conf("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n TCP_CHECK {\n }\n }\n}\n")
    vs = config.virtual_servers[0]
    assert (vs.scheduler, vs.forwarding.method, vs.protocol) == ("wlc", "NAT", "UDP")
    assert (vs.quorum, vs.hysteresis, vs.weight, vs.persistence_timeout) == (1, 0, 1, None)
    rs = vs.real_servers[0]
    assert (rs.weight, rs.inhibit_on_failure, rs.alpha) == (1, False, False)
    chk = rs.checkers[0]
    assert (chk.delay_loop, chk.connect_timeout, chk.retry, chk.delay_before_retry, chk.warmup) == (60, 5, 1, 1, 60)


@pytest.mark.parametrize("kind, retry, dbr", [
    ("TCP_CHECK", 1, 1.0), ("HTTP_GET {\n url {\n path /\n }\n", 1, 3.0), ("SSL_GET {\n url {\n path /\n }\n", 1, 3.0),
    ("UDP_CHECK", 1, 1.0), ("PING_CHECK", 1, 1.0), ("SMTP_CHECK", 1, 1.0), ("DNS_CHECK", 3, 7.0),
    ("MISC_CHECK {\n misc_path /bin/true\n", 0, 1.0),
])
def test_per_type_retry_and_delay_before_retry_defaults(kind, retry, dbr):
    block = kind if "{" in kind else kind + " {\n"
    config = conf(f"virtual_server 10.0.0.1 80 {{\n delay_loop 7\n real_server 10.0.0.2 80 {{\n {block} }}\n }}\n}}\n")
    chk = config.virtual_servers[0].real_servers[0].checkers[0]
    assert (chk.retry, chk.delay_before_retry) == (retry, dbr)


def test_inheritance_vs_to_rs_to_checker():
    config = conf("""
virtual_server 10.0.0.1 80 {
    protocol TCP
    delay_loop 10
    connect_timeout 2
    retry 4
    delay_before_retry 0.5
    warmup 0
    weight 7
    inhibit_on_failure
    alpha
    virtualhost vs.example
    real_server 10.0.0.2 80 {
        delay_loop 3
        retry 2
        HTTP_GET {
            url {
                path /
            }
            connect_timeout 1.5
        }
        TCP_CHECK {
            retry 0
        }
    }
    real_server 10.0.0.3 80 {
        weight 0
        inhibit_on_failure off
        alpha no
    }
}
""")
    vs = config.virtual_servers[0]
    rs, rs3 = vs.real_servers
    assert (rs.weight, rs.inhibit_on_failure, rs.alpha) == (7, True, True)
    assert (rs3.weight, rs3.inhibit_on_failure, rs3.alpha) == (0, False, False)
    http, tcp = rs.checkers
    assert (http.delay_loop, http.retry, http.connect_timeout, http.delay_before_retry, http.warmup) == (3, 2, 1.5,
                                                                                                       0.5, 0)
    assert http.alpha and http.virtualhost == "vs.example"
    assert (tcp.retry, tcp.connect_timeout) == (0, 2)


def test_aliases_lb_algo_lvs_sched_lb_kind_lvs_method():
    a = conf("virtual_server 10.0.0.1 80 {\n lb_algo sh\n sh-port\n lb_kind DR\n protocol tcp\n"
             " real_server 10.0.0.2 80 {\n }\n}\n").virtual_servers[0]
    b = conf("virtual_server 10.0.0.1 80 {\n lvs_sched sh\n sh-port\n lvs_method DR\n protocol TCP\n"
             " real_server 10.0.0.2 80 {\n }\n}\n").virtual_servers[0]
    assert a == b and a.scheduler == "sh" and a.sched_flags == ["sh-port"] and a.forwarding.method == "DR"


def test_sh_flags_need_the_scheduler_first():
    config = conf("virtual_server 10.0.0.1 80 {\n sh-port\n lb_algo sh\n mh-fallback\n protocol TCP\n"
                  " real_server 10.0.0.2 80 {\n }\n}\n")
    assert config.virtual_servers[0].sched_flags == []
    assert any("(keepalived.conf:2) sh-port only applies to sh scheduler - ignoring" in w for w in config.warnings)
    assert any("(keepalived.conf:4) mh-fallback only applies to mh scheduler - ignoring" in w for w in config.warnings)


def test_method_names_are_case_sensitive_protocol_is_not():
    config = conf("virtual_server 10.0.0.1 80 {\n lb_kind dr\n protocol udp\n real_server 10.0.0.2 80 {\n }\n}\n")
    vs = config.virtual_servers[0]
    assert vs.forwarding.method == "NAT" and vs.protocol == "UDP"
    assert "(keepalived.conf:2) PARSER : unknown [dr] routing method for virtual server." in config.warnings


def test_persistence_options():
    vs = conf("virtual_server 10.0.0.1 80 {\n protocol TCP\n persistence_timeout\n persistence_engine sip\n"
              " real_server 10.0.0.2 80 {\n }\n}\n").virtual_servers[0]
    assert vs.persistence_timeout == 360 and vs.persistence_engine == "sip"
    vs = conf("virtual_server 10.0.0.1 80 {\n protocol TCP\n persistence_granularity 255.255.255.0\n"
              " real_server 10.0.0.2 80 {\n }\n}\n").virtual_servers[0]
    assert vs.persistence_granularity == "255.255.255.0" and vs.persistence_timeout == 360
    config = conf("virtual_server 10.0.0.1 80 {\n protocol TCP\n persistence_granularity 255.0.255.0\n"
                  " real_server 10.0.0.2 80 {\n }\n}\n")
    assert config.virtual_servers[0].persistence_granularity is None
    assert any("netmask is not solid" in w for w in config.warnings)


def test_fwmark_sample():
    vs = sample("keepalived.conf.fwmark").virtual_servers[0]
    assert vs.fwmark == 1 and vs.addr is None and vs.protocol is None
    assert [(rs.addr, rs.port) for rs in vs.real_servers] == [("192.168.201.100", None), ("192.168.201.101", None)]
    assert vs.real_servers[0].checkers[0].connect_port == 80


def test_virtual_server_group_sample():
    config = sample("keepalived.conf.virtual_server_group")
    group = config.virtual_server_groups["VSG_1"]
    e1, e2, e3 = group.entries
    assert (e1.first, e1.last, e1.port) == ("10.0.0.1", "10.0.0.1", 8080)
    assert (e2.first, e2.last, e2.port) == ("192.168.200.3", "192.168.200.10", 80) and len(e2.addresses()) == 8
    assert e3.fwmark == 1
    assert config.virtual_servers[0].group == "VSG_1"


def test_group_ranges_and_cidr():
    config = conf("virtual_server_group G {\n 192.168.200.250-192.168.201.2 80\n 10.0.0.8/30\n 10.0.0.9/30 80\n"
                  " fwmark 5 inet\n 10.0.0.5-3 80\n}\nvirtual_server_group EMPTY {\n}\n")
    g = config.virtual_server_groups["G"]
    assert g.entries[0].addresses() == ["192.168.200.250", "192.168.200.251", "192.168.200.252", "192.168.200.253",
                                        "192.168.200.254", "192.168.200.255", "192.168.201.0", "192.168.201.1",
                                        "192.168.201.2"]
    assert g.entries[1].addresses() == ["10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11"]
    assert g.entries[2].fwmark == 5 and g.entries[2].family == 4 and len(g.entries) == 3
    assert "EMPTY" not in config.virtual_server_groups
    assert config.warnings == [
        "(keepalived.conf:4) Address mask bits not empty - 10.0.0.9/30 - skipping",
        "(keepalived.conf:6) Address range end is not greater than address range start - 10.0.0.5-3 - skipping",
        "(keepalived.conf:9) virtual server group EMPTY has no entries - removing",
    ]


def test_group_entries_as_keepalived_reads_them():
    # the messages and lines of `keepalived -t` (2.2.7) for the same group; the daemon adds
    # "WARNING - " to two of them, and keeps those two entries (-t drops them)
    config = conf("""virtual_server_group G {
 10.0.0.5-5 80
 10.0.0.5-300
 10.0.0.5-7x 80
 10.0.0.1/33
 2001:db8::1-2001:db8::0
 10.0.0.1-2001:db8::5
 fwmark x1
 fwmark 7 ipx
 2001:db8::10-1f 443
 10.1.1.1 0
 bogus 80
}
""")
    assert config.warnings == [
        "(keepalived.conf:2) Address range end is not greater than address range start - 10.0.0.5-5 - skipping",
        "(keepalived.conf:3) Virtual server group range '10.0.0.5-300' end '300' too large",
        "(keepalived.conf:4) WARNING - Virtual server group range '10.0.0.5-7x' has extra characters at end 'x'",
        "(keepalived.conf:5) Invalid netmask - 10.0.0.1/33 - skipping",
        "(keepalived.conf:6) Address range end is less than address range start - 2001:db8::1-2001:db8::0 - skipping",
        "(keepalived.conf:7) Invalid virtual server group IP address 10.0.0.1-2001:db8::5  - skipping",
        "(keepalived.conf:8) WARNING - invalid number 'x1'",
        "(keepalived.conf:9) (G): fwmark '7' family ipx unknown - ignoring",
        "(keepalived.conf:12) Invalid virtual server group IP address bogus /port/80 - skipping",
    ]
    entries = [(e.first, e.last, e.port, e.fwmark) for e in config.virtual_server_groups["G"].entries]
    assert entries == [("10.0.0.5", "10.0.0.7", 80, None), (None, None, None, 0),
                       ("2001:db8::10", "2001:db8::1f", 443, None), ("10.1.1.1", "10.1.1.1", None, None)]


def test_group_and_virtual_server_families_must_agree():
    # keepalived's link_vsg_to_vs: a group with IPv4 and IPv6 cannot serve a virtual server whose
    # real servers fixed its family (log_message: keepalived -t does not print it)
    config = conf("virtual_server_group G {\n 10.0.0.1 80\n 2001:db8::1 80\n}\n"
                  "virtual_server group G {\n lvs_sched rr\n lvs_method NAT\n protocol TCP\n"
                  " real_server 192.0.2.1 80 {\n }\n}\n")
    assert config.virtual_servers == []
    assert config.warnings == ["(keepalived.conf:5) G: virtual server group with IPv4 & IPv6 doesn't match virtual "
                               "server [G]:0 - ignoring"]


def test_checker_types_and_options():
    config = sample("keepalived.conf.UDP_CHECK")
    udp, dns = (rs.checkers[0] for rs in config.virtual_servers[0].real_servers)
    assert isinstance(udp, UdpCheck) and udp.payload == bytes.fromhex("0123456789abcdef")
    assert udp.require_reply and udp.reply_pattern == "01XX3456" and (udp.min_reply_length, udp.max_reply_length) == (
        4, 64)
    assert isinstance(dns, DnsCheck) and (dns.type, dns.name, dns.retry) == ("A", "www.example.com", 3)
    assert dns.delay_before_retry == 6  # DNS: delay_before_retry defaults to delay_loop
    ping = sample("keepalived.conf.PING_CHECK").virtual_servers[0].real_servers[0].checkers[0]
    assert isinstance(ping, PingCheck) and ping.retry == 4
    smtp = sample("keepalived.conf.SMTP_CHECK").virtual_servers[0].real_servers[0].checkers[0]
    assert isinstance(smtp, SmtpCheck) and smtp.helo_name == "foo.bar.com" and smtp.retry == 2
    misc1, misc2 = (rs.checkers[0] for rs in sample("keepalived.conf.misc_check").virtual_servers[0].real_servers)
    assert isinstance(misc1, MiscCheck) and misc1.script.command == ["/usr/local/bin/script.sh"]
    assert misc1.misc_timeout == 6 and not misc1.misc_dynamic
    assert misc2.misc_timeout == 5 and misc2.misc_dynamic
    arg = sample("keepalived.conf.misc_check_arg").virtual_servers[0].real_servers[0].checkers[0]
    assert arg.script.command == ["/usr/local/bin/script.sh", "arg1", "arg2"]
    assert (arg.script.user, arg.script.group) == ("nobody", "nogroup")
    status = sample("keepalived.conf.status_code").virtual_servers[0].real_servers[0].checkers[0]
    assert status.urls[0].status_codes == [(200, 299), (400, 499), (503, 503), (505, 505)]
    port = sample("keepalived.conf.HTTP_GET.port").virtual_servers[0].real_servers[0].checkers[0]
    assert port.connect_port == 444


def test_ssl_get_and_ssl_block():
    config = sample("keepalived.conf.SSL_GET")
    assert (config.ssl.password, config.ssl.ca, config.ssl.certificate, config.ssl.key) == (
        "password", "/etc/keepalived/root.pem", "/etc/keepalived/client.pem", "/etc/keepalived/client.key")
    chk = config.virtual_servers[0].real_servers[0].checkers[0]
    assert chk.kind == "SSL_GET" and chk.ssl


def test_virtualhost_precedence_sample():
    vs = sample("keepalived.conf.virtualhost").virtual_servers[0]
    a, b = (rs.checkers[0] for rs in vs.real_servers)
    assert a.virtualhost == "www.rs.example" and a.urls[0].virtualhost == "www.url.example"
    assert b.virtualhost == "www.checker.example"


def test_http_url_options():
    config = conf("""
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 10.0.0.2 80 {
        SSL_GET {
            url {
                path /status
                regex "^OK [0-9]+"
                regex_no_match
                regex_options caseless multiline
                regex_min_offset 2
                regex_max_offset 100
                tls_compliant
            }
            url {
                digest 640205b7b0fc66c1ea91c463fac6334d
            }
            http_protocol 1.1
            fast_recovery
            enable_sni
            sni_name api.example
            nb_get_retry 5
        }
    }
}
""")
    chk = config.virtual_servers[0].real_servers[0].checkers[0]
    (url,) = chk.urls
    assert url.regex == "^OK [0-9]+" and url.regex_no_match and url.regex_options == ["caseless", "multiline"]
    assert (url.regex_min_offset, url.regex_max_offset, url.tls_compliant) == (2, 100, True)
    assert (chk.http_protocol, chk.fast_recovery, chk.enable_sni, chk.sni_name, chk.retry) == ("1.1", True, True,
                                                                                               "api.example", 5)
    assert "(keepalived.conf:17) HTTP/SSL_GET checker url has no path - ignoring" in config.warnings  # at its `}`
    assert "(keepalived.conf:22) nb_get_retry is deprecated - please use 'retry'" in config.warnings


def test_tunnel_options_and_fnat():
    vs = sample("tun.conf").virtual_servers[0]
    rs1, rs2 = vs.real_servers
    assert rs1.forwarding.method == "TUN" and rs1.forwarding.tun_type is None
    assert (rs2.forwarding.tun_type, rs2.forwarding.tun_port, rs2.forwarding.tun_csum) == ("gue", 6080, "csum")
    config = sample("fnat-dpvs.conf")
    vs = config.virtual_servers[0]
    assert vs.forwarding.method == "FNAT" and vs.laddr_group_name == "laddr_g1"
    assert config.local_address_groups["laddr_g1"].addresses == [("192.168.88.240", "dpdk0.102"),
                                                                 ("192.168.88.241", "dpdk0.102")]
    assert vs.real_servers[0].weight == 100 and vs.real_servers[0].inhibit_on_failure


# keepalived 2.2.7 (`keepalived -t`): the method is set once known, a bad tunnel option is
# logged and leaves the tunnel as it was
@pytest.mark.parametrize("method, message", [
    ("TUN type gue", "gue tunnels require port, otherwise cannot have port."),
    ("TUN type ipip port 5", "gue tunnels require port, otherwise cannot have port."),
    ("TUN type ipip csum", "ipip tunnels do not support checksum option."),
    ("TUN type gre remcsum", "gre tunnels do not support remote checksum option."),
    ("TUN type vxlan", "Unknown tunnel type vxlan for virtual server."),
    ("TUN type", "Missing tunnel type for virtual server."),
    ("NAT foo", "Invalid tunnel option foo for virtual server."),
])
def test_bad_tunnel_options(method, message):
    config = conf(f"virtual_server 10.0.0.1 80 {{\n protocol TCP\n lvs_method {method}\n"
                  f" real_server 10.0.0.2 80 {{\n }}\n}}\n")
    assert config.warnings == [f"(keepalived.conf:3) {message}",
                               "(keepalived.conf:1) Virtual server [10.0.0.1]:tcp:80: no scheduler set, setting "
                               "default 'wlc'"]
    fwd = config.virtual_servers[0].forwarding
    assert (fwd.method, fwd.tun_type, fwd.tun_port) == (method.split()[0], None, None)


def test_global_defs_lvs_items():
    config = conf("""
net_namespace_ipvs lvs
global_defs {
    router_id X
    checker_log_all_failures
    rs_init_notifies
    lvs_flush
    lvs_flush_on_stop VS
    lvs_timeouts tcp 900 tcpfin 30 udp 60
    lvs_sync_daemon eth1 VI_1 id 7 maxlen 1400 port 8848 ttl 2 group 224.0.0.81
    lvs_notify_fifo /run/lvs.fifo
    notify_fifo /run/all.fifo
    enable_script_security
    script_user nobody nogroup
    vrrp_garp_master_delay 5
    enable_snmp_checker
    net_namespace_ipvs misplaced
}
""")
    g = config.global_defs
    # net_namespace_ipvs is a top-level keyword in keepalived 2.2.7, not one of global_defs
    assert config.warnings == ["(keepalived.conf:17) Unknown keyword 'net_namespace_ipvs'"]
    assert g.checker_log_all_failures and g.rs_init_notifies and g.lvs_flush and g.lvs_flush_on_stop == "VS"
    assert g.lvs_timeouts == {"tcp": 900, "tcpfin": 30, "udp": 60}
    sd = g.lvs_sync_daemon
    assert (sd.interface, sd.instance, sd.syncid, sd.maxlen, sd.port, sd.ttl, sd.group) == (
        "eth1", "VI_1", 7, 1400, 8848, 2, "224.0.0.81")
    assert (g.lvs_notify_fifo, g.notify_fifo, g.enable_script_security) == ("/run/lvs.fifo", "/run/all.fifo", True)
    assert (g.script_user, g.script_group, g.net_namespace_ipvs) == ("nobody", "nogroup", "lvs")


def test_deprecated_lvs_sync_daemon_interface_feeds_the_global():
    config = sample("keepalived.conf.vrrp.lvs_syncd")
    sd = config.global_defs.lvs_sync_daemon
    assert (sd.interface, sd.instance) == ("eth1", "VI_1")
    assert any("lvs_sync_daemon_interface against a vrrp is deprecated" in w for w in config.warnings)


def test_file_check_and_track_file():
    config = conf("""
track_file maint {
    file /tmp/maint
    weight -10 reverse
    init_file 0 overwrite
}
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 10.0.0.2 80 {
        FILE_CHECK {
            track_file maint
        }
    }
    real_server 10.0.0.3 80 {
        FILE_CHECK {
            track_file maint
            weight 0
        }
        FILE_CHECK {
            track_file unknown
        }
        BFD_CHECK {
            name bfd1
        }
    }
}
""")
    tf = config.track_files["maint"]
    assert (tf.file, tf.weight, tf.reverse, tf.init_file, tf.overwrite) == ("/tmp/maint", -10, True, 0, True)
    rs2, rs3 = config.virtual_servers[0].real_servers
    (fc,) = rs2.checkers
    assert isinstance(fc, FileCheck) and (fc.weight, fc.reverse) == (-10, True)
    (fc0,) = rs3.checkers
    assert (fc0.weight, fc0.reverse) == (0, False)
    assert "(keepalived.conf:19) track_file unknown not found - ignoring FILE_CHECK" in config.warnings
    assert any("BFD_CHECK for real server" in w and "not supported" in w for w in config.warnings)


def test_notify_and_quorum_scripts():
    vs = sample("keepalived.conf.quorum").virtual_servers[0]
    assert vs.alpha and vs.omega and (vs.quorum, vs.hysteresis) == (7, 2) and len(vs.real_servers) == 10
    assert vs.quorum_up.command == ["/usr/local/bin/vip.sh", "up"]
    rs = conf('virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.0.2 80 {\n'
              ' notify_up "/bin/echo up" nobody nogroup\n notify_down /bin/down.sh\n }\n}\n').virtual_servers[0]
    rs = rs.real_servers[0]
    assert (rs.notify_up.command, rs.notify_up.user, rs.notify_up.group) == (["/bin/echo", "up"], "nobody", "nogroup")
    assert rs.notify_down.command == ["/bin/down.sh"] and rs.notify_down.user is None


def test_smtp_host_blocks_become_checkers():
    config = conf("virtual_server 10.0.0.1 25 {\n protocol TCP\n real_server 10.0.0.2 25 {\n SMTP_CHECK {\n"
                  " helo_name me\n host {\n connect_ip 10.0.0.8\n }\n host {\n connect_ip 10.0.0.9\n }\n }\n }\n}\n")
    checks = config.virtual_servers[0].real_servers[0].checkers
    assert [(c.connect_ip, c.helo_name) for c in checks] == [("10.0.0.8", "me"), ("10.0.0.9", "me")]


def test_unknown_keywords_are_warnings_with_file_and_line():
    path = os.path.join(DATA, "broken", "unknown_keyword.conf")
    config = load(path, echo=False)
    assert [w for w in config.warnings if "Unknown keyword" in w] == [
        f"({path}:3) Unknown keyword 'lvs_id'", f"({path}:9) Unknown keyword 'frobnicate'",
        f"({path}:14) Unknown keyword 'bogus'"]
    assert config.virtual_servers[0].real_servers[0].checkers[0].connect_timeout == 3
    assert all(d.level == "warning" for d in config.diagnostics if "Unknown keyword" in d.message)


def test_bad_values_are_logged_and_ignored():
    # every message, in order, as keepalived 2.2.7 gives them: for a bad number the number reader's
    # complaint comes first, then the keyword's. `keepalived -t` printed exactly these, less the
    # "WARNING - " the daemon puts before a complaint from a reader told to carry on (lib/parser.c)
    path = os.path.join(DATA, "broken", "bad_values.conf")
    config = load(path, echo=False)
    assert [(d.line, d.message) for d in config.diagnostics] == [
        (2, "Invalid lvs_scheduler 'roundrobin' - ignoring"),
        (3, "PARSER : unknown [dr] routing method for virtual server."),
        (4, "Unknown protocol ICMP - ignoring"),
        (5, "WARNING - invalid number 'soon'"),
        (5, "virtual server delay loop 'soon' invalid - ignoring"),
        (6, "number '9999999' outside range [1, 2678400]"),
        (6, "persistence_timeout invalid"),
        (7, "WARNING - number '0' outside range [1, 4294967295]"),
        (7, "Quorum 0 must be in [1, 4294967295]. Setting to 1."),
        (9, "WARNING - negative number '-5'"),
        (9, "Real server weight -5 is outside range 0-2147483647"),
        (12, "WARNING - number '99999' outside range [1, 65535]"),
        (12, "Invalid checker connect_port '99999'"),
        (17, "digest 'nothex' character length should be 32 rather than 6"),
        (18, "Invalid HTTP_GET status code '700'"),
        (23, "HTTP/SSL_GET checker has no urls specified - ignoring"),  # at its `}`
        (25, "Invalid real server ip address/port 10.1.0.300/80 - skipping"),
        (1, "Virtual server [10.0.0.1]:none:80: no protocol set - defaulting to UDP"),
        (1, "Virtual server [10.0.0.1]:udp:80: no scheduler set, setting default 'wlc'"),
        (1, "Virtual server [10.0.0.1]:udp:80: no forwarding method set, setting default NAT"),
    ]
    vs = config.virtual_servers[0]
    assert (vs.scheduler, vs.forwarding.method, vs.protocol, vs.delay_loop, vs.quorum) == ("wlc", "NAT", "UDP", None, 1)
    (rs,) = vs.real_servers
    assert rs.weight == 1
    assert [type(c) for c in rs.checkers] == [TcpCheck, HttpCheck]


def test_vrrp_and_other_blocks_are_skipped_quietly():
    config = sample("case-study-mixing.conf")
    assert config.warnings == []
    assert config.vrrp_instances["VI_2"].virtual_ipaddress == ["192.168.100.10"]
    assert [vs.sorry_server is not None for vs in config.virtual_servers] == [True, False]


def test_checker_bad_values_as_keepalived_logs_them():
    # messages and lines as `keepalived -t` (2.2.7) gave them for the same text
    config = conf("""virtual_server 192.0.2.100 53 {
    lvs_sched rr
    lvs_method NAT
    protocol UDP
    real_server 192.0.2.11 53 {
        UDP_CHECK {
            payload zz
            require_reply 0g
            min_reply_length 9
            max_reply_length 4
            min_reply_length x70000
        }
        DNS_CHECK {
            type BOGUS
            type aaaa
        }
        HTTP_GET {
            url {
                path /
                status_code 200 7000 300-250 404
                digest 0123456789abcdef0123456789abcdeZ
            }
        }
        FILE_CHECK {
            file /tmp/x
        }
    }
}
""")
    assert config.warnings == [
        "(keepalived.conf:7) Invalid hex string for UDP_CHECK payload",
        "(keepalived.conf:8) Invalid hex string for UDP_CHECK reply",
        "(keepalived.conf:11) invalid number 'x70000'",
        "(keepalived.conf:11) UDP_CHECK min length x70000 not valid - must be between 0 & 65535",
        "(keepalived.conf:12) UDP_CHECK min_reply length 9 > max_reply_length 4 - will always fail",
        "(keepalived.conf:14) Unknown DNS check type BOGUS - ignoring",
        "(keepalived.conf:20) Invalid HTTP_GET status code '7000'",
        "(keepalived.conf:20) Invalid HTTP_GET status code '300-250'",
        "(keepalived.conf:21) Unable to interpret hex digit in '0123456789abcdef0123456789abcdeZ' at offset 30/31",
        "(keepalived.conf:25) Unknown keyword 'file'",
        "(keepalived.conf:26) FILE_CHECK has no track_file specified - ignoring",
    ]
    udp, dns, http = config.virtual_servers[0].real_servers[0].checkers
    assert udp.require_reply and (udp.min_reply_length, udp.max_reply_length) == (9, 4)  # kept: it will always fail
    assert dns.type == "AAAA" and http.urls[0].status_codes == [(200, 200), (404, 404)] and http.urls[0].digest is None
