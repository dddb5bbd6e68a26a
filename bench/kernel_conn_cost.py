#!/usr/bin/env python3
"""What a connection scheduled in the kernel costs lvsd, without any network.

    python3 bench/kernel_conn_cost.py [--conns 50000] [--repeat 3] [--size 3] [--profile]

With `lvsd --datapath bpf` and a hash-scheduled NAT service (mh, sh, dh; pylvs_sched.bpf.h) the kernel
forwards every frame of a short connection, and lvsd's whole share is the events the program reports:
CREATED (the SYN, scheduled), the client's ACK (ESTABLISHED), the server's FIN (FIN_WAIT), the client's
FIN (TIME_WAIT), then the entries retired with the last ACK. Here those events, packed as the program
packs them, go through what lvsd runs for them: decode, FlowOffload.apply, drain, the engine's tick
every simulated second at 2,500 connections a second (TIME_WAIT connections pile up and expire) and
lvsd's garbage collection (pylvs.io.collector), in reads of 300 events, about what one wakeup of lvsd
reads under load. Printed: CPU µs per connection (process time), best and spread of `--repeat` runs,
each on a fresh engine. `--profile`: cProfile of one run, top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from conn_cost import CLIENT, CLIENT_MAC, VIP, mac, make_engine  # noqa: E402

from pylvs.datapath.bpf.events import SCHED_EVENT, decode  # noqa: E402
from pylvs.datapath.bpf.offload import FlowOffload  # noqa: E402
from pylvs.engine import tcpstate  # noqa: E402
from pylvs.engine.flow import DIR_IN, DIR_OUT, EVENT, KEY, RETIRED, addr16  # noqa: E402
from pylvs.engine.services import pack_ip  # noqa: E402
from pylvs.io.collector import Collector  # noqa: E402
from pylvs.packet.layout import TCP_ACK, TCP_FIN, TCP_SYN  # noqa: E402

RATE = 2500.0
BATCH = 60  # connections per read: 5 events each


class Published:
    """The kernel scheduler's publication, as `FlowOffload._adopt` asks it (pylvs.datapath.bpf.ksched)."""

    def __init__(self, svc) -> None:
        self.svc = svc

    def resolve(self, slot: int, gen: int, index: int):
        return self.svc, self.svc.dests[index]

    def publish(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def follow(self, slot: int, gen: int, cursor: int) -> None:
        pass  # (mh: nothing to follow)


def flow_key(saddr: bytes, daddr: bytes, sport: bytes, dport: bytes) -> bytes:
    return KEY.pack(2, 6, 0, addr16(saddr), addr16(daddr), sport, dport)


def connection_events(ts: int, cport: int, dest_index: int, dest) -> list[bytes]:
    """What the program reports for one short NAT connection, in ring order."""
    caddr, vaddr = pack_ip(CLIENT), pack_ip(VIP)
    cp, vp, rp = cport.to_bytes(2, "big"), (80).to_bytes(2, "big"), dest.port.to_bytes(2, "big")
    inbound = flow_key(caddr, vaddr, cp, vp)
    outbound = flow_key(dest.addr, caddr, rp, cp)
    return [
        SCHED_EVENT.pack(ts, inbound, TCP_SYN, DIR_IN, tcpstate.NONE, tcpstate.SYN_RECV, 1, 1, 0, dest_index,
                         dest.addr, rp, mac(CLIENT_MAC), 1, 0),
        EVENT.pack(ts + 100_000, inbound, TCP_ACK, DIR_IN, tcpstate.SYN_RECV, tcpstate.ESTABLISHED, 2),
        EVENT.pack(ts + 300_000, outbound, TCP_FIN | TCP_ACK, DIR_OUT, tcpstate.ESTABLISHED, tcpstate.FIN_WAIT, 1),
        EVENT.pack(ts + 400_000, inbound, TCP_FIN | TCP_ACK, DIR_IN, tcpstate.FIN_WAIT, tcpstate.TIME_WAIT, 3),
        RETIRED.pack(ts + 450_000, outbound, DIR_OUT, 0b11, bytes(6), 4, 4, 300, 1200, ts + 400_000, ts + 450_000),
    ]


def run(conns: int, size: int, profiler: cProfile.Profile | None = None) -> float:
    """CPU seconds per connection for `conns` kernel-scheduled connections through a fresh engine."""
    engine, _ = make_engine(size, "mh")
    svc = next(iter(engine.table))
    offload = FlowOffload(engine, flows=None)  # type: ignore[arg-type]  # the program did every map write
    offload.ksched = Published(svc)  # type: ignore[assignment]
    # Prepared ahead, so the loop times lvsd's work only: (simulated time, raw events) per read.
    batches, now, port = [], 1.0, 1024
    for start in range(0, conns, BATCH):
        raw: list[bytes] = []
        for i in range(start, min(start + BATCH, conns)):
            now += 1 / RATE
            raw += connection_events(int(now * 1e9), port, i % size, svc.dests[i % size])
            port = port + 1 if port < 65535 else 1024
        batches.append((now, raw))
    work = lambda: replay(engine, offload, batches)  # noqa: E731
    cpu0 = time.process_time()
    if profiler is not None:
        profiler.runcall(work)
    else:
        work()
    if offload.adopted != conns or offload.retired != conns:
        raise SystemExit(f"adopted {offload.adopted}, retired {offload.retired} of {conns}: the replay is wrong")
    return (time.process_time() - cpu0) / conns


def replay(engine, offload: FlowOffload, batches: list[tuple[float, list[bytes]]]) -> None:
    next_tick = 2.0
    collector = Collector(1.0)  # lvsd's garbage collection: the young generations at each tick
    try:
        for now, raw in batches:
            offload.apply([decode(r) for r in raw])
            offload.drain(now)
            if now >= next_tick:
                engine.tick(now)
                offload.drain(now)
                collector.tick(now)
                next_tick = now + 1.0
    finally:
        collector.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=3, help="real servers")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        run(args.conns, args.size, profiler)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    values = [run(args.conns, args.size) * 1e6 for _ in range(args.repeat)]
    print(f"kernel-scheduled NAT connections, {args.size} real servers: best {min(values):.1f} µs per connection, "
          f"median {statistics.median(values):.1f}, runs {', '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main()
