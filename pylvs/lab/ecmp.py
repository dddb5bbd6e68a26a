"""Active/active directors behind an ECMP router, the VIP announced by each over BGP::

    client 203.0.113.10 --- eth0 [router] lan0 --- br0 (lan) --+-- d1 eth0 192.0.2.1  lvsd + BIRD, AS 65001
                          203.0.113.1   192.0.2.254            +-- d2 eth0 192.0.2.2
                          BIRD, AS 65000, multipath            +-- d3 eth0 192.0.2.3
                                                               +-- rs1..rs3 192.0.2.11-13 (nginx :80, VIP on lo)

    VIP 198.51.100.100 is on no segment: the router learns it from the directors' BGP sessions and
    installs one multipath route over those that announce it; with fib_multipath_hash_policy=1 it
    spreads flows by their 5-tuple. The directors forward by direct routing (DR, as Katran and GLB
    deploy): real servers hold the VIP on lo and answer the client straight through the router, so
    only client -> server packets cross a director and it does not matter which one a flow takes
    as long as it picks the same real server: `mh` over the same table on every director, and the
    connection sync daemons (master and backup on every director, multicast on the LAN) for state.

Addresses come from the documentation ranges and live only inside the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pylvs.bgp import birdctl
from pylvs.lab import servers
from pylvs.lab.netns import LabError, Netns, wait_for
from pylvs.lab.topology_ha import DirectorNode

CLIENT = "203.0.113.10"
ROUTER_OUTSIDE = "203.0.113.1"
ROUTER_LAN = "192.0.2.254"
VIP = "198.51.100.100"
ROUTER_AS, DIRECTOR_AS = 65000, 65001
PORT = 80
T = TypeVar("T")

ROUTER_BIRD = """\
router id {router_id};
log stderr all;
protocol device {{ scan time 10; }}
# One kernel route with a next hop per director that announces the VIP (ECMP).
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on limit 16; }}
template bgp director {{
  local as {router_as};
  hold time {hold}; keepalive time {keepalive};
  connect delay time 1; connect retry time 2; error wait time 1, 4;
  ipv4 {{ import all; export none; }};
}}
{peers}
"""


def moved(before: dict[int, set[str]], after: dict[int, set[str]]) -> set[int]:
    """Of two `EcmpLab.flows` windows: the flows seen in both whose director changed (or that were seen
    at two directors at once)."""
    return {port for port in before.keys() & after.keys() if before[port] != after[port] or len(after[port]) > 1}


def on(flows: dict[int, set[str]], addr: str) -> set[int]:
    """The flows a director was seen to carry."""
    return {port for port, directors in flows.items() if addr in directors}


class EcmpDirector(DirectorNode):
    """A one-armed director (eth0 on the LAN) whose lvsd speaks BGP to the router."""

    def __init__(self, net: Netns, role: str, addr: str, hold_time: int) -> None:
        super().__init__(net, role)
        self.addr, self.hold_time = addr, hold_time

    interfaces = ("eth0",)

    def start(self, *extra: str) -> None:
        """lvsd with its BGP speaker; `extra` are more lvsd options (--config FILE, --sloppy-tcp, ...)."""
        if os.path.exists(self.control):
            os.unlink(self.control)  # left by a lvsd killed with -9: not a sign that the next one is up
        datapath = os.environ.get("PYLVS_DATAPATH")  # as Lab.start_lvsd: a whole suite through one data path
        super().start("--bgp-local-as", str(DIRECTOR_AS), "--bgp-peer", f"{ROUTER_LAN}:{ROUTER_AS}",
                      "--bgp-hold-time", str(self.hold_time), *(("--datapath", datapath) if datapath else ()), *extra)

    def start_sync(self) -> None:
        """Master and backup at once: every director tells the others about its connections."""
        for state in ("backup", "master"):
            self.lvsadm("--start-daemon", state, "--mcast-interface", "eth0")

    def stop_sync(self) -> None:
        for state in ("master", "backup"):
            self.lvsadm("--stop-daemon", state)

    def conn_ports(self) -> set[int]:
        """Client ports of the connections in this lvsd's table (`lvsadm -L -n -c`)."""
        fields = self.lvsadm("-L", "-n", "-c").stdout.split()
        return {int(f.rsplit(":", 1)[1]) for f in fields if f.startswith(CLIENT + ":")}

    def bgp(self) -> dict:
        return json.loads(self.lvsadm("--bgp", "--json").stdout)


class Probe:
    """pylvs.lab.keepalive_probe in the client namespace."""

    def __init__(self, net: Netns, name: str, conns: int, interval: float, timeout: float) -> None:
        self.net, self.name = net, name
        self.path = os.path.join(net.tmp, f"{name}.json")
        self.log = os.path.join(net.tmp, f"{name}.out")
        self.proc = net.popen("client", sys.executable, "-m", "pylvs.lab.keepalive_probe", f"{VIP}:{PORT}",
                              "--conns", str(conns), "--interval", str(interval), "--timeout", str(timeout),
                              "--out", self.path, log=f"{name}.out")
        wait_for(self._ready, timeout=30, what=f"{name}: {conns} connections")

    def _ready(self) -> bool:
        with open(self.log) as f:
            out = f.read()
        if self.proc.poll() is not None:
            raise LabError(f"{self.name} exited: {out}")
        return "ready" in out

    def finish(self) -> list[dict]:
        """Stop it; one record per connection: port, servers, requests, max_wait, error."""
        self.net.kill(self.proc, wait=10)
        with open(self.path) as f:
            return [json.loads(line) for line in f]


class EcmpLab:
    def __init__(self, n_directors: int = 3, n_rs: int = 3, hold_time: int = 3, big_mb: int = 16,
                 prefix: str | None = None) -> None:
        self.net = Netns(prefix)
        self.hold_time = hold_time
        self.big_mb = big_mb
        self.directors = [EcmpDirector(self.net, f"d{i}", f"192.0.2.{i}", hold_time)
                          for i in range(1, n_directors + 1)]
        self.rs_names = [f"rs{i}" for i in range(1, n_rs + 1)]
        self.rips = [f"192.0.2.{10 + i}" for i in range(1, n_rs + 1)]
        self.router_sock = os.path.join(self.net.tmp, "router-bird.ctl")
        self.router: subprocess.Popen | None = None
        self.nginx: dict[str, subprocess.Popen] = {}

    def up(self) -> EcmpLab:
        try:
            self._build()
            self._start_router()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        net = self.net
        for role in ("client", "router", "lan", *(d.role for d in self.directors), *self.rs_names):
            net.add(role)
        net.bridge("lan", "br0")
        net.veth("client", "eth0", "router", "eth0")
        net.veth("router", "lan0", "lan", "p0")
        net.ip("lan", "link", "set", "p0", "master", "br0")
        net.addr("client", "eth0", f"{CLIENT}/24")
        net.ip("client", "route", "add", "default", "via", ROUTER_OUTSIDE)
        net.addr("router", "eth0", f"{ROUTER_OUTSIDE}/24")
        net.addr("router", "lan0", f"{ROUTER_LAN}/24")
        # The router hashes a flow's L4 tuple, but a packet from a local socket arrives carrying that
        # socket's random hash (skb->l4_hash), which multipath uses as is and TCP changes after a
        # retransmission timeout (so a flow would hop directors on its own). A remote client's flows keep
        # their path: here, keeping the hash does that.
        net.sysctl("client", "net.core.txrehash", 0)
        net.sysctl("router", "net.ipv4.ip_forward", 1)
        net.sysctl("router", "net.ipv4.fib_multipath_hash_policy", 1)  # L4 hash: flows, not host pairs
        for conf in ("all", "default", "eth0", "lan0"):  # DR replies come from the VIP on the LAN side
            net.sysctl("router", f"net.ipv4.conf.{conf}.rp_filter", 0)
        for d in self.directors:
            net.veth(d.role, "eth0", "lan", f"p{d.role}")
            net.ip("lan", "link", "set", f"p{d.role}", "master", "br0")
            # A real NIC drops frames for other MACs; a veth hands them to lvsd's packet sockets. The
            # switch floods unknown unicast (frames for a cut director once it forgot the MAC): not here.
            net.ip("lan", "link", "set", f"p{d.role}", "type", "bridge_slave", "flood", "off")
            net.addr(d.role, "eth0", f"{d.addr}/24")
            net.ip(d.role, "route", "add", "default", "via", ROUTER_LAN)
            net.sysctl(d.role, "net.ipv4.ip_forward", 0)
        self._watch_flows()
        servers.make_big_file(net, self.big_mb << 20)
        for name, addr in zip(self.rs_names, self.rips, strict=True):
            net.veth(name, "eth0", "lan", f"p{name}")
            net.ip("lan", "link", "set", f"p{name}", "master", "br0")
            net.addr(name, "eth0", f"{addr}/24")
            net.ip(name, "route", "add", "default", "via", ROUTER_LAN)
            self.net.exec(name, sys.executable, "-m", "pylvs.cli.lvs_rs", "up", "--vip", VIP, "--method", "dr",
                          "--state-dir", os.path.join(net.tmp, f"{name}-lvs-rs"), timeout=30)
        for name in self.rs_names:
            self.start_nginx(name)

    def start_nginx(self, name: str) -> None:
        self.nginx[name] = servers.start_nginx(self.net, name, "0.0.0.0", PORT, name)
        wait_for(lambda: bool(self.net.exec(name, "ss", "-Htln", f"sport = :{PORT}", check=False).stdout.strip()),
                 what=f"nginx on {name}")

    def stop_nginx(self, name: str) -> None:
        self.net.kill(self.nginx.pop(name))

    def _watch_flows(self) -> None:
        """The switch notes, per director port, the client ports of the TCP packets it forwards there."""
        rules = ["table bridge ecmp {"]
        rules += [f"  set {d.role} {{ type inet_service; flags dynamic; size 65535; }}" for d in self.directors]
        rules += ["  chain forward {", "    type filter hook forward priority 0; policy accept;"]
        rules += [f'    oifname "p{d.role}" ip daddr {VIP} tcp dport {PORT} add @{d.role} {{ tcp sport }}'
                  for d in self.directors]
        rules += ["  }", "}"]
        self._switch_nft("\n".join(rules) + "\n")

    def _switch_nft(self, script: str) -> None:
        result = subprocess.run(["ip", "netns", "exec", self.net.name("lan"), "nft", "-f", "-"], input=script,
                                capture_output=True, text=True, timeout=10)
        if result.returncode:
            raise LabError(f"nft on the LAN switch: {result.stderr.strip()}")

    def _start_router(self) -> None:
        peers = "\n".join(f"protocol bgp {d.role} from director {{ neighbor {d.addr} as {DIRECTOR_AS}; }}"
                          for d in self.directors)
        conf = os.path.join(self.net.tmp, "router-bird.conf")
        with open(conf, "w") as f:
            f.write(ROUTER_BIRD.format(router_id=ROUTER_LAN, router_as=ROUTER_AS, hold=self.hold_time,
                                       keepalive=max(1, self.hold_time // 3), peers=peers))
        self.router = self.net.popen("router", "bird", "-f", "-c", conf, "-s", self.router_sock, log="router-bird.log")
        wait_for(lambda: os.path.exists(self.router_sock) or self.router.poll() is not None, what="the router's BIRD")
        if self.router.poll() is not None:
            raise LabError(f"the router's BIRD exited: {self.router_log()}")

    def router_log(self) -> str:
        with open(os.path.join(self.net.tmp, "router-bird.log")) as f:
            return f.read()

    # -- the directors' table ------------------------------------------------------------------

    def rules(self, scheduler: str = "mh", weight: int = 1) -> str:
        """The same DR service for every director, as an ipvsadm-save file (same order: same mh table;
        mh-port hashes the client port too, so one client's flows spread over the real servers)."""
        lines = [f"-A -t {VIP}:{PORT} -s {scheduler}" + (" -b mh-port" if scheduler == "mh" else "")]
        lines += [f"-a -t {VIP}:{PORT} -r {rip}:{PORT} -g -w {weight}" for rip in self.rips]
        return "\n".join(lines) + "\n"

    def start_directors(self, *extra: str, sync: bool = True) -> None:
        """Start every director at once with the table (so each announces the VIP as soon as its
        session is up), then its sync daemons; `extra` are more lvsd options. A director that joins
        a cluster already carrying traffic should start its sync daemons before it gets its table."""
        rules = os.path.join(self.net.tmp, "rules.save")
        with open(rules, "w") as f:
            f.write(self.rules())

        def ready(d: EcmpDirector) -> None:
            d.start("--config", rules, *extra)
            if sync:
                d.start_sync()

        self.each(ready)

    def join(self, d: EcmpDirector, settle: float = 4.0) -> None:
        """A director joins a cluster that carries traffic: lvsd and its sync daemons, the table with
        every weight 0 (it announces nothing, but adopts the connections the others sync: a backup
        keeps only those it has the service and real server for), `settle` seconds, then the weights
        all at once (one atomic batch: it announces with the whole table)."""
        d.start()
        d.start_sync()
        d.lvsadm("-R", stdin=self.rules(weight=0))
        time.sleep(settle)
        d.lvsadm("-R", "--atomic", stdin="".join(f"-e -t {VIP}:{PORT} -r {rip}:{PORT} -g -w 1\n" for rip in self.rips))

    def each(self, action: Callable[[EcmpDirector], T]) -> list[T]:
        """`action` on every director at once (lvsadm runs take a while each)."""
        with ThreadPoolExecutor(len(self.directors)) as pool:
            return list(pool.map(action, self.directors))

    # -- what the router sees ------------------------------------------------------------------

    def nexthops(self) -> set[str]:
        """The directors the router's route to the VIP goes through (none: no route)."""
        out = self.net.exec("router", "ip", "-j", "route", "show", f"{VIP}/32", check=False).stdout
        hops: set[str] = set()
        for route in json.loads(out or "[]"):
            hops.update(h["gateway"] for h in route.get("nexthops", []) if "gateway" in h)
            if "gateway" in route:
                hops.add(route["gateway"])
        return hops

    def wait_nexthops(self, wanted: set[str], timeout: float = 15.0) -> float:
        """Seconds until the router's next hops for the VIP are exactly `wanted`."""
        start = time.monotonic()
        wait_for(lambda: self.nexthops() == wanted, timeout=timeout, interval=0.05,
                 what=f"router next hops {sorted(wanted)} (have {sorted(self.nexthops())})")
        return time.monotonic() - start

    def flows(self, window: float) -> dict[int, set[str]]:
        """Which directors the router sent each client flow (by client port) to during `window` seconds,
        as the LAN switch saw it (nftables on the bridge: one set of ports per director port)."""
        self._switch_nft("".join(f"flush set bridge ecmp {d.role}\n" for d in self.directors))
        time.sleep(window)
        out = self.net.exec("lan", "nft", "-j", "list", "table", "bridge", "ecmp").stdout
        seen: dict[int, set[str]] = {}
        for item in json.loads(out)["nftables"]:
            found = item.get("set")
            for port in (found or {}).get("elem", []):
                seen.setdefault(port, set()).add(next(d.addr for d in self.directors if d.role == found["name"]))
        return seen
    def sessions(self) -> dict[str, str]:
        """The router's BGP session state per director."""
        with birdctl.BirdControl(self.router_sock) as bird:
            rows = birdctl.protocol_rows(bird.command("show protocols"))
        return {d.addr: rows.get(d.role, {}).get("info", "") for d in self.directors}

    # -- client traffic ---------------------------------------------------------------------------

    def probe(self, name: str, conns: int, interval: float = 0.1, timeout: float = 2.0) -> Probe:
        """Keep-alive connections that record their real server and whether they break."""
        return Probe(self.net, name, conns, interval, timeout)

    def download(self, name: str, rate: str = "1M", stall: int = 4) -> subprocess.Popen:
        """A rate-limited download of /big that fails (curl exit 28) if it stalls for `stall` seconds."""
        return self.net.popen("client", "curl", "-sS", "-o", "/dev/null", "--limit-rate", rate,
                              "--speed-time", str(stall), "--speed-limit", "1000",
                              "-w", "%{http_code} %{size_download} %{local_port}\n", f"http://{VIP}:{PORT}/big",
                              log=f"{name}.out")

    def wrk(self, seconds: int, conns: int = 12, delay_ms: int = 20) -> subprocess.Popen:
        """wrk keep-alive load, each connection pausing `delay_ms` between requests (bounded CPU); a request
        counts as timed out after 10 s, past a hold time's worth of retransmissions."""
        script = os.path.join(self.net.tmp, "wrk-delay.lua")
        with open(script, "w") as f:
            f.write(f"function delay()\n  return {delay_ms}\nend\n")
        return self.net.popen("client", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", script,
                              f"http://{VIP}:{PORT}/", log="wrk.out")

    def output(self, name: str) -> str:
        with open(os.path.join(self.net.tmp, f"{name}.out")) as f:
            return f.read()

    # -- a director goes away ------------------------------------------------------------------

    def cut(self, d: EcmpDirector) -> None:
        """Its LAN cable is pulled (the switch port goes down): nothing says goodbye."""
        self.net.ip("lan", "link", "set", f"p{d.role}", "down")

    def mend(self, d: EcmpDirector) -> None:
        self.net.ip("lan", "link", "set", f"p{d.role}", "up")

    def down(self) -> None:
        for d in self.directors:
            d.proc = None
        self.router = None
        self.net.teardown()


@contextmanager
def running(**kw: Any) -> Iterator[EcmpLab]:
    """An EcmpLab (`kw`: its parameters) with every director announcing the VIP; removed afterwards."""
    lab = EcmpLab(**kw).up()
    try:
        lab.start_directors()
        lab.wait_nexthops({d.addr for d in lab.directors}, timeout=30)
        yield lab
    finally:
        lab.down()


def main() -> int:
    """`python -m pylvs.lab.ecmp` (root): the lab with three directors up, until Ctrl-C."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with running() as lab:
            d1 = lab.directors[0]
            lvsadm = (f"ip netns exec {lab.net.name(d1.role)} {shlex.quote(sys.executable)} -m pylvs.cli.lvsadm "
                      f"--control {d1.control}")
            print(f"lab up: VIP {VIP} announced by {', '.join(d.addr for d in lab.directors)} (AS {DIRECTOR_AS}) "
                  f"to the router (AS {ROUTER_AS})\n"
                  f"  {lvsadm} --bgp\n"
                  f"  ip -n {lab.net.name('router')} route show {VIP}\n"
                  f"  ip netns exec {lab.net.name('client')} curl http://{VIP}/\n"
                  f"  birdc -s {lab.router_sock} show protocols\n"
                  "Ctrl-C removes it.", flush=True)
            stop.wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
