"""The LVS forwarding methods beyond NAT: FULLNAT in the NAT lab, DR and TUN with their direct paths.

FULLNAT is compared with nftables DNAT (and the direct path) in the NAT lab. DR and TUN run in
labs of their own (routedlab.py), each beside the direct path of the same topology: client ->
router -> real server with no director involved, the reference for a method whose replies bypass
the director. Each mode proves its path per load run: lvsd's counters grew, and for DR and TUN its
OutPkts did not (the director saw client->server packets only); on the direct paths nothing runs in
the director namespace and its interface received next to nothing. TUN's direct path tunnels too
(the router encapsulates, routedlab.py), so the real servers' decapsulators work as behind lvsd.
"""

from __future__ import annotations

from benchlab import IPERF_PORT, BenchLab, LabTools
from benchlab import VIP as NAT_VIP
from loads import IperfResult, WrkResult
from modes import MODES as NAT_MODES
from modes import Mode, PylvsMode, check, datapath_checks, settle_fast_path
from routedlab import CLIENT, VIP, BenchDrLab, BenchTunLab, RoutedTools

LIPS = ["192.0.2.200", "192.0.2.201"]  # FULLNAT local addresses, on the NAT lab's LAN
BYPASS_SHARE = 0.1  # at most this share of a download's payload may reach the director (its ACKs do)
QUIET_SHARE = 0.01  # on a direct path, the director's interface receives less than this share of the traffic


CLIENT_PORTS = 60999 - 32768 + 1  # Linux's default ip_local_port_range


class FullnatMode(PylvsMode):
    """lvsd in the NAT lab with two local addresses and --fullnat real servers that have no route to the client."""

    name = "fullnat"
    profiled = False
    short_runs = True

    def setup(self, lab: BenchLab) -> None:
        for name in lab.rs_names:
            lab.net.ip(name, "route", "del", "default")  # no way back to the client but the LIPs
        super().setup(lab)

    def configure(self, lab: BenchLab) -> None:
        self.service(lab, 80, lab.rips, lab.rport)
        self.service(lab, IPERF_PORT, lab.rips[:1], IPERF_PORT)

    @staticmethod
    def service(lab: BenchLab, vport: int, rips: list[str], rport: int) -> None:
        vs = f"{NAT_VIP}:{vport}"
        lab.lvsadm("-A", "-t", vs, "-s", "rr")
        for lip in LIPS:
            lab.lvsadm("-P", "-t", vs, "-z", lip)
        for addr in rips:
            lab.lvsadm("-a", "-t", vs, "-r", f"{addr}:{rport}", "--fullnat", "-w", "1")

    def peers(self, lab: BenchLab) -> list[str]:
        return list(LIPS)  # connections take the local addresses in turn

    def static_checks(self, lab: BenchLab) -> list[str]:
        methods = set(lab.lvsd_methods().values()) if lab.lvsd_running() else set()
        routes = [lab.net.ip(name, "-o", "route", "show", "default").stdout.strip() for name in lab.rs_names]
        laddrs = lab.lvsadm("-G").stdout if lab.lvsd_running() else ""
        return super().static_checks(lab) + [
            check(methods == {"FullNat"}, f"every real server forwarded by FullNat ({sorted(methods)})"),
            check(not any(routes), "real servers have no default route (only the LIPs lead back)"),
            check(all(lip in laddrs for lip in LIPS), f"local addresses {', '.join(LIPS)} on the services"),
        ]


class FullnatBpfMode(FullnatMode):
    """FULLNAT with the kernel fast path, TOA on (lvsd's default): the program schedules the SYNs, takes
    the local ports and inserts TOA into the client's first ACK itself."""

    name = "fullnat-bpf"
    datapath = "bpf"


# -- DR and TUN ------------------------------------------------------------------------------------

class RoutedMode(Mode):
    """Client -> router -> VIP; the real servers hold the VIP and answer through the router."""

    lab_class: type[RoutedTools] = BenchDrLab
    short_runs = True
    peer = CLIENT

    def make_lab(self) -> LabTools:
        return self.lab_class()

    def http_url(self, lab: RoutedTools) -> str:
        return f"http://{VIP}/"

    def iperf_target(self, lab: RoutedTools) -> tuple[str, int]:
        return VIP, IPERF_PORT

    def counters(self, lab: RoutedTools) -> dict[str, int]:
        found = {"director_rx_bytes": lab.director_rx_bytes()}
        if isinstance(lab, BenchTunLab):
            found["tunnel_rx_bytes"] = lab.tunnel_rx_bytes()
        return found

    def side_pids(self, lab: RoutedTools) -> list[int]:
        return lab.decap_pids() if isinstance(lab, BenchTunLab) else []

    def rs_checks(self, lab: RoutedTools) -> list[str]:
        holding = [name for name in lab.rs_names if lab.rs_holds_vip(name)]
        checks = [check(holding == lab.rs_names, f"real servers holding the VIP on lo: {holding}")]
        if isinstance(lab, BenchTunLab):
            running = len(lab.decap_pids())
            checks.append(check(running == len(lab.rs_names), f"{running} userspace decapsulators running"))
        return checks


class RoutedDirectMode(RoutedMode):
    """No director: the router routes the VIP to the real servers itself (ECMP; iperf3 to rs1)."""

    def setup(self, lab: RoutedTools) -> None:
        lab.route_vip_past_director()

    def static_checks(self, lab: RoutedTools) -> list[str]:
        route = lab.router_vip_route()
        return self.rs_checks(lab) + [
            check(not lab.director_processes(), "nothing runs in the director namespace (no lvsd)"),
            check(all(addr in route for addr in lab.rips), f"router routes the VIP via the real servers: {route}"),
        ]

    def route_checks(self, lab: RoutedTools, grown: dict[str, int], result: IperfResult | WrkResult) -> list[str]:
        seen, carried = grown["director_rx_bytes"], grown["path_bytes"]
        return [
            check(not lab.director_processes(), "still nothing in the director namespace"),
            check(seen < QUIET_SHARE * carried,
                  f"director dip0 received {seen} bytes while router eth0 carried {carried}"),
        ]


class RoutedLvsMode(RoutedMode):
    """lvsd on the one-armed director's dip0; DR (-g) or TUN (-i) real servers."""

    uses_lvsd = True
    method = "Route"  # as `lvsadm -L -n` names it
    datapath = "python"

    def setup(self, lab: RoutedTools) -> None:
        self.pid = lab.start_lvsd("--datapath", self.datapath).pid
        lab.service()
        lab.lvsadm("-A", "-t", f"{VIP}:{IPERF_PORT}", "-s", "rr")
        lab.lvsadm("-a", "-t", f"{VIP}:{IPERF_PORT}", *self.iperf_server(lab))

    def iperf_server(self, lab: RoutedTools) -> list[str]:
        return ["-r", f"{lab.rips[0]}:{IPERF_PORT}", "-g"]

    def counters(self, lab: RoutedTools) -> dict[str, int]:
        settle_fast_path(self.datapath)
        found = super().counters(lab)
        stats = lab.lvsd_stats()
        for key, name in ((f"{VIP}:80", "http"), (f"{VIP}:{IPERF_PORT}", "iperf")):
            if key in stats:
                conns, inpkts, outpkts, inbytes, _ = stats[key]
                found.update({f"{name}_conns": conns, f"{name}_pkts": inpkts + outpkts,
                              f"{name}_outpkts": outpkts, f"{name}_inbytes": inbytes})
        return found

    def static_checks(self, lab: RoutedTools) -> list[str]:
        methods = set(lab.lvsd_methods().values()) if lab.lvsd_running() else set()
        return self.rs_checks(lab) + [
            check(lab.lvsd_running(), "lvsd running"),
            check(lab.sysctl_value("director", "net.ipv4.ip_forward") == "0", "director ip_forward=0"),
            check(not lab.router_vip_route(), "router has no route for the VIP (it asks by ARP, lvsd answers)"),
            check(methods == {self.method}, f"every real server forwarded by {self.method} ({sorted(methods)})"),
            *datapath_checks(lab, self.datapath),
        ]

    def min_http_conns(self, result: WrkResult, conns: int) -> int:
        """Connection: close reuses client ports within seconds (Linux picks them with random strides), and
        lvsd, seeing one direction only, still holds the old connection in FIN_WAIT: as IPVS with
        conn_reuse_mode=1, the SYN continues that entry instead of counting a new one. And connect()
        prefers ports of one parity (Linux >= 6.1): a long run reuses the same 14,116 ports, and some of
        those it never reaches. 45 % of the requests or of the client's port range (28232 ports) is the
        bound (engine-scheduled TUN counted 13,319 of 51,000 requests over 20 s); route_checks adds one
        on the packets."""
        return conns if result.keepalive else min(result.requests, CLIENT_PORTS) * 45 // 100

    def route_checks(self, lab: RoutedTools, grown: dict[str, int], result: IperfResult | WrkResult) -> list[str]:
        prefix = "iperf" if isinstance(result, IperfResult) else "http"
        out, inpkts = grown[f"{prefix}_outpkts"], grown[f"{prefix}_pkts"]
        checks = [check(inpkts > 0 and out == 0,
                        f"lvsd saw {inpkts} client->server packets and {out} server->client (OutPkts)")]
        if isinstance(result, IperfResult):
            return checks + self.iperf_path(grown, result)
        per_request = 0.9 if result.keepalive else 3  # request; or SYN, ACK + request, FIN at least
        checks.append(check(inpkts >= per_request * result.requests,
                            f"lvsd forwarded {inpkts} packets for {result.requests} requests (at least {per_request} "
                            "per request)"))
        if "tunnel_rx_bytes" in grown:
            checks.append(check(grown["tunnel_rx_bytes"] > 0,
                                f"requests came out of the tunnels: {grown['tunnel_rx_bytes']} bytes decapsulated"))
        return checks

    @staticmethod
    def iperf_path(grown: dict[str, int], result: IperfResult) -> list[str]:
        """Upload: the payload crossed the director (and the tunnel). Download: only the client's ACKs did."""
        payload, lvsd, seen = result.bytes, grown["iperf_inbytes"], grown["director_rx_bytes"]
        tunnel = grown.get("tunnel_rx_bytes")
        if result.reverse:
            checks = [check(0 < lvsd < BYPASS_SHARE * payload, f"lvsd forwarded {lvsd} bytes of ACKs only"),
                      check(seen < BYPASS_SHARE * payload,
                            f"director dip0 received {seen} bytes for {payload} payload bytes (replies bypassed it)")]
            if tunnel is not None:
                checks.append(check(0 < tunnel < BYPASS_SHARE * payload, f"{tunnel} bytes of ACKs decapsulated"))
            return checks
        checks = [check(lvsd >= 0.9 * payload, f"lvsd forwarded {lvsd} bytes for {payload} payload bytes"),
                  check(seen >= 0.9 * payload, f"director dip0 received {seen} bytes for {payload} payload bytes")]
        if tunnel is not None:
            checks.append(check(tunnel >= 0.9 * payload, f"decapsulators injected {tunnel} bytes"))
        return checks

    def stop(self, lab: RoutedTools) -> None:
        lab.stop_lvsd()


class DrDirectMode(RoutedDirectMode):
    name = "dr-direct"
    lab_class = BenchDrLab


class DrMode(RoutedLvsMode):
    name = "dr"
    lab_class = BenchDrLab


class DrBpfMode(DrMode):
    name = "dr-bpf"
    datapath = "bpf"


class TunDirectMode(RoutedDirectMode):
    """The router tunnels the VIP's traffic to each real server itself (routedlab.BenchTunLab): every
    request crosses the same userspace decapsulator as behind lvsd, so tun/direct isolates the director."""

    name = "tun-direct"
    lab_class = BenchTunLab

    def counters(self, lab: RoutedTools) -> dict[str, int]:
        found = super().counters(lab)
        if isinstance(lab, BenchTunLab):
            found.update({f"router_{name}": n for name, n in lab.router_tunnel_counters().items()})
        return found

    def static_checks(self, lab: RoutedTools) -> list[str]:
        checks = super().static_checks(lab)
        if isinstance(lab, BenchTunLab):
            filters = lab.router_egress_filters()
            route = lab.router_vip_route()
            checks += [
                check("tunnel_router" in filters and "direct-action" in filters,
                      f"router's tunnel program on tc egress towards the real servers: {' '.join(filters.split())}"),
                check(f"mtu {min(lab.route_mtus())}" in route, f"router's VIP route carries the tunnels' MTU: {route}"),
            ]
        return checks

    def route_checks(self, lab: RoutedTools, grown: dict[str, int], result: IperfResult | WrkResult) -> list[str]:
        """As RoutedLvsMode's tunnel checks: an upload's payload came out of the decapsulators, a download's
        ACKs only, and every HTTP request was tunnelled (frames the router encapsulated)."""
        tunnel, framed, failed = grown["tunnel_rx_bytes"], grown["router_encapsulated"], grown["router_failed"]
        checks = super().route_checks(lab, grown, result)
        checks.append(check(failed == 0, f"router's tunnel program dropped {failed} frames"))
        if isinstance(result, IperfResult):
            payload = result.bytes
            if result.reverse:
                return checks + [check(0 < tunnel < BYPASS_SHARE * payload, f"{tunnel} bytes of ACKs decapsulated")]
            return checks + [check(tunnel >= 0.9 * payload,
                                   f"decapsulators injected {tunnel} bytes for {payload} payload bytes")]
        per_request = 0.9 if result.keepalive else 3  # request; or SYN, ACK + request, FIN at least
        return checks + [
            check(framed >= per_request * result.requests,
                  f"router tunnelled {framed} frames for {result.requests} requests (at least {per_request} each)"),
            check(tunnel > 0, f"requests came out of the tunnels: {tunnel} bytes decapsulated"),
        ]


class TunMode(RoutedLvsMode):
    name = "tun"
    lab_class = BenchTunLab
    method = "Tunnel"

    def iperf_server(self, lab: RoutedTools) -> list[str]:
        return ["-r", lab.rips[0], "-i", "--tun-type", "ipip"]  # rs1 decapsulates ipip


class TunBpfMode(TunMode):
    name = "tun-bpf"
    datapath = "bpf"


MODES: list[type[Mode]] = [*NAT_MODES, FullnatMode, FullnatBpfMode, DrDirectMode, DrMode, DrBpfMode, TunDirectMode,
                           TunMode, TunBpfMode]
