"""A corpus of ipvsadm 1.31 command lines: the requests they become, or ipvsadm's error and exit code.

Expected messages and codes come from ipvsadm.c (`fail(2, ...)`, `tryhelp_exit(-1)` = 255, popt
errors = 255) and the legality matrix in ipvs.md §1.3.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from pylvs.ipvsadm import args as ipvsadm_args
from pylvs.ipvsadm.args import MATRIX, OPTNAMES, ParseError, parse_command
from pylvs.ipvsadm.format import Fmt

N = Fmt.NUMERIC
TRYHELP = "Try `lvsadm -h' or 'lvsadm --help' for more information."
SVC_DEFAULTS = {"scheduler": "wlc", "flags": 0, "timeout": 0, "netmask": "255.255.255.255", "pe": ""}
DEST_DEFAULTS = {"method": "route", "weight": 1, "u_threshold": 0, "l_threshold": 0, "tun_type": "ipip",
                 "tun_port": 0, "tun_flags": "nocsum"}
T80 = {"protocol": "tcp", "addr": "1.2.3.4", "port": 80}


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """Keep name lookups off the network: only `localhost` resolves."""
    monkeypatch.setattr(ipvsadm_args, "_host_to_addr", lambda name: "127.0.0.1" if name == "localhost" else None)


def parse(line: str, reading_stdin: bool = False) -> ipvsadm_args.Command:
    return parse_command(shlex.split(line), "lvsadm", reading_stdin)


def add_service(ident: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"op": "add-service", "service": ident | SVC_DEFAULTS | over}


def dest_req(op: str, svc: dict[str, Any], addr: str, port: int, **over: Any) -> dict[str, Any]:
    return {"op": op, "svc": svc, "dest": {"addr": addr, "port": port} | DEST_DEFAULTS | over}


REQUESTS = [
    # virtual services
    ("-A -t 192.168.0.1:80", add_service({"protocol": "tcp", "addr": "192.168.0.1", "port": 80})),
    ("-A -t 1.2.3.4:80 -s rr -p", add_service(T80, scheduler="rr", flags=1, timeout=360)),
    ("-A -t 1.2.3.4:0 -p 60 -M 255.255.255.0",
     add_service(T80 | {"port": 0}, flags=1, timeout=60, netmask="255.255.255.0")),
    ("-A -u 10.0.0.1:53 -o -s sh -b sh-port,sh-fallback",
     add_service({"protocol": "udp", "addr": "10.0.0.1", "port": 53}, scheduler="sh", flags=4 | 8 | 16)),
    ("-A -f 7 -s rr", add_service({"fwmark": 7}, scheduler="rr")),
    ("-A -f 7 -o", add_service({"fwmark": 7}, flags=4)),
    ("-A -f 7 -6 -p -M 64", add_service({"fwmark": 7, "af": "inet6"}, flags=1, timeout=360, netmask=64)),
    ("-A -f 7 -6", add_service({"fwmark": 7, "af": "inet6"}, netmask=128)),
    ("-E -t 1.2.3.4:80", {"op": "edit-service", "service": T80 | SVC_DEFAULTS}),
    ("--add-service --tcp-service=1.2.3.4:80 --scheduler=lc --persistent=120 --netmask=255.255.0.0",
     add_service(T80, scheduler="lc", flags=1, timeout=120, netmask="255.255.0.0")),
    ("-A -t [2001:db8::1]:443 -s mh", add_service({"protocol": "tcp", "addr": "2001:db8::1", "port": 443},
                                                  scheduler="mh", netmask=128)),
    ("-A -t [2001:DB8:0::1]:443 -p -M 48",
     add_service({"protocol": "tcp", "addr": "2001:db8::1", "port": 443}, flags=1, timeout=360, netmask=48)),
    ("-At 1.2.3.4:80", add_service(T80)),
    ("-A -t1.2.3.4:80 -srr", add_service(T80, scheduler="rr")),
    ("-A -t=1.2.3.4:80", add_service(T80)),
    ("-A -t 1.2.3.4:http", add_service(T80)),
    ("-A -u 1.2.3.4:domain", add_service({"protocol": "udp", "addr": "1.2.3.4", "port": 53})),
    ("-A -t 1.2.3.4:+80", add_service(T80)),
    ("-A -t 10:80", add_service(T80 | {"addr": "0.0.0.10"})),  # inet_aton's short forms
    ("-A -t localhost:80", add_service(T80 | {"addr": "127.0.0.1"})),
    ("-A -t 1.2.3.4:80 -p -s rr", add_service(T80, scheduler="rr", flags=1, timeout=360)),
    ("-A -t 1.2.3.4:80 -p300", add_service(T80, flags=1, timeout=300)),
    ("-A -t 1.2.3.4:80 -b ''", add_service(T80)),
    ("-A -t 1.2.3.4:80 -s sh -b flag-3", add_service(T80, scheduler="sh", flags=32)),
    ("-A -t 1.2.3.4:80 --sort --pe sip -p", add_service(T80, flags=1, timeout=360, pe="sip")),
    ("-A -t 1.2.3.4:80 -s averyveryverylongname", add_service(T80, scheduler="averyveryverylo")),
    # a bracketed IPv4 address loses its port, exactly as parse_service does
    ("-A -t [1.2.3.4]:80 -p", add_service(T80 | {"port": 0}, flags=1, timeout=360)),
    ("--sctp-service 1.2.3.4:9 -A", None),  # command not first: covered in ERRORS
    ("-A --sctp-service 1.2.3.4:9", add_service({"protocol": "sctp", "addr": "1.2.3.4", "port": 9})),
    ("-D -t 1.2.3.4:80", {"op": "del-service", "svc": T80}),
    ("-D -f 3 -6", {"op": "del-service", "svc": {"fwmark": 3, "af": "inet6"}}),
    ("-C", {"op": "flush"}),
    ("--clear", {"op": "flush"}),
    ("-Z", {"op": "zero"}),
    ("-Z -t 1.2.3.4:80", {"op": "zero", "svc": T80}),
    ("--set 900 120 300", {"op": "set-timeout", "tcp": 900, "tcpfin": 120, "udp": 300}),
    ("--set 0 0 2678400", {"op": "set-timeout", "tcp": 0, "tcpfin": 0, "udp": 2678400}),
    # real servers
    ("-a -t 1.2.3.4:80 -r 10.0.0.1", dest_req("add-dest", T80, "10.0.0.1", 80)),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -g", dest_req("add-dest", T80, "10.0.0.1", 80)),  # DR: port forced
    ("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -m -w 0 -x 100 -y 50",
     dest_req("add-dest", T80, "10.0.0.1", 8080, method="masq", weight=0, u_threshold=100, l_threshold=50)),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -i --tun-type gue --tun-port 6080 --tun-csum",
     dest_req("add-dest", T80, "10.0.0.1", 80, method="tunnel", tun_type="gue", tun_port=6080, tun_flags="csum")),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue --tun-port 6080 --tun-remcsum",
     dest_req("add-dest", T80, "10.0.0.1", 80, method="tunnel", tun_type="gue", tun_port=6080,
              tun_flags="remcsum")),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gre --tun-csum",
     dest_req("add-dest", T80, "10.0.0.1", 80, method="tunnel", tun_type="gre", tun_flags="csum")),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type ipip",
     dest_req("add-dest", T80, "10.0.0.1", 80, method="tunnel")),
    ("-a -t 1.2.3.4:80 -r 2001:db8::5 -i", dest_req("add-dest", T80, "2001:db8::5", 80, method="tunnel")),
    ("-a -f 1 -r 10.0.0.1:8080", dest_req("add-dest", {"fwmark": 1}, "10.0.0.1", 8080)),  # fwmark: no forcing
    ("-a -f 1 -r 10.0.0.1", dest_req("add-dest", {"fwmark": 1}, "10.0.0.1", 0)),
    # -r before -t: the missing port is the vport known at that moment (none yet)
    ("-a -r 10.0.0.1 -t 1.2.3.4:80 -m", dest_req("add-dest", T80, "10.0.0.1", 0, method="masq")),
    ("-e -t 1.2.3.4:80 -r 10.0.0.1:80", dest_req("edit-dest", T80, "10.0.0.1", 80)),
    ("-d -t 1.2.3.4:80 -r 10.0.0.1:8080", {"op": "del-dest", "svc": T80, "dest": {"addr": "10.0.0.1", "port": 8080}}),
    ("-d -t 1.2.3.4:80 -r 10.0.0.1", {"op": "del-dest", "svc": T80, "dest": {"addr": "10.0.0.1", "port": 80}}),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 --fullnat",
     dest_req("add-dest", T80, "10.0.0.1", 8080, method="fullnat")),
    ("--add-server --tcp-service 1.2.3.4:80 --real-server 10.0.0.1:8080 --masquerading --weight 5 "
     "--u-threshold 10 --l-threshold 2",
     dest_req("add-dest", T80, "10.0.0.1", 8080, method="masq", weight=5, u_threshold=10, l_threshold=2)),
    ("-a -t [2001:db8::1]:80 -r [2001:db8::2]:8080 -m",
     dest_req("add-dest", {"protocol": "tcp", "addr": "2001:db8::1", "port": 80}, "2001:db8::2", 8080,
              method="masq")),
    ("-a -u 1.2.3.4:53 -r 10.0.0.1:domain -m",
     dest_req("add-dest", {"protocol": "udp", "addr": "1.2.3.4", "port": 53}, "10.0.0.1", 53, method="masq")),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 65535 -x 2147483647",
     dest_req("add-dest", T80, "10.0.0.1", 80, weight=65535, u_threshold=2147483647)),
    # weights up to INT_MAX, as Debian's ipvsadm 1.31 and the kernel take them
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 70000", dest_req("add-dest", T80, "10.0.0.1", 80, weight=70000)),
    ("-e -t 1.2.3.4:80 -r 10.0.0.1 -w 2147483647", dest_req("edit-dest", T80, "10.0.0.1", 80, weight=2147483647)),
    ("-a -t 1.2.3.4:80 -r localhost", dest_req("add-dest", T80, "127.0.0.1", 80)),
    # sync daemon
    ("--start-daemon master", {"op": "start-daemon", "daemon": {"state": "master", "mcast_ifn": "eth0", "syncid": 0}}),
    ("--start-daemon backup --mcast-interface eth1 --syncid 5 --sync-maxlen 1400 --mcast-group 239.1.2.3 "
     "--mcast-port 9000 --mcast-ttl 2",
     {"op": "start-daemon", "daemon": {"state": "backup", "mcast_ifn": "eth1", "syncid": 5, "sync_maxlen": 1400,
                                       "mcast_group": "239.1.2.3", "mcast_port": 9000, "mcast_ttl": 2}}),
    ("--start-daemon=master --mcast-group ff02::1",
     {"op": "start-daemon", "daemon": {"state": "master", "mcast_ifn": "eth0", "syncid": 0,
                                       "mcast_group": "ff02::1"}}),
    ("--stop-daemon master --syncid 3", {"op": "stop-daemon", "daemon": {"state": "master"}}),
    # FULLNAT local addresses (DPVS spelling)
    ("-P -t 1.2.3.4:80 -z 10.0.0.9 -F dpdk0",
     {"op": "add-laddr", "svc": T80, "laddr": "10.0.0.9", "ifname": "dpdk0"}),
    ("--del-laddr -t 1.2.3.4:80 --laddr 2001:db8::9", {"op": "del-laddr", "svc": T80, "laddr": "2001:db8::9"}),
]


@pytest.mark.parametrize(("line", "request_"), [c for c in REQUESTS if c[1] is not None], ids=lambda v: str(v)[:60])
def test_requests(line, request_):
    cmd = parse(line)
    assert cmd.listing is None
    assert cmd.requests == [request_]


LISTINGS = [
    ("-L", "all", Fmt.NONE, None),
    ("-l", "all", Fmt.NONE, None),
    ("--list", "all", Fmt.NONE, None),
    ("-Ln", "all", N, None),
    ("-L -n", "all", N, None),
    ("--list --numeric", "all", N, None),
    ("-L -n -c", "conns", N, None),
    ("-Lnc --persistent-conn", "conns", N | Fmt.PERSISTENTCONN, None),
    ("-L -c --exact --nosort --tun-info", "conns", Fmt.EXACT | Fmt.NOSORT | Fmt.TUN_INFO, None),
    ("-L -t 1.2.3.4:80 -n", "service", N, T80),
    ("-L -f 1 -6", "service", Fmt.NONE, {"fwmark": 1, "af": "inet6"}),
    ("-L --timeout", "timeout", Fmt.NONE, None),
    ("-L --daemon", "daemon", Fmt.NONE, None),
    ("-Ln --stats --exact", "all", N | Fmt.STATS | Fmt.EXACT, None),
    ("-LnX --rate", "all", N | Fmt.RATE | Fmt.EXACT, None),
    ("-L --thresholds --nosort --sort", "all", Fmt.THRESHOLDS | Fmt.NOSORT, None),
    ("-L --persistent-conn", "all", Fmt.PERSISTENTCONN, None),
    ("-L --tun-info -n", "all", Fmt.TUN_INFO | N, None),
    ("-L --syncid 3", "all", Fmt.NONE, None),  # accepted by the matrix, ignored
    ("-S", "save", Fmt.RULE, None),
    ("-Sn", "save", Fmt.RULE | N, None),
    ("--save --numeric", "save", Fmt.RULE | N, None),
    ("-G", "laddr", Fmt.NONE, None),
    ("-G -t 1.2.3.4:80", "laddr", Fmt.NONE, T80),
]


@pytest.mark.parametrize(("line", "listing", "fmt", "svc"), LISTINGS, ids=[c[0] for c in LISTINGS])
def test_listings(line, listing, fmt, svc):
    cmd = parse(line)
    assert (cmd.listing, cmd.fmt, cmd.svc, cmd.requests) == (listing, fmt, svc, [])


@pytest.mark.parametrize(("line", "name"), [
    ("-h", "help"), ("--help", "help"), ("-h --bogus", "help"), ("-v", "version"), ("--version", "version"),
    ("-R", "restore"), ("--restore", "restore"),
])
def test_special_commands(line, name):
    assert parse(line).name == name


ERRORS = [
    # the command must be the first option (tryhelp_exit, 255)
    ("", TRYHELP, 255),
    ("foo", TRYHELP, 255),
    ("-n -L", TRYHELP, 255),
    ("-t 1.2.3.4:80 -A", TRYHELP, 255),
    ("--sctp-service 1.2.3.4:9 -A", TRYHELP, 255),
    ("--bogus", TRYHELP, 255),
    ("-q", TRYHELP, 255),
    # popt errors after the command (255)
    ("-L --bogus", "--bogus: unknown option", 255),
    ("-Lq", "-Lq: unknown option", 255),
    ("-A -t", "-t: missing argument", 255),
    ("-A -t 1.2.3.4:80 -p -M 255.255.255.0 -s", "-s: missing argument", 255),
    ("-L --numeric=yes", "--numeric=yes: option does not take an argument", 255),
    ("-Ln=yes", "-Ln=yes: option does not take an argument", 255),
    ("-L --lis", "--lis: unknown option", 255),  # popt does not abbreviate
    # single-dash long options are short clusters: -l is a second command; -n then -u "meric"
    ("-L -list", "invalid option `-list'", 2),
    ("-L -numeric", "illegal virtual server address[:port] specified", 2),
    ("-A -t 1.2.3.4:80 -p -1", "-1: unknown option", 255),  # -p does not take a dash-led value
    ("-D -t 1.2.3.4:80 -s rr --bogus", "--bogus: unknown option", 255),  # found before the matrix
    # a command after the first option is an invalid option
    ("-L -A", "invalid option `-A'", 2),
    ("-LA", "invalid option `-LA'", 2),
    ("-L -h", "invalid option `-h'", 2),
    ("-A -t 1.2.3.4:80 --start-daemon master", "invalid option `master'", 2),
    # positional arguments
    ("-L foo", "unexpected argument foo", 2),
    ("-A -t 1.2.3.4:80 extra", "unexpected argument extra", 2),
    ("--set 1 2", "--set option requires 3 timeout values", 2),
    ("--set 1 2 x", "invalid timeout value `x' specified", 2),
    ("--set 1 2 3 4", "unexpected argument 4", 2),
    ("--set 1 2 2678401", "invalid timeout value `2678401' specified", 2),
    ("--start-daemon foo", "illegal start-daemon parameter specified", 2),
    ("--stop-daemon foo", "illegal start_daemon specified", 2),
    # services
    ("-A -t 1.2.3.4", "Zero port specified for non-persistent service", 2),
    ("-E -t 1.2.3.4:0", "Zero port specified for non-persistent service", 2),
    ("-A -t 1.2.3.4:80 -o", "One-Packet Scheduling is only for UDP virtual services", 2),
    ("-A -t 1234", "illegal virtual server address[:port] specified", 2),
    ("-A -t ''", "illegal virtual server address[:port] specified", 2),
    ("-A -t 1.2.3.4:99999", "illegal virtual server address[:port] specified", 2),
    ("-A -t 1.2.3.4:", "illegal virtual server address[:port] specified", 2),
    ("-A -t 1.2.3.4:nosuchservice", "illegal virtual server address[:port] specified", 2),
    ("-A -t [2001:db8::1]", "illegal virtual server address[:port] specified", 2),
    ("-A -t [2001:db8::1:80", "illegal virtual server address[:port] specified", 2),
    ("-A -t no.such.host:80", "illegal virtual server address[:port] specified", 2),
    ("-A -f 0", "invalid fwmark value `0' specified", 2),
    ("-A -f 4294967296", "invalid fwmark value `4294967296' specified", 2),
    ("-A -f abc", "invalid fwmark value `abc' specified", 2),
    ("-A -t 1.2.3.4:80 -p 0", "invalid timeout value `0' specified", 2),
    ("-A -t 1.2.3.4:80 -p 2678401", "invalid timeout value `2678401' specified", 2),
    ("-A -t 1.2.3.4:80 -p 0x10", "invalid timeout value `0x10' specified", 2),
    ("-A -t 1.2.3.4:80 -p foo", "invalid timeout value `foo' specified", 2),  # optional value taken
    ("-a -f 2 -r [2001:db8::9]:0 -m", "Different address family is allowed only for tunneling servers", 2),
    ("-A -t 1.2.3.4:80 -M no.such.mask", "illegal virtual server persistent mask specified", 2),
    ("-A -f 1 -6 -M 129", "illegal ipv6 netmask specified", 2),
    ("-A -t [::1]:80 -p -M 0", "illegal ipv6 netmask specified", 2),
    ("-A -t 1.2.3.4:80 -6", "-6 used before -f\n", 2),
    ("-A -6 -f 1", "-6 used before -f\n", 2),
    ("-A -t 1.2.3.4:80 -b foo", "invalid scheduler flag `foo'", 2),
    ("-A -t 1.2.3.4:80 -b sh-port", "incompatible scheduler flag `sh-port'", 2),  # against the default wlc
    ("-A -t 1.2.3.4:80 -s mh -b sh-port", "incompatible scheduler flag `sh-port'", 2),
    ("-A -t 1.2.3.4:80 -s sh -b mh-fallback", "incompatible scheduler flag `mh-fallback'", 2),
    ("-A -t 1.2.3.4:80 -s sh -b flag-1,sh-fallback,bogus", "invalid scheduler flag `bogus'", 2),
    # flags are checked before the option matrix
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -b sh-port", "incompatible scheduler flag `sh-port'", 2),
    ("-A -t 1.2.3.4:80 -s rr -s wlc", "multiple 'scheduler' options specified", 2),
    ("-L -t 1.2.3.4:80 -t 1.2.3.4:81", "multiple 'service-address' options specified", 2),
    ("-A -t 1.2.3.4:80 -f 1", "multiple 'service-address' options specified", 2),
    # the option matrix
    ("-A -t 1.2.3.4:80 -r 10.0.0.1", "Illegal 'real-server' option with the 'add-service' command", 2),
    ("-A -s rr", "You need to supply the 'service-address' option for the 'add-service' command", 2),
    ("-a -t 1.2.3.4:80", "You need to supply the 'real-server' option for the 'add-server' command", 2),
    ("-a -r 10.0.0.1", "You need to supply the 'service-address' option for the 'add-server' command", 2),
    ("-D -t 1.2.3.4:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command", 2),
    ("-D", "You need to supply the 'service-address' option for the 'delete-service' command", 2),
    ("-C -n", "Illegal 'numeric' option with the 'flush' command", 2),
    ("--set 1 2 3 -n", "Illegal 'numeric' option with the 'set' command", 2),
    ("-L -c -t 1.2.3.4:80",
     "The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2),
    ("-L --timeout -c", "The option 'timeout' conflicts with the 'connection' option in the 'list' command", 2),
    ("-L --daemon --timeout", "The option 'daemon' conflicts with the 'timeout' option in the 'list' command", 2),
    ("-L -c --stats", "options conflicts in the list command", 2),
    ("-L --timeout --rate", "options conflicts in the list command", 2),
    ("-L --daemon --thresholds", "options conflicts in the list command", 2),
    ("-L --timeout --persistent-conn", "options conflicts in the list command", 2),
    ("-L --rate -s rr", "Illegal 'scheduler' option with the 'list' command", 2),
    ("-L -o", "Illegal 'ops' option with the 'list' command", 2),
    ("-L -n -n", "multiple 'numeric' options specified", 2),
    ("-L --stats --stats", "multiple 'stats' options specified", 2),
    ("-A -t 1.2.3.4:80 -n", "Illegal 'numeric' option with the 'add-service' command", 2),
    # the DPVS extensions are unknown options outside their commands, as in ipvsadm (popt's error)
    ("-A -t 1.2.3.4:80 --fullnat", "--fullnat: unknown option", 255),
    ("-A -t 1.2.3.4:80 -z 10.0.0.1", "-z: unknown option", 255),
    ("-L -n -Q", "-Q: unknown option", 255),
    ("-L -nG", "-nG: unknown option", 255),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 --proxy-protocol v1", "--proxy-protocol: unknown option", 255),
    ("-L -F eth0", "-F: unknown option", 255),
    ("-A -t 1.2.3.4:80 -w x -z 10.0.0.1", "illegal weight specified", 2),  # in order: -w fails first
    ("-d -t 1.2.3.4:80 -r 10.0.0.1 -m", "Illegal 'forwarding-method' option with the 'delete-server' command", 2),
    ("-e -t 1.2.3.4:80 -r 10.0.0.1 -p", "Illegal 'persistent' option with the 'edit-server' command", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 --tun-info", "Illegal 'tun-info' option with the 'add-server' command", 2),
    ("-Z -n", "Illegal 'numeric' option with the 'zero' command", 2),
    ("-S -c", "Illegal 'connection' option with the 'save' command", 2),
    ("-S -t 1.2.3.4:80", "Illegal 'service-address' option with the 'save' command", 2),
    ("-R -n", "Illegal 'numeric' option with the 'restore' command", 2),
    ("--stop-daemon master --mcast-interface eth0",
     "Illegal 'mcast-interface' option with the 'stop-daemon' command", 2),
    ("-P -t 1.2.3.4:80", "You need to supply the 'laddr' option for the 'add-laddr' command", 2),
    ("-G -z 10.0.0.1", "Illegal 'laddr' option with the 'get-laddr' command", 2),
    # real servers
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -m -g", "multiple 'forwarding-method' options specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --fullnat", "multiple 'forwarding-method' options specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 2147483648", "illegal weight specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w -1", "illegal weight specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 1x", "illegal weight specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -x 2147483648", "illegal u_threshold specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -y x", "illegal l_threshold specified", 2),
    ("-a -w 2147483648 -x -5", "illegal weight specified", 2),  # the first error in argv order
    ("-a -t 1.2.3.4:80 -r 10.0.0.1:99999", "illegal real server address[:port] specified", 2),
    ("-a -t 1.2.3.4:80 -r 2001:db8::5 -m", "Different address family is allowed only for tunneling servers", 2),
    ("-a -t 1.2.3.4:80 -r 2001:db8::5", "Different address family is allowed only for tunneling servers", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 --tun-type gue", "Tunnel options conflict with forward method", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -m --tun-nocsum", "Tunnel options conflict with forward method", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 --fullnat --tun-type ipip", "Tunnel options conflict with forward method", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue",
     "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-port 80", "Illegal 'tun-port' option with the 'ipip' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-csum", "Illegal 'tun-csum' option with the 'ipip' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gre --tun-remcsum",
     "Illegal 'tun-remcsum' option with the 'gre' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gre --tun-port 1",
     "Illegal 'tun-port' option with the 'gre' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue --tun-port 6080 --tun-csum --tun-nocsum",
     "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type vxlan", "illegal tunnel type specified", 2),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue --tun-port 0", "illegal tunnel port specified", 2),
    # sync daemon
    ("--start-daemon master --syncid 256", "illegal syncid specified", 2),
    ("--start-daemon master --mcast-group 10.0.0.1", "invalid IPv4 mcast-group `10.0.0.1'", 2),
    ("--start-daemon master --mcast-group 2001:db8::1", "invalid IPv6 mcast-group `2001:db8::1'", 2),
    ("--start-daemon master --mcast-port 0", "illegal mcast-port specified", 2),
    ("--start-daemon master --mcast-ttl 256", "illegal mcast-ttl specified", 2),
    ("--start-daemon master --sync-maxlen 65508", "illegal sync-maxlen specified", 2),
    # FULLNAT local addresses
    ("-P -t 1.2.3.4:80 -z bogus", "illegal local address specified", 2),
    ("-P -t 1.2.3.4:80 -z 10.1", "illegal local address specified", 2),
]


@pytest.mark.parametrize(("line", "message", "code"), ERRORS, ids=[c[0] or "(empty)" for c in ERRORS])
def test_errors(line, message, code):
    with pytest.raises(ParseError) as info:
        parse(line)
    assert (info.value.message, info.value.code) == (message, code)


def test_nested_restore_is_refused():
    with pytest.raises(ParseError) as info:
        parse("-R", reading_stdin=True)
    assert (info.value.message, info.value.code) == (TRYHELP, 255)


def test_tryhelp_names_the_program():
    with pytest.raises(ParseError) as info:
        parse_command(["-n"], "/usr/sbin/ipvsadm")
    assert info.value.message == "Try `/usr/sbin/ipvsadm -h' or '/usr/sbin/ipvsadm --help' for more information."


def test_matrix_matches_reference_table():
    """Spot-check the transcription of ipvs.md §1.3 against named cells."""
    def cell(cmd: str, opt: str) -> str:
        return MATRIX[cmd][OPTNAMES.index(opt)]

    assert all(len(row) == len(OPTNAMES) for row in MATRIX.values())
    assert cell("add-service", "service-address") == "+"
    assert [cell("add-service", o) for o in ("scheduler", "persistent", "netmask", "ops", "pe", "sched-flags")] \
        == ["."] * 6
    assert cell("list", "syncid") == "."  # the odd one
    assert [cell("list", o) for o in ("connection", "service-address", "timeout", "daemon")] == ["1"] * 4
    assert cell("list", "tun-info") == "." and cell("list", "tun-type") == "x"
    assert [cell("add-server", o) for o in ("real-server", "forwarding-method", "tun-remcsum")] == ["+", ".", "."]
    assert cell("delete-server", "real-server") == "+" and cell("delete-server", "weight") == "x"
    assert [cell("start-daemon", o) for o in ("mcast-interface", "syncid", "mcast-group", "sync-maxlen")] \
        == ["."] * 4
    assert cell("stop-daemon", "syncid") == "." and cell("stop-daemon", "mcast-interface") == "x"
    assert cell("save", "numeric") == "." and cell("zero", "service-address") == "."
    for cmd in ("flush", "restore", "set"):
        assert set(MATRIX[cmd]) == {"x"}
