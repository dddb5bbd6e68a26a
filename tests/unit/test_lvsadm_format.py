"""Golden output of the ipvsadm listing formats (ipvs.md §1.6).

Every expected string is written by hand from ipvsadm's printf formats or copied from the rendered
samples in the reference. A `|` marks the end of each line so that trailing spaces are visible.
"""

from __future__ import annotations

from typing import Any

import pytest

from pylvs.ipvsadm import format as f
from pylvs.ipvsadm.format import Fmt

N = Fmt.NUMERIC
INFO = {"version": "1.2.1", "size": 4096, "services": 4}


def ends(text: str) -> str:
    """Expected output written with `|` at the end of every line."""
    lines = text.strip("\n").split("\n")
    assert all(line.endswith("|") for line in lines), "every expected line must end with |"
    return "".join(line[:-1] + "\n" for line in lines)


def dest(addr: str, port: int, method: str = "route", weight: int = 1, active: int = 0, inact: int = 0,
         **extra: Any) -> dict[str, Any]:
    d = {"addr": addr, "port": port, "method": method, "weight": weight, "u_threshold": 0, "l_threshold": 0,
         "tun_type": "ipip", "tun_port": 0, "tun_flags": "nocsum", "activeconns": active, "inactconns": inact,
         "persistconns": 0}
    d.update(extra)
    return d


def service(ident: dict[str, Any], scheduler: str = "wlc", flags: int = 0, timeout: int = 0,
            netmask: Any = "255.255.255.255", pe: str = "", dests: list[dict[str, Any]] | None = None,
            **extra: Any) -> dict[str, Any]:
    s = dict(ident, scheduler=scheduler, flags=flags, timeout=timeout, netmask=netmask, pe=pe, dests=dests or [])
    s.update(extra)
    return s


def tcp(addr: str, port: int) -> dict[str, Any]:
    return {"protocol": "tcp", "addr": addr, "port": port}


def udp(addr: str, port: int) -> dict[str, Any]:
    return {"protocol": "udp", "addr": addr, "port": port}


# the services of the reference's rendered `ipvsadm -Ln` sample
S_WEB = service(tcp("192.168.0.1", 80), "wlc", flags=1, timeout=300, netmask="255.255.255.0",
                dests=[dest("10.0.0.2", 8080, "masq", 1, 3, 12), dest("10.0.0.3", 8080, "masq", 0, 0, 0)])
S_DNS = service(udp("192.168.0.1", 53), "sh", flags=8 | 16, dests=[dest("10.0.0.2", 53, "route", 1, 0, 5)])
S_FWM = service({"fwmark": 1}, "rr", dests=[dest("10.0.0.4", 0, "tunnel", 2)])
S_V6 = service(tcp("2001:db8::1", 443), "mh", flags=4, netmask=128)

REFERENCE_LN = ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  192.168.0.1:80 wlc persistent 300 mask 255.255.255.0|
  -> 10.0.0.2:8080                Masq    1      3          12        |
  -> 10.0.0.3:8080                Masq    0      0          0         |
UDP  192.168.0.1:53 sh (sh-fallback,sh-port)|
  -> 10.0.0.2:53                  Route   1      0          5         |
FWM  1 rr|
  -> 10.0.0.4:0                   Tunnel  2      0          0         |
TCP  [2001:db8::1]:443 mh ops|
""")


def test_reference_sample_in_kernel_order():
    out = f.format_services([S_WEB, S_DNS, S_FWM, S_V6], N | Fmt.NOSORT, INFO)
    assert out == REFERENCE_LN


def test_default_listing_is_sorted():
    web = dict(S_WEB, dests=list(reversed(S_WEB["dests"])))
    out = f.format_services([S_FWM, S_V6, S_DNS, web], N, INFO)
    # fwmark 0 first; then AF_INET before AF_INET6; TCP (6) before UDP (17); fwmark services last
    assert out == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
TCP  192.168.0.1:80 wlc persistent 300 mask 255.255.255.0|
  -> 10.0.0.2:8080                Masq    1      3          12        |
  -> 10.0.0.3:8080                Masq    0      0          0         |
UDP  192.168.0.1:53 sh (sh-fallback,sh-port)|
  -> 10.0.0.2:53                  Route   1      0          5         |
TCP  [2001:db8::1]:443 mh ops|
FWM  1 rr|
  -> 10.0.0.4:0                   Tunnel  2      0          0         |
""")


def test_empty_table():
    assert f.format_services([], N, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
""")


def test_single_service_has_no_version_header():
    assert f.format_single_service(S_DNS, N) == ends("""
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn|
UDP  192.168.0.1:53 sh (sh-fallback,sh-port)|
  -> 10.0.0.2:53                  Route   1      0          5         |
""")


def test_service_line_variants():
    cases = [
        (service(tcp("10.0.0.1", 80), "wlc", flags=8 | 32), "TCP  10.0.0.1:80 wlc (flag-1,flag-3)|"),
        (service(tcp("10.0.0.1", 80), "mh", flags=16), "TCP  10.0.0.1:80 mh (mh-port)|"),
        (service(udp("10.0.0.1", 5060), "rr", flags=1 | 4, timeout=360, pe="sip"),
         "UDP  10.0.0.1:5060 rr persistent 360 pe sip ops|"),
        # pe is only shown for persistent services in the listing
        (service(udp("10.0.0.1", 5060), "rr", pe="sip"), "UDP  10.0.0.1:5060 rr|"),
        (service(tcp("2001:db8::1", 443), flags=1, timeout=60, netmask=64),
         "TCP  [2001:db8::1]:443 wlc persistent 60 mask 64|"),
        (service(tcp("2001:db8::1", 443), flags=1, timeout=60, netmask=128),
         "TCP  [2001:db8::1]:443 wlc persistent 60|"),
        (service({"fwmark": 2, "af": "inet6"}, "rr", netmask=128), "FWM  2 IPv6 rr|"),
        (service({"protocol": "sctp", "addr": "10.0.0.1", "port": 9}, "rr"), "SCTP 10.0.0.1:9 rr|"),
        (service(tcp("10.0.0.1", 0), "lc", flags=1, timeout=10), "TCP  10.0.0.1:0 lc persistent 10|"),
    ]
    for svc, expected in cases:
        assert f.service_line(svc, N) == ends(expected)


def test_fullnat_and_local_forward_names():
    svc = service(tcp("10.0.0.1", 80), dests=[dest("10.0.1.1", 8080, "fullnat", 5), dest("10.0.1.2", 80, "local")])
    assert f.format_service_entry(svc, N) == ends("""
TCP  10.0.0.1:80 wlc|
  -> 10.0.1.1:8080                FullNat 5      0          0         |
  -> 10.0.1.2:80                  Local   1      0          0         |
""")


STATS = {"conns": 1234, "inpkts": 56789, "outpkts": 50000, "inbytes": 123456789, "outbytes": 98765432100}
RATES = {"cps": 12, "inpps": 340, "outpps": 300, "inbps": 45000, "outbps": 400000}
S_STATS = service(tcp("192.168.0.1", 80), stats=STATS, rates=RATES,
                  dests=[dest("10.0.0.2", 8080, "masq", stats=STATS, rates=RATES)])


def test_stats_reference_sample():
    assert f.format_services([S_STATS], N | Fmt.STATS, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
TCP  192.168.0.1:80                   1234    56789    50000  123456K   98765M|
  -> 10.0.0.2:8080                    1234    56789    50000  123456K   98765M|
""")


def test_rate_reference_sample():
    assert f.format_services([S_STATS], N | Fmt.RATE, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS|
  -> RemoteAddress:Port|
TCP  192.168.0.1:80                     12      340      300    45000   400000|
  -> 10.0.0.2:8080                      12      340      300    45000   400000|
""")


def test_stats_exact():
    assert f.format_services([S_STATS], N | Fmt.STATS | Fmt.EXACT, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes|
  -> RemoteAddress:Port|
TCP  192.168.0.1:80                   1234    56789    50000 123456789 98765432100|
  -> 10.0.0.2:8080                    1234    56789    50000 123456789 98765432100|
""")


def test_rate_dest_pps_columns_are_never_abbreviated():
    big = {"cps": 123456789, "inpps": 200000000, "outpps": 1, "inbps": 123456789, "outbps": 5}
    svc = service(tcp("192.168.0.1", 80), rates=big, dests=[dest("10.0.0.2", 8080, rates=big)])
    assert f.format_service_entry(svc, N | Fmt.RATE) == ends("""
TCP  192.168.0.1:80                123456K  200000K        1  123456K        5|
  -> 10.0.0.2:8080                123456789 200000000        1  123456K        5|
""")


@pytest.mark.parametrize(("value", "text"), [
    (0, "        0"),
    (99_999_999, " 99999999"),
    (100_000_000, "  100000K"),
    (999_999_999, "  999999K"),
    (1_000_000_000, "    1000M"),
    (99_999_999_999, "   99999M"),
    (100_000_000_000, "     100G"),
    (99_999_999_999_999, "   99999G"),
    (100_000_000_000_000, "     100T"),
])
def test_largenum(value, text):
    assert f.largenum(value, Fmt.NONE) == text


@pytest.mark.parametrize(("value", "text"), [
    (12, "       12"),
    (12345678, " 12345678"),
    (123456789, " 123456789"),
    (2**64 - 1, " 18446744073709551615"),
])
def test_largenum_exact(value, text):
    assert f.largenum(value, Fmt.EXACT) == text


def test_thresholds():
    svc = service(tcp("192.168.0.1", 80), dests=[dest("10.0.0.2", 8080, "masq", 1, 3, 12,
                                                       u_threshold=100, l_threshold=50)])
    assert f.format_services([svc], N | Fmt.THRESHOLDS, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  192.168.0.1:80 wlc|
  -> 10.0.0.2:8080                100        50         3          12        |
""")


def test_persistent_conn():
    svc = service(tcp("192.168.0.1", 80), flags=1, timeout=360,
                  dests=[dest("10.0.0.2", 8080, "masq", 1, 3, 12, persistconns=7)])
    assert f.format_services([svc], N | Fmt.PERSISTENTCONN, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn |
  -> RemoteAddress:Port|
TCP  192.168.0.1:80 wlc persistent 360|
  -> 10.0.0.2:8080                1         7           3          12        |
""")


def test_tun_info_reference_sample():
    svc = service(tcp("192.168.0.1", 80), dests=[
        dest("10.0.0.5", 80, "route"),
        dest("10.0.0.3", 80, "tunnel", tun_type="gre", tun_flags="csum"),
        dest("10.0.0.2", 80, "tunnel", tun_type="gue", tun_port=6080, tun_flags="nocsum"),
        dest("10.0.0.6", 80, "tunnel", tun_type="ipip"),
        dest("10.0.0.7", 80, "tunnel", tun_type="gue", tun_port=5555, tun_flags="remcsum"),
    ])
    assert f.format_services([svc], N | Fmt.TUN_INFO, INFO) == ends("""
IP Virtual Server version 1.2.1 (size=4096)|
Prot LocalAddress:Port Scheduler Flags|
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn|
TCP  192.168.0.1:80 wlc|
  -> 10.0.0.2:80                  Tunnel  gue:6080:-c   1      0          0         |
  -> 10.0.0.3:80                  Tunnel  gre:+c        1      0          0         |
  -> 10.0.0.5:80                  Route   n/a           1      0          0         |
  -> 10.0.0.6:80                  Tunnel  ipip          1      0          0         |
  -> 10.0.0.7:80                  Tunnel  gue:5555:r+c  1      0          0         |
""")


def test_format_priority_stats_wins():
    # ipvsadm checks STATS, RATE, THRESHOLDS, PERSISTENTCONN, TUN_INFO in this order
    both = N | Fmt.STATS | Fmt.RATE | Fmt.THRESHOLDS
    assert f.format_title(both) == f.format_title(N | Fmt.STATS)
    assert f.format_title(N | Fmt.THRESHOLDS | Fmt.TUN_INFO) == f.format_title(N | Fmt.THRESHOLDS)


def test_ipv6_destination_is_not_truncated():
    svc = service(tcp("2001:db8::1", 8080), dests=[dest("2001:db8:1234:5678:9abc:def0:1234:5678", 8080, "tunnel")])
    assert f.format_service_entry(svc, N) == ends("""
TCP  [2001:db8::1]:8080 wlc|
  -> [2001:db8:1234:5678:9abc:def0:1234:5678]:8080 Tunnel  1      0          0         |
""")


def test_names_are_truncated_to_33_and_28(monkeypatch):
    monkeypatch.setattr(f, "_host_name", lambda addr, family: "a-very-long-host-name.example.com")
    monkeypatch.setattr(f, "_port_name", lambda port, proto: "http")
    svc = service(tcp("192.168.0.1", 80), dests=[dest("10.0.0.2", 80)])
    assert f.format_service_entry(svc, Fmt.NONE) == ends("""
TCP  a-very-long-host-name.exampl wlc|
  -> a-very-long-host-name.exampl Route   1      0          0         |
""")
    # rule format keeps the whole name
    assert f.format_service_entry(svc, Fmt.RULE) == ends("""
-A -t a-very-long-host-name.example.com:http -s wlc|
-a -t a-very-long-host-name.example.com:http -r a-very-long-host-name.example.com:http -g -w 1|
""")


def test_names_fall_back_to_numbers(monkeypatch):
    monkeypatch.setattr(f, "_host_name", lambda addr, family: addr)
    svc = service(udp("192.168.0.1", 53), dests=[dest("10.0.0.2", 40000)])
    # port names come from getservbyport (/etc/services); unknown ports stay numbers
    assert f.format_service_entry(svc, Fmt.NONE) == ends("""
UDP  192.168.0.1:domain wlc|
  -> 10.0.0.2:40000               Route   1      0          0         |
""")


# ---------------------------------------------------------------------------------------------
# -S (rule format)


def test_save_reference_lines():
    web = service(tcp("192.168.0.1", 80), "wlc", flags=1, timeout=300, netmask="255.255.255.0",
                  dests=[dest("10.0.0.2", 8080, "masq", 1)])
    assert f.format_services([web], N | Fmt.RULE) == ends("""
-A -t 192.168.0.1:80 -s wlc -p 300 -M 255.255.255.0|
-a -t 192.168.0.1:80 -r 10.0.0.2:8080 -m -w 1|
""")
    assert f.format_services([S_DNS], N | Fmt.RULE) == ends("""
-A -u 192.168.0.1:53 -s sh -b sh-fallback,sh-port|
-a -u 192.168.0.1:53 -r 10.0.0.2:53 -g -w 1|
""")
    gue = service(tcp("192.168.0.1", 80), dests=[dest("10.0.0.2", 80, "tunnel", tun_type="gue", tun_port=6080)])
    assert f.format_service_entry(gue, N | Fmt.RULE).splitlines()[1] == (
        "-a -t 192.168.0.1:80 -r 10.0.0.2:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum")
    assert f.format_services([service({"fwmark": 1}, "rr")], N | Fmt.RULE) == ends("""
-A -f 1 -s rr|
""")


def test_save_every_variant_sorted_without_header():
    services = [
        service({"fwmark": 2, "af": "inet6"}, "rr", flags=1, timeout=360, netmask=64,
                dests=[dest("2001:db8::9", 0, "masq", 3)]),
        service({"fwmark": 1}, "rr", dests=[dest("10.0.0.4", 0, "tunnel", 2)]),
        service(udp("10.0.0.1", 5060), "rr", flags=1 | 4, timeout=360, pe="sip"),
        service(tcp("2001:db8::1", 443), "mh", flags=16, netmask=128),
        service(tcp("10.0.0.1", 80), "wlc", flags=8 | 32, dests=[
            dest("10.0.1.5", 80, "local"),
            dest("10.0.1.4", 8080, "fullnat", 4),
            dest("10.0.1.3", 80, "tunnel", tun_type="gre", tun_flags="csum"),
            dest("10.0.1.2", 80, "tunnel", tun_type="gue", tun_port=7777, tun_flags="remcsum"),
            dest("10.0.1.1", 80, "route", 0, u_threshold=10, l_threshold=5),  # -S drops thresholds
        ]),
    ]
    assert f.format_services(services, N | Fmt.RULE, INFO) == ends("""
-A -t 10.0.0.1:80 -s wlc -b flag-1,flag-3|
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 0|
-a -t 10.0.0.1:80 -r 10.0.1.2:80 -i -w 1 --tun-type gue --tun-port 7777 --tun-remcsum|
-a -t 10.0.0.1:80 -r 10.0.1.3:80 -i -w 1 --tun-type gre --tun-csum|
-a -t 10.0.0.1:80 -r 10.0.1.4:8080 --fullnat -w 4|
-a -t 10.0.0.1:80 -r 10.0.1.5:80 -g -w 1|
-A -u 10.0.0.1:5060 -s rr -p 360 --pe sip -o|
-A -t [2001:db8::1]:443 -s mh -b mh-port|
-A -f 1 -s rr|
-a -f 1 -r 10.0.0.4:0 -i -w 2 --tun-type ipip|
-A -f 2 -6 -s rr -p 360 -M 64|
-a -f 2 -6 -r [2001:db8::9]:0 -m -w 3|
""")


# ---------------------------------------------------------------------------------------------
# sorting quirks (libipvs comparators, glibc merge sort)


def _order(services: list[dict[str, Any]]) -> list[str]:
    return [line for line in f.format_services(services, N | Fmt.RULE).splitlines() if line.startswith("-A")]


def test_address_difference_overflows_int():
    # ntohl(10.0.0.1) - ntohl(192.168.0.1) wraps to a positive int: 10.0.0.1 sorts last
    a, b = service(tcp("10.0.0.1", 80)), service(tcp("192.168.0.1", 80))
    assert _order([a, b]) == ["-A -t 192.168.0.1:80 -s wlc", "-A -t 10.0.0.1:80 -s wlc"]
    near = service(tcp("100.0.0.1", 80))
    assert _order([near, a]) == ["-A -t 10.0.0.1:80 -s wlc", "-A -t 100.0.0.1:80 -s wlc"]
    svc = service(tcp("1.1.1.1", 80), dests=[dest("10.0.0.1", 80), dest("192.168.0.2", 80)])
    lines = f.format_service_entry(svc, N).splitlines()
    assert lines[1].startswith("  -> 192.168.0.2:80 ") and lines[2].startswith("  -> 10.0.0.1:80 ")


def test_fwmark_difference_overflows_int():
    # 1 - (2^31 + 2) as a C int is +0x7fffffff: the huge mark sorts first
    assert _order([service({"fwmark": 1}), service({"fwmark": 2**31 + 2})]) == [
        "-A -f 2147483650 -s wlc", "-A -f 1 -s wlc"]
    # a difference of exactly 2^31 is INT_MIN both ways: merge sort keeps the input order
    assert _order([service({"fwmark": 1}), service({"fwmark": 2**31 + 1})]) == [
        "-A -f 1 -s wlc", "-A -f 2147483649 -s wlc"]


def test_non_transitive_order_follows_merge_sort():
    # A=1.0.0.0 < B=100.0.0.0 < C=200.0.0.0 but C < A (overflow): a cycle. glibc's merge sort of
    # [C, B, A] sorts [B, A] -> [A, B], then merges [C] with it: C <= A, so C comes first.
    a, b, c = (service(tcp(ip, 80)) for ip in ("1.0.0.0", "100.0.0.0", "200.0.0.0"))
    assert _order([c, b, a]) == ["-A -t 200.0.0.0:80 -s wlc", "-A -t 1.0.0.0:80 -s wlc",
                                 "-A -t 100.0.0.0:80 -s wlc"]
    assert _order([a, b, c]) == ["-A -t 1.0.0.0:80 -s wlc", "-A -t 100.0.0.0:80 -s wlc",
                                 "-A -t 200.0.0.0:80 -s wlc"]


def test_sort_keys_in_order():
    services = [
        service(udp("10.0.0.1", 80)),
        service(tcp("10.0.0.1", 443)),
        service(tcp("10.0.0.1", 80)),
        service(tcp("2001:db8::2", 80)),
        service(tcp("2001:db8::1", 80)),
        service({"fwmark": 3}),
    ]
    assert _order(services) == [
        "-A -t 10.0.0.1:80 -s wlc", "-A -t 10.0.0.1:443 -s wlc", "-A -u 10.0.0.1:80 -s wlc",
        "-A -t [2001:db8::1]:80 -s wlc", "-A -t [2001:db8::2]:80 -s wlc", "-A -f 3 -s wlc",
    ]


def test_dests_sorted_by_address_then_port_and_nosort_keeps_kernel_order():
    svc = service(tcp("10.0.0.1", 80), dests=[dest("10.0.0.3", 80, "masq"), dest("10.0.0.2", 81, "masq"),
                                              dest("10.0.0.2", 80, "masq")])
    sorted_lines = [line.split()[1] for line in f.format_service_entry(svc, N).splitlines()[1:]]
    assert sorted_lines == ["10.0.0.2:80", "10.0.0.2:81", "10.0.0.3:80"]
    kernel_lines = [line.split()[1] for line in f.format_service_entry(svc, N | Fmt.NOSORT).splitlines()[1:]]
    assert kernel_lines == ["10.0.0.3:80", "10.0.0.2:81", "10.0.0.2:80"]


# ---------------------------------------------------------------------------------------------
# -c, --timeout, --daemon, -G

CONNS = [
    {"protocol": "TCP", "state": "ESTABLISHED", "expires": 893, "caddr": "172.16.0.9", "cport": 51234,
     "vaddr": "192.168.0.1", "vport": 80, "daddr": "10.0.0.2", "dport": 8080, "template": False},
    {"protocol": "UDP", "state": "UDP", "expires": 299, "caddr": "172.16.0.9", "cport": 40000,
     "vaddr": "192.168.0.1", "vport": 53, "daddr": "10.0.0.2", "dport": 53, "template": False},
    {"protocol": "TCP", "state": "NONE", "expires": 298, "caddr": "172.16.0.0", "cport": 0,
     "vaddr": "192.168.0.1", "vport": 80, "daddr": "10.0.0.2", "dport": 8080, "template": True},
]


def test_connections_reference_sample():
    assert f.format_conns(CONNS, N) == ends("""
IPVS connection entries|
pro expire state       source             virtual            destination|
TCP 14:53  ESTABLISHED 172.16.0.9:51234   192.168.0.1:80     10.0.0.2:8080|
UDP 04:59  UDP         172.16.0.9:40000   192.168.0.1:53     10.0.0.2:53|
TCP 04:58  NONE        172.16.0.0:0       192.168.0.1:80     10.0.0.2:8080|
""")


def test_connections_persistent_conn_and_long_expiry():
    conns = [
        {"protocol": "UDP", "state": "UDP", "expires": 299, "caddr": "172.16.0.9", "cport": 5060,
         "vaddr": "192.168.0.1", "vport": 5060, "daddr": "10.0.0.2", "dport": 5060, "pe_name": "sip",
         "pe_data": "abc@host"},
        {"protocol": "IP", "state": "ASSURED", "expires": 6000, "caddr": "172.16.0.0", "cport": 0,
         "vaddr": "0.0.0.1", "vport": 0, "daddr": "10.0.0.4", "dport": 0, "template": True},
        {"protocol": "TCP", "state": "SYN_RECV", "expires": 59, "caddr": "2001:db8::77", "cport": 40000,
         "vaddr": "2001:db8::1", "vport": 443, "daddr": "2001:db8::2", "dport": 443},
    ]
    assert f.format_conns(conns, N | Fmt.PERSISTENTCONN) == ends("""
IPVS connection entries|
pro expire state       source             virtual            destination        pe name          pe_data|
UDP 04:59  UDP         172.16.0.9:5060    192.168.0.1:5060   10.0.0.2:5060    sip                abc@host|
IP  100:00 ASSURED     172.16.0.0:0       0.0.0.1:0          10.0.0.4:0|
TCP 00:59  SYN_RECV    [2001:db8::77]:40000 [2001:db8::1]:443  [2001:db8::2]:443|
""")


def test_timeout_line():
    assert f.format_timeout({"tcp": 900, "tcpfin": 120, "udp": 300}) == "Timeout (tcp tcpfin udp): 900 120 300\n"


def test_daemon_lines_master_first():
    daemons = [
        {"state": "backup", "mcast_ifn": "eth1", "syncid": 2},
        {"state": "master", "mcast_ifn": "eth0", "syncid": 0, "sync_maxlen": 1472, "mcast_group": "224.0.0.81",
         "mcast_port": 8848, "mcast_ttl": 1},
    ]
    assert f.format_daemons(daemons) == ends("""
master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)|
backup sync daemon (mcast=eth1, syncid=2)|
""")
    assert f.format_daemons([]) == ""


def test_laddr_listing_dpvs_layout():
    services = [dict(tcp("1.2.3.4", 80), laddrs=[{"addr": "10.0.0.9", "conflicts": 0, "conns": 5}])]
    assert f.format_laddrs(services) == ends("""
VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS     |
1.2.3.4:80           1        |
                              10.0.0.9             0          5         |
""")


def test_header_accepts_version_code():
    assert f.format_header({"version": 0x010201, "size": 4096}) == "IP Virtual Server version 1.2.1 (size=4096)\n"
