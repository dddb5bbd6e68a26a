"""The ways the director namespace of the NAT lab carries the client's traffic, and how each proves it did.

direct, nftables, HAProxy, pylvs (and pylvs-bpf) over IPv4; nftables6 (an `ip6` DNAT table) and pylvs6
(NAT66) over IPv6 in the same lab with IPv6 on every link: the IPv6 NAT row beside the IPv4 one.

(modes_lvs.py adds FULLNAT in the same lab and DR and TUN in labs of their own, on this base class.)

Every mode turns a freshly built BenchLab into one kind of director and exposes counters that must
grow when the load really went its way: nftables rule counters, HAProxy frontend sessions, lvsd
service stats. The runner also checks, for every mode, the real servers' access logs (which server,
which peer address) and the director's interface byte counters.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time

from benchlab import IPERF_PORT, VIP, BenchLab, LabTools, hostport, url_host
from loads import IperfResult, WrkResult

from pylvs.lab.ipv6 import CLIENT6
from pylvs.lab.netns import LabError, run, wait_for
from pylvs.lab.topology import CLIENT, DIP


class Mode:
    """A way through the director. Defaults are a load balancer's in the NAT lab: the client talks to the VIP."""

    name = ""
    forwarding = False  # net.ipv4.ip_forward in the director namespace
    peer = CLIENT       # the address real servers see as the client
    uses_lvsd = False   # print lvsd's log when the mode fails
    profiled = False    # the mode --profile runs under cProfile
    short_runs = False  # every load but the iperf3 download runs half the duration (the newer rows)
    ipv6 = False        # the NAT lab with IPv6 on every link, balancing IPv6 (BenchLab(ipv6=True))

    def __init__(self) -> None:
        self.pid: int | None = None  # the load balancer process, if there is one

    def make_lab(self) -> LabTools:
        return BenchLab(self.forwarding, self.ipv6)

    def setup(self, lab: BenchLab) -> None:
        raise NotImplementedError

    def duration(self, load: str, base: int) -> int:
        """Seconds for one load run ("iperf_up", "iperf_down", "wrk_keepalive", "wrk_close")."""
        if not self.short_runs or load == "iperf_down":
            return base
        return max(2, -(-base // 2))

    def peers(self, lab: BenchLab) -> list[str]:
        """Every address the real servers must see as the client, and only those."""
        return [self.peer]

    def side_pids(self, lab: BenchLab) -> list[int]:
        """Helper processes whose CPU is measured besides the load balancer's (TUN decapsulators)."""
        return []

    def min_http_conns(self, result: WrkResult, conns: int) -> int:
        """Connections the mode's own counter must have grown by for a wrk run (if it counts them)."""
        return conns if result.keepalive else result.requests

    def route_checks(self, lab: BenchLab, grown: dict[str, int], result: IperfResult | WrkResult) -> list[str]:
        """Checks that a load run took the mode's path, from how much each counter grew during it."""
        return []

    def http_url(self, lab: BenchLab) -> str:
        return f"http://{url_host(lab.vip)}/"

    def iperf_target(self, lab: BenchLab) -> tuple[str, int]:
        return lab.vip, IPERF_PORT

    def servers(self, lab: BenchLab) -> list[str]:
        """Real servers that must see the HTTP load."""
        return list(lab.rs_names)

    def counters(self, lab: BenchLab) -> dict[str, int]:
        """Mode-specific counters: {http,iperf}_{conns,pkts,bytes}, those the mode can count."""
        return {}

    def static_checks(self, lab: BenchLab) -> list[str]:
        return []

    def stop(self, lab: BenchLab) -> None:
        """Stop what setup started (the lab teardown would too; this keeps modes from overlapping)."""


class DirectMode(Mode):
    """No load balancer: a plain kernel router, the client talks straight to rs1."""

    name = "direct"
    forwarding = True

    def setup(self, lab: BenchLab) -> None:
        lab.route_client_to_lan()

    def http_url(self, lab: BenchLab) -> str:
        return f"http://{lab.rips[0]}:{lab.rport}/"

    def iperf_target(self, lab: BenchLab) -> tuple[str, int]:
        return lab.rips[0], IPERF_PORT

    def servers(self, lab: BenchLab) -> list[str]:
        return lab.rs_names[:1]

    def static_checks(self, lab: BenchLab) -> list[str]:
        return [
            check(lab.sysctl_value("director", "net.ipv4.ip_forward") == "1", "director ip_forward=1"),
            check(not nft_ruleset(lab).strip(), "no nftables rules on the director"),
            check(not lab.kernel_has_vip(), "VIP not on the director kernel"),
        ]


class NftablesMode(Mode):
    """Kernel DNAT in prerouting, round-robin over the three real servers with numgen."""

    name = "nftables"
    forwarding = True

    def setup(self, lab: BenchLab) -> None:
        lab.add_vip_to_kernel()
        family, rips = self.family(lab), lab.targets()
        targets = ", ".join(f"{i} : {addr}" for i, addr in enumerate(rips))
        script = f"""
table {family} bench {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {family} daddr {lab.vip} tcp dport 80 counter dnat to numgen inc mod {len(rips)} map {{ {targets} }} : \
{lab.rport} comment "http"
        {family} daddr {lab.vip} tcp dport {IPERF_PORT} counter dnat to {hostport(rips[0], IPERF_PORT)} comment "iperf"
    }}
}}
"""
        _nft(lab, script)

    @staticmethod
    def family(lab: BenchLab) -> str:
        return "ip6" if lab.ipv6 else "ip"

    def counters(self, lab: BenchLab) -> dict[str, int]:
        """The nat chain sees only a connection's first packet, so its packet counters count connections."""
        data = json.loads(lab.net.exec("director", "nft", "-j", "list", "table", self.family(lab), "bench").stdout)
        found: dict[str, int] = {}
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    found[f"{rule.get('comment')}_conns"] = expr["counter"]["packets"]
        return found

    def static_checks(self, lab: BenchLab) -> list[str]:
        return [
            check(lab.sysctl_value("director", lab.forward_sysctl) == "1", f"director {lab.forward_sysctl}=1"),
            check("numgen inc mod 3" in nft_ruleset(lab), "DNAT rule with numgen round-robin installed"),
            check(lab.kernel_has_vip(), "VIP on the director kernel"),
        ]


HAPROXY_CONF = """\
global
    maxconn 8000
    stats socket {sock} mode 600 level operator

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend http
    bind {vip}:80
    default_backend web

backend web
    balance roundrobin
{servers}

frontend iperf
    bind {vip}:{iperf}
    default_backend iperf

backend iperf
    server rs1 {rs1}:{iperf}
"""


class HaproxyMode(Mode):
    """HAProxy in TCP mode on the director, listening on the VIP, round-robin to the real servers."""

    name = "haproxy"
    forwarding = False
    peer = DIP  # a proxy: real servers see the director's inside address

    def setup(self, lab: BenchLab) -> None:
        lab.add_vip_to_kernel()
        self.sock = os.path.join(lab.net.tmp, "haproxy.sock")
        conf = os.path.join(lab.net.tmp, "haproxy.cfg")
        servers = "\n".join(f"    server {name} {addr}:{lab.rport}"
                            for name, addr in zip(lab.rs_names, lab.rips, strict=True))
        with open(conf, "w") as f:
            f.write(HAPROXY_CONF.format(sock=self.sock, vip=VIP, servers=servers, iperf=IPERF_PORT, rs1=lab.rips[0]))
        lab.net.exec("director", "haproxy", "-c", "-q", "-f", conf)
        self.proc = lab.net.popen("director", "haproxy", "-db", "-f", conf, log="haproxy.log")
        self.pid = self.proc.pid
        try:
            for port in (80, IPERF_PORT):
                wait_for(lambda p=port: self.proc.poll() is not None or lab.listening("director", VIP, p),
                         what=f"haproxy on {VIP}:{port}")
            wait_for(lambda: self.proc.poll() is not None or os.path.exists(self.sock), what="haproxy stats socket")
        finally:
            if self.proc.poll() is not None:
                raise LabError(f"haproxy exited: {read_tail(lab, 'haproxy.log')}")

    def counters(self, lab: BenchLab) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in haproxy_stats(self.sock):
            if row["svname"] == "FRONTEND":
                found[f"{row['pxname']}_conns"] = int(row["stot"] or 0)
                found[f"{row['pxname']}_bytes"] = int(row["bin"] or 0) + int(row["bout"] or 0)
        return found

    def static_checks(self, lab: BenchLab) -> list[str]:
        return [
            check(lab.sysctl_value("director", "net.ipv4.ip_forward") == "0", "director ip_forward=0 (proxy only)"),
            check(lab.kernel_has_vip(), "VIP on the director kernel"),
            check(self.proc.poll() is None, "haproxy running"),
        ]

    def stop(self, lab: BenchLab) -> None:
        lab.net.kill(self.proc)


class PylvsMode(Mode):
    """lvsd on both director interfaces, NAT (masquerading) with rr; the kernel neither owns the VIP nor routes.

    `datapath` is lvsd's --datapath: "python" (every packet through the engine) or "bpf" (established flows
    through the kernel fast path; its counters reach lvsd's statistics within REFRESH_WAIT)."""

    name = "pylvs"
    forwarding = False
    uses_lvsd = True
    profiled = True
    datapath = "python"
    lvsd_options: tuple[str, ...] = ()  # more of lvsd's options

    def setup(self, lab: BenchLab) -> None:
        self.pid = lab.start_lvsd("--datapath", self.datapath, *self.lvsd_options).pid
        self.configure(lab)

    def configure(self, lab: BenchLab) -> None:
        lab.add_http_service()
        lab.add_iperf_service()

    def counters(self, lab: BenchLab) -> dict[str, int]:
        settle_fast_path(self.datapath)
        stats = lab.lvsd_stats()
        found: dict[str, int] = {}
        for key, name in ((hostport(lab.vip, 80), "http"), (hostport(lab.vip, IPERF_PORT), "iperf")):
            if key in stats:
                conns, inpkts, outpkts, inbytes, outbytes = stats[key]
                found[f"{name}_conns"] = conns
                found[f"{name}_pkts"] = inpkts + outpkts
                found[f"{name}_bytes"] = inbytes + outbytes
        return found

    def static_checks(self, lab: BenchLab) -> list[str]:
        return [
            check(lab.sysctl_value("director", lab.forward_sysctl) == "0", f"director {lab.forward_sysctl}=0"),
            check(not lab.kernel_has_vip(), "VIP not on the director kernel (lvsd answers for it)"),
            check(lab.lvsd_running(), "lvsd running"),
            *datapath_checks(lab, self.datapath),
        ]

    def stop(self, lab: BenchLab) -> None:
        lab.stop_lvsd()


class PylvsBpfMode(PylvsMode):
    """pylvs NAT with the kernel fast path for established flows."""

    name = "pylvs-bpf"
    profiled = False
    datapath = "bpf"


class PylvsBpfMhMode(PylvsBpfMode):
    """pylvs NAT with the kernel fast path and mh (mh-port), a scheduler the program runs itself: new connections
    are scheduled in the kernel and adopted by the engine (pylvs.datapath.bpf.ksched)."""

    name = "pylvs-bpf-mh"
    short_runs = True

    def configure(self, lab: BenchLab) -> None:
        lab.add_http_service("mh", "mh-port")  # one client: its source ports spread the connections
        lab.add_iperf_service()

    def min_http_conns(self, result: WrkResult, conns: int) -> int:
        """A SYN the program finds an entry for (the client reused a port whose last connection the kernel
        still closes) is the engine's, and continues that entry as IPVS does: a few in 10,000 (58 of
        224,000 in 60 s) are not new connections."""
        return conns if result.keepalive else result.requests - result.requests // 1000


class Nftables6Mode(NftablesMode):
    """The IPv6 NAT row's reference: kernel DNAT in an `ip6` table, the same rules over IPv6."""

    name = "nftables6"
    ipv6 = True
    peer = CLIENT6
    short_runs = True


class Pylvs6Mode(PylvsMode):
    """pylvs NAT66: the IPv6 VIP and real servers, through the Python engine (IPv6 flows never take the fast path)."""

    name = "pylvs6"
    ipv6 = True
    peer = CLIENT6
    short_runs = True
    profiled = False


REFRESH_WAIT = 2.5  # lvsd reads the fast path's counters back every 2 s (pylvs.datapath.bpf.offload)


def settle_fast_path(datapath: str) -> None:
    if datapath == "bpf":
        time.sleep(REFRESH_WAIT)


def datapath_checks(lab, datapath: str) -> list[str]:
    """The data path lvsd says it uses is the one asked for."""
    if not lab.lvsd_running():
        return []
    status = json.loads(lab.lvsadm("--datapath", "--json").stdout)
    return [check(status["datapath"] == datapath, f"lvsd data path {status['datapath']} (asked: {datapath})")]


MODES: list[type[Mode]] = [DirectMode, NftablesMode, HaproxyMode, PylvsMode, PylvsBpfMode, PylvsBpfMhMode,
                           Nftables6Mode, Pylvs6Mode]


# -- helpers ------------------------------------------------------------------------------------

def check(ok: bool, text: str) -> str:
    return f"{'ok' if ok else 'FAIL'}: {text}"


def _nft(lab: BenchLab, script: str) -> None:
    run(["ip", "netns", "exec", lab.net.name("director"), "nft", "-f", "-"], input=script, timeout=30)


def read_tail(lab: BenchLab, log: str, size: int = 2000) -> str:
    try:
        with open(os.path.join(lab.net.tmp, log)) as f:
            return f.read()[-size:]
    except FileNotFoundError:
        return ""


def nft_ruleset(lab: BenchLab) -> str:
    return lab.net.exec("director", "nft", "list", "ruleset").stdout


def haproxy_stats(path: str) -> list[dict[str, str]]:
    """`show stat` from the stats socket, as CSV rows."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode().lstrip("# ")
    return list(csv.DictReader(io.StringIO(text)))
