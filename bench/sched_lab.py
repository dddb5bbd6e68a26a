#!/usr/bin/env python3
"""New connections per second through pylvs NAT with a small and a large real-server pool.

    sudo python3 bench/sched_lab.py [--servers 3,300] [--scheduler wlc] [--seconds 4] [--rounds 2]
                                    [--director lvsd|nftables] [--one-address] [--pin]
                                    [--perf DIR] [--py-spy DIR] [--profile FILE]

The NAT lab (pylvs.lab.topology.NatLab) with a single real-server namespace that holds every real
server: up to 100 addresses (192.0.2.11 ...) times the ports 8080-8082, all answered by one nginx,
so the back end is the same whatever the pool size and only the pool the scheduler chooses from
changes. Each pool size is a virtual service of its own (VIP port 80, 81, ...), all loaded at the
start with `lvsadm -R` (a flush between runs would leave the client's reused ports matching
connections to deleted servers, whose packets IPVS drops). After a warm-up run per service (so every
real server's address is resolved), wrk sends Connection: close requests, each a new connection, to
one service after the other (alternating, `--rounds` times) for `--seconds`. Printed per run:
connections/s, lvsd's CPU time per connection, user and system (less sensitive than the rate to
other load on the machine; system includes the real server's and the client's TCP work the kernel
does inside lvsd's sends), and how many real servers the director's counters show as used (a check
that the whole pool took part), the packets and frames lvsd handled per connection, nginx's CPU
per connection and how busy the machine was. `--director nftables` puts the director's kernel in
lvsd's place (DNAT, numgen round robin over the same pool): what the lab itself does at each pool
size. `--one-address` puts every real server on one address (a port each), `--pin` keeps lvsd on
a CPU of its own; `--perf`, `--py-spy` and `--profile` record where lvsd's time goes in each run
(C symbols, Python stacks) or over the whole session (cProfile).

Runs lvsd from the repository this script is in (PYTHONPATH), so a copy of the script in an older
checkout measures that checkout. Needs root, nginx and wrk; everything stays in the lab namespaces
and is torn down at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)] if str(REPO) not in sys.path else []
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from benchlab import LabTools, http_check  # noqa: E402
from loads import run_wrk  # noqa: E402

from pylvs.lab import servers  # noqa: E402
from pylvs.lab.netns import run, wait_for  # noqa: E402
from pylvs.lab.topology import VIP, NatLab  # noqa: E402

PORTS = (8080, 8081, 8082)
MAX_ADDRS = 100

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/pool-nginx.pid;
error_log {tmp}/pool-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/pool-body;
    proxy_temp_path {tmp}/pool-proxy;
    fastcgi_temp_path {tmp}/pool-fcgi;
    uwsgi_temp_path {tmp}/pool-uwsgi;
    scgi_temp_path {tmp}/pool-scgi;
    server {{
{listens}
        location / {{ default_type text/plain; return 200 "pool\\n"; }}
    }}
}}
"""


def pool(n: int, one_address: bool = False) -> list[tuple[str, int]]:
    """n real servers: addresses 192.0.2.11 ... times the three ports, address-major; or
    (`one_address`) 192.0.2.11 with the ports 8080, 8081, ... (as many as real servers)."""
    if one_address:
        return [("192.0.2.11", PORTS[0] + i) for i in range(n)]
    if n > MAX_ADDRS * len(PORTS):
        raise SystemExit(f"at most {MAX_ADDRS * len(PORTS)} real servers")
    return [(f"192.0.2.{11 + i // len(PORTS)}", PORTS[i % len(PORTS)]) for i in range(n)]


class PoolLab(LabTools, NatLab):
    """NatLab with one real-server namespace answering on many addresses and three ports.

    `director`: "lvsd", or "nftables" (the kernel's DNAT with numgen round robin over the same pool,
    the reference mode of bench/run.py): what the lab costs at each pool size without lvsd.
    """

    def __init__(self, director: str = "lvsd", profile: str | None = None, ports: int = len(PORTS)) -> None:
        super().__init__(n_rs=1, director_forwarding=director == "nftables")
        self.director = director
        self.profile = profile
        self.ports = range(PORTS[0], PORTS[0] + max(ports, len(PORTS)))  # nginx listens on these

    def build(self) -> PoolLab:
        self.up(http=False, udp=False)
        try:
            for i in range(1, MAX_ADDRS):
                self.net.addr("rs1", "eth0", f"192.0.2.{11 + i}/24")
            self.wide_port_range("client", "director")
            conf = os.path.join(self.net.tmp, "pool-nginx.conf")
            listens = "\n".join(f"        listen {port} reuseport;" for port in self.ports)
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=self.net.tmp, listens=listens))
            self.nginx = self.net.popen("rs1", servers.nginx_binary(), "-c", conf, log="pool-nginx.out")
            for port in (self.ports[0], self.ports[-1]):
                wait_for(lambda p=port: self.port_open(p), what=f"nginx on port {port}")
            if self.director == "lvsd" and self.profile:
                self.start_lvsd_profiled(self.profile)
            elif self.director == "lvsd":
                self.start_lvsd()
            else:
                self.net.addr("director", "vip0", f"{VIP}/32")
        except BaseException:
            self.down()
            raise
        return self

    def pool(self, n: int) -> list[tuple[str, int]]:
        return pool(n, one_address=len(self.ports) > len(PORTS))

    def nginx_workers(self) -> list[int]:
        """The nginx worker's pid (the master only waits), for its CPU time per connection."""
        with open(f"/proc/{self.nginx.pid}/task/{self.nginx.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def port_open(self, port: int) -> bool:
        return bool(self.net.exec("rs1", "ss", "-Htln", f"sport = :{port}", check=False).stdout.strip())

    def load_services(self, sizes: list[int], scheduler: str) -> None:
        if self.director == "nftables":
            self.load_dnat(sizes)
            return
        rules = []
        for vport, n in enumerate(sizes, start=80):
            rules.append(f"-A -t {VIP}:{vport} -s {scheduler}")
            rules += [f"-a -t {VIP}:{vport} -r {addr}:{port} -m -w 1" for addr, port in self.pool(n)]
        self.lvsadm("-R", stdin="\n".join(rules) + "\n")

    def load_dnat(self, sizes: list[int]) -> None:
        """One DNAT rule per pool size: round robin (numgen) over its addresses and ports."""
        rules = []
        for vport, n in enumerate(sizes, start=80):
            targets = ", ".join(f"{i} : {addr} . {port}" for i, (addr, port) in enumerate(self.pool(n)))
            rules.append(f"ip daddr {VIP} tcp dport {vport} counter dnat ip to numgen inc mod {n} map {{ {targets} }}")
        body = "\n        ".join(rules)
        script = (f"table ip schedlab {{\n    chain prerouting {{\n"
                  f"        type nat hook prerouting priority dstnat; policy accept;\n        {body}\n    }}\n}}\n")
        run(["ip", "netns", "exec", self.net.name("director"), "nft", "-f", "-"], input=script, timeout=30)

    def counters(self, vport: int) -> tuple[int, int] | None:
        """The service's connections and packets (both directions) since it was added, from lvsadm
        --stats (None with nftables)."""
        if self.director == "nftables":
            return None
        out = self.lvsadm("-L", "-n", "--stats", "--exact", "-t", f"{VIP}:{vport}").stdout
        fields = next(line.split() for line in out.splitlines() if line.startswith("TCP"))
        return int(fields[2]), int(fields[3]) + int(fields[4])

    def frames(self) -> dict[str, int] | None:
        """lvsd's counters: frames its rings received, frames the rings dropped (full), and the
        engine's drops by reason (None with nftables)."""
        if self.director == "nftables":
            return None
        found = json.loads(self.lvsadm("--drops", "--json").stdout)
        rings = found["rings"].values()
        return {"received": sum(r.get("packets", 0) for r in rings), "ring full": sum(r.get("drops", 0) for r in rings),
                **found["drops"]}

    def servers_used(self, vport: int) -> int | None:
        """Real servers of the service with a connection in the director's counters (None with
        nftables, whose numgen round robin covers the pool by construction)."""
        if self.director == "nftables":
            return None
        out = self.lvsadm("-L", "-n", "-t", f"{VIP}:{vport}").stdout
        used = 0
        for line in out.splitlines():
            fields = line.split()
            if line.strip().startswith("->") and fields[1] != "RemoteAddress:Port" and len(fields) >= 6:
                used += int(fields[4]) + int(fields[5]) > 0
        return used


def start_perf(directory: str, name: str, pid: int) -> subprocess.Popen:
    """`perf record` of lvsd's user and kernel time by symbol (cpu-clock: VMs often lack hardware
    counters; no call graphs: CPython 3.11 has no frame pointers), stopped with SIGINT after the run."""
    os.makedirs(directory, exist_ok=True)
    return subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-p", str(pid),
                             "-o", os.path.join(directory, f"{name}.data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pyspy_binary() -> str | None:
    """py-spy beside this Python (a venv's), else on PATH; not a dependency of pylvs."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy")


def start_pyspy(directory: str, name: str, pid: int, seconds: int) -> subprocess.Popen:
    """`py-spy record` of lvsd's Python stacks for the run, without pausing it (--nonblocking)."""
    os.makedirs(directory, exist_ok=True)
    return subprocess.Popen([pyspy_binary() or "py-spy", "record", "--nonblocking", "-r", "250",
                             "-d", str(seconds), "-f", "raw", "-p", str(pid),
                             "-o", os.path.join(directory, f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="3,300", help="pool sizes, comma separated")
    parser.add_argument("--scheduler", default="wlc")
    parser.add_argument("--seconds", type=int, default=4, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per pool size (alternating)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--perf", metavar="DIR",
                        help="perf record lvsd (cpu-clock samples) during each run into DIR/<servers>-<round>.data")
    parser.add_argument("--py-spy", metavar="DIR", dest="pyspy",
                        help="py-spy record lvsd (Python stacks) during each run into DIR/<servers>-<round>.txt")
    parser.add_argument("--profile", metavar="FILE",
                        help="lvsd (python data path) under cProfile, its stats written to FILE at the end")
    parser.add_argument("--pin", action="store_true",
                        help="lvsd on the last CPU, nginx on the others (the scheduler no longer moves them together)")
    parser.add_argument("--one-address", action="store_true",
                        help="every real server on 192.0.2.11, one port each (8080, 8081, ...): the pool grows, "
                             "the real servers' addresses do not")
    parser.add_argument("--director", choices=("lvsd", "nftables"), default="lvsd",
                        help="what balances: lvsd, or the kernel's nftables DNAT (the lab's own cost)")
    args = parser.parse_args()
    if args.perf and not shutil.which("perf"):
        parser.error("--perf needs perf (apt-get install linux-perf)")
    if args.pyspy and not pyspy_binary():
        parser.error("--py-spy needs py-spy (pip install py-spy)")
    sizes = [int(s) for s in args.servers.split(",")]
    label = args.scheduler if args.director == "lvsd" else "nftables numgen"

    lab = PoolLab(args.director, args.profile and os.path.abspath(args.profile),
                  ports=max(sizes) if args.one_address else len(PORTS)).build()
    rates: dict[int, list[float]] = {n: [] for n in sizes}
    costs: dict[int, list[float]] = {n: [] for n in sizes}  # lvsd CPU µs per connection
    users: dict[int, list[float]] = {n: [] for n in sizes}  # of which user time (lvsd's own Python)
    urls = {n: f"http://{VIP}:{vport}/" for vport, n in enumerate(sizes, start=80)}
    try:
        lab.load_services(sizes, args.scheduler)
        for url in urls.values():
            http_check(lab, url)
            # warm up: every real server's address gets resolved (ARP) before the measured runs
            run_wrk(lab.net, url, 3, keepalive=False, connections=args.connections)
        workers = lab.nginx_workers()
        if args.pin and lab.lvsd:
            last = max(os.sched_getaffinity(0))
            os.sched_setaffinity(lab.lvsd.pid, {last})
            for pid in (lab.nginx.pid, *workers):
                os.sched_setaffinity(pid, os.sched_getaffinity(0) - {last})
        for round_ in range(args.rounds):
            for vport, n in enumerate(sizes, start=80):
                time.sleep(0.5)
                before, frames_before = lab.counters(vport), lab.frames()
                perf = start_perf(args.perf, f"{n}-{round_}", lab.lvsd.pid) if args.perf and lab.lvsd else None
                spy = start_pyspy(args.pyspy, f"{n}-{round_}", lab.lvsd.pid, args.seconds) \
                    if args.pyspy and lab.lvsd else None
                result = run_wrk(lab.net, urls[n], args.seconds, keepalive=False,
                                 lb_pid=lab.lvsd.pid if lab.lvsd else None, connections=args.connections,
                                 side_pids=workers)
                if perf:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(timeout=30)
                if spy:
                    spy.wait(timeout=30)
                rates[n].append(result.rps)
                core = result.cpu.lb_core_pct if result.cpu else None
                cpu = ""
                if core is not None and result.rps:
                    costs[n].append(core / 100 / result.rps * 1e6)
                    user = result.cpu.lb_user_pct / 100 / result.rps * 1e6
                    users[n].append(user)
                    cpu = (f", lvsd {core:.0f} % of a core = {costs[n][-1]:.0f} µs per connection "
                           f"({user:.0f} user, {costs[n][-1] - user:.0f} system)")
                if result.cpu and result.rps:
                    cpu += (f", nginx {result.cpu.side_core_pct / 100 / result.rps * 1e6:.0f} µs per connection"
                            f", host {result.cpu.host_busy_pct:.0f} % busy ({result.cpu.host_steal_pct:.0f} % steal)")
                used = lab.servers_used(vport)
                after, frames_after = lab.counters(vport), lab.frames()
                if before and after and after[0] > before[0]:
                    conns = after[0] - before[0]
                    cpu += f", {(after[1] - before[1]) / conns:.2f} packets per connection"
                    grew = {k: v - frames_before.get(k, 0) for k, v in frames_after.items()}
                    cpu += f" ({grew.pop('received') / conns:.2f} frames received)"
                    cpu += "".join(f", {k} {v}" for k, v in grew.items() if v)
                print(f"{n:4d} real servers ({label}): {result.rps:8.0f} conn/s, {result.error_total} errors"
                      f"{'' if used is None else f', {used} servers used'}{cpu}", flush=True)
        if args.profile:
            for vport, n in enumerate(sizes, start=80):
                print(f"{n:4d} real servers: {lab.counters(vport)[0]} connections scheduled in all (warm-up included)")
            lab.stop_lvsd()  # SIGTERM: lvsd's loop ends and cProfile writes its file
    finally:
        lab.down()
    print()
    for n in sizes:
        cost = (f", {statistics.median(costs[n]):.0f} µs of lvsd CPU per connection "
                f"({statistics.median(users[n]):.0f} user; least {min(costs[n]):.0f})") if costs[n] else ""
        print(f"{n:4d} real servers: median {statistics.median(rates[n]):8.0f} conn/s "
              f"(runs {min(rates[n]):.0f}-{max(rates[n]):.0f}){cost} ({len(rates[n])} runs)")
    if len(sizes) > 1:
        first, last = statistics.median(rates[sizes[0]]), statistics.median(rates[sizes[-1]])
        print(f"change from {sizes[0]} to {sizes[-1]} real servers: {100 * (last - first) / first:+.1f} %")
        # Other load on the machine only ever slows a run down: the best runs are the least disturbed.
        best_first, best_last = max(rates[sizes[0]]), max(rates[sizes[-1]])
        print(f"change of the best runs: {100 * (best_last - best_first) / best_first:+.1f} %; "
              f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
