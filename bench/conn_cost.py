#!/usr/bin/env python3
"""What a new NAT connection costs the engine at several pool sizes, without any network.

    python3 bench/conn_cost.py [--sizes 3,300] [--conns 20000] [--repeat 3] [--scheduler wlc] [--profile N]

The sans-I/O engine (pylvs.engine) gets the frames of whole short TCP connections, as
`bench/sched_lab.py`'s wrk Connection: close load makes them through lvsd: SYN, SYN-ACK, ACK, request,
response, the server's FIN, the client's ACK and FIN, the server's last ACK (9 frames), with 50
connections in flight at once, a clock that advances as at 2,500 connections a second and a `tick()`
every simulated second (so TIME_WAIT connections pile up and expire as in the lab). The pool is laid
out as sched_lab's: addresses times the ports 8080-8082, one hop per address. Printed per pool size:
CPU µs per connection (process time), best and spread of `--repeat` runs, each on a fresh engine.
`--profile N`: cProfile of one run at pool size N, top functions by own time.

With `--offload` a FlowOffload consumer (pylvs.datapath.bpf.offload) is attached to a stand-in flow
map that packs keys and values as the real one does, and the engine sees only what the kernel fast
path punts: SYN, SYN-ACK, the ACK that establishes, then the state changes of the FIN exchange as
kernel events (`tcp_transition`), as with `lvsd --datapath bpf`.

Garbage is collected as lvsd collects it (pylvs.io.collector: no automatic passes, the young
generations at each tick), so what the collector costs per connection is lvsd's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from pylvs.datapath.bpf.offload import FlowOffload  # noqa: E402
from pylvs.engine.engine import Engine, Interface  # noqa: E402
from pylvs.engine.hops import Hop, StaticRoutes  # noqa: E402
from pylvs.engine.services import Method, RealServer, VirtualService, pack_ip  # noqa: E402
from pylvs.io.collector import Collector  # noqa: E402
from pylvs.packet import vnet  # noqa: E402

CLIENT, VIP = "203.0.113.10", "203.0.113.100"
CLIENT_MAC, VIP_MAC = "02:00:00:00:01:99", "02:00:00:00:01:01"
DIP_MAC, RS_MAC = "02:00:00:00:02:01", "02:00:00:00:02:99"
PORTS = (8080, 8081, 8082)
IN_FLIGHT = 50
RATE = 2500.0  # simulated new connections per second
SPORT = 44   # TCP source port in a frame: vnet header 10 + Ethernet 14 + IPv4 header 20
DPORT = 46


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def rs_addr(i: int) -> str:
    return f"10.1.{i // 250}.{1 + i % 250}"


def pool(n: int) -> list[tuple[str, int]]:
    return [(rs_addr(i // len(PORTS)), PORTS[i % len(PORTS)]) for i in range(n)]


def frame(pkt) -> bytes:
    return vnet.pack() + bytes(pkt)


class Frames:
    """Template frames (built once with scapy); a connection's own are these with its ports written in."""

    def __init__(self, addrs: list[str]) -> None:
        c = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP)
        self.client = [frame(c / TCP(sport=1, dport=80, flags=f) / payload) for f, payload in
                       (("S", b""), ("A", b""), ("PA", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                        ("A", b""), ("FA", b""))]
        self.server = {}
        for addr in addrs:
            s = Ether(src=RS_MAC, dst=DIP_MAC) / IP(src=addr, dst=CLIENT)
            self.server[pack_ip(addr)] = [frame(s / TCP(sport=1, dport=1, flags=f) / payload) for f, payload in
                                          (("SA", b""), ("PA", b"HTTP/1.1 200 OK\r\n" + bytes(130)), ("FA", b""),
                                           ("A", b""))]

    @staticmethod
    def with_ports(template: bytes, sport: int, dport: int) -> bytearray:
        buf = bytearray(template)
        buf[SPORT:SPORT + 2] = sport.to_bytes(2, "big")
        buf[DPORT:DPORT + 2] = dport.to_bytes(2, "big")
        return buf


# The frames of one connection, in order: (from the client?, template index).
PYTHON_STEPS = ((True, 0), (False, 0), (True, 1), (True, 2), (False, 1), (False, 2), (True, 3), (True, 4), (False, 3))
# With the fast path the engine sees SYN, SYN-ACK and the ACK that establishes; the rest is kernel events.
OFFLOAD_STEPS = ((True, 0), (False, 0), (True, 1))


class StandInFlows:
    """The FlowMap's interface, packing as it does, storing nothing."""

    def put(self, entry) -> None:
        entry.pack_key(), entry.pack_value()

    def take(self, entry) -> bool:
        entry.pack_key()
        return True

    def refresh(self, entry) -> bool:
        entry.pack_key()
        return True


def make_engine(n: int, scheduler: str) -> tuple[Engine, list[str]]:
    dests = pool(n)
    addrs = sorted({addr for addr, _ in dests})
    hops = {pack_ip(CLIENT): Hop(1, mac(CLIENT_MAC), mac(VIP_MAC))}
    hops.update({pack_ip(addr): Hop(2, mac(RS_MAC), mac(DIP_MAC)) for addr in addrs})
    engine = Engine(StaticRoutes(hops))
    engine.add_interface(Interface(1, "vip0", mac(VIP_MAC), {pack_ip("203.0.113.1")}))
    engine.add_interface(Interface(2, "dip0", mac(DIP_MAC), {pack_ip("10.1.255.1")}))
    svc = engine.table.add_service(VirtualService(6, pack_ip(VIP), 80, scheduler))
    for addr, port in dests:
        engine.table.add_dest(svc, RealServer(pack_ip(addr), port, method=Method.MASQ))
    return engine, addrs


def run(n: int, conns: int, scheduler: str, offload: bool, profiler: cProfile.Profile | None = None) -> float:
    """CPU seconds per connection for `conns` connections through a fresh engine with `n` real servers,
    after a warm-up of two connections per real server (every checksum delta pair made, as after
    sched_lab's warm-up run)."""
    engine, addrs = make_engine(n, scheduler)
    load = Load(engine, Frames(addrs), offload)
    load.collector = Collector(load.now)
    try:
        load.connections(2 * n)
        cpu0 = time.process_time()
        if profiler is not None:
            profiler.runcall(load.connections, conns)
        else:
            load.connections(conns)
        return (time.process_time() - cpu0) / conns
    finally:
        load.collector.close()


class Load:
    """Connections through one engine, IN_FLIGHT at a time, each a step further per round."""

    def __init__(self, engine: Engine, frames: Frames, offload: bool) -> None:
        self.engine = engine
        self.frames = frames
        self.fast = FlowOffload(engine, StandInFlows()) if offload else None
        self.steps = OFFLOAD_STEPS if offload else PYTHON_STEPS
        self.next_port = 1024
        self.now = 1.0
        self.next_tick = 2.0
        self.collector: Collector | None = None  # lvsd's garbage collection at each tick

    def connections(self, count: int) -> None:
        engine, frames, fast, steps = self.engine, self.frames, self.fast, self.steps
        process, with_ports, client = engine.process, frames.with_ports, frames.client
        slots: list[list] = []  # per connection: [client port, step, real server address, real server port]
        started = done = 0
        while done < count:
            if len(slots) < IN_FLIGHT and started < count:
                slots.append([self.next_port, 0, b"", 0])
                self.next_port = self.next_port + 1 if self.next_port < 65535 else 1024
                started += 1
                self.now += 1 / RATE
            now = self.now
            for slot in list(slots):
                cport, step, raddr, rport = slot
                from_client, index = steps[step]
                if from_client:
                    out = process(with_ports(client[index], cport, 80), 1, now)
                    if step == 0:
                        sent = out[0][1]
                        slot[2], slot[3] = bytes(sent[40:44]), int.from_bytes(sent[DPORT:DPORT + 2], "big")
                else:
                    process(with_ports(frames.server[raddr][index], rport, cport), 2, now)
                if fast is not None:
                    fast.drain(now, 1 if from_client else 2)
                slot[1] = step + 1
                if slot[1] == len(steps):
                    if fast is not None:  # the kernel forwards the rest and reports the FIN exchange's changes
                        key = pack_ip(CLIENT) + pack_ip(VIP) + cport.to_bytes(2, "big") + b"\0\x50"
                        out_key = raddr + pack_ip(CLIENT) + rport.to_bytes(2, "big") + cport.to_bytes(2, "big")
                        engine.tcp_transition(out_key, 0x11, now)
                        engine.tcp_transition(key, 0x10, now)
                        engine.tcp_transition(key, 0x11, now)
                        engine.tcp_transition(out_key, 0x10, now)
                        fast.drain(now)
                    slots.remove(slot)
                    done += 1
            if now >= self.next_tick:
                engine.tick(now)
                if self.collector is not None:
                    self.collector.tick(now)
                self.next_tick = now + 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3,300")
    parser.add_argument("--conns", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scheduler", default="wlc")
    parser.add_argument("--offload", action="store_true", help="the engine's share with the kernel fast path")
    parser.add_argument("--profile", type=int, metavar="N", help="profile one run at pool size N instead")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        run(args.profile, args.conns, args.scheduler, args.offload, profiler)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    sizes = list(dict.fromkeys(int(s) for s in args.sizes.split(",")))
    results: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:  # interleaved, so a change in the machine's load touches every size alike
            results[n].append(run(n, args.conns, args.scheduler, args.offload) * 1e6)
    mode = "engine + fast path offload" if args.offload else "engine, every frame"
    for n in sizes:
        values = results[n]
        print(f"{n:5d} real servers ({args.scheduler}, {mode}): best {min(values):6.1f} µs per connection, "
              f"median {statistics.median(values):6.1f}, runs {', '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main()
