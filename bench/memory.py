"""Memory per established connection with the kernel fast path: the flow map plus lvsd's own memory.

    sudo .venv/bin/python bench/memory.py [--conns 1000000] [--method nat|dr]

In a network namespace of its own (pylvs.lab.netns), a child process builds what lvsd builds: an
engine with one virtual service over 10 real servers and the fast path's program and maps, the flow
map sized for the connections (NAT: two recipes each, DR: one). It then fills the engine with N
established TCP connections through its real API, adopting them as a sync backup (and a restarted
lvsd) does (`Engine.adopt`), and lets `FlowOffload` write their recipes into the kernel's map from
the engine's events, as in lvsd. Measured:
- the map's kernel memory: `memlock` in /proc/self/fdinfo of the map's descriptor (the kernel's own
  accounting of the map; an LRU hash allocates all its entries when it is created);
- lvsd's memory: the growth of the process's resident set (VmRSS) from before the first connection
  to after the last recipe was written, after a garbage collection; and, for the breakdown, the
  sizes (sys.getsizeof) of one connection's objects.
Prints one JSON object; bench/README.md ("Memory per connection") has the results.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pylvs.lab.netns import Netns  # noqa: E402

VIP = bytes((203, 0, 113, 100))
REAL_SERVERS = 10
BATCH = 10000  # connections adopted between two drains of the offload's events


def rss() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def memlock(fd: int) -> int:
    """The kernel's accounting of a BPF map's memory (fdinfo `memlock`)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise RuntimeError("no memlock in fdinfo")


def client(i: int) -> tuple[bytes, bytes]:
    """The i-th client address and port: 64,000 ports on each of 10.x.y.z."""
    host, port = divmod(i, 64000)
    return bytes((10, host >> 16 & 0xFF, host >> 8 & 0xFF, host & 0xFF)), (1024 + port).to_bytes(2, "big")


def build(method: str):
    from pylvs.engine.engine import Engine, Interface
    from pylvs.engine.hops import Hop, StaticRoutes
    from pylvs.engine.services import Method, RealServer, VirtualService

    outside = Hop(1, bytes.fromhex("020000000001"), bytes.fromhex("020000000101"))
    hops = {bytes((192, 0, 2, 11 + i)): Hop(2, bytes((2, 0, 0, 0, 2, 11 + i)), bytes.fromhex("020000000102"))
            for i in range(REAL_SERVERS)}
    engine = Engine(StaticRoutes(hops, default=outside))
    engine.add_interface(Interface(1, "vip0", outside.eth[6:], {bytes((203, 0, 113, 1))}))
    engine.add_interface(Interface(2, "dip0", bytes.fromhex("020000000102"), {bytes((192, 0, 2, 1))}))
    svc = engine.table.add_service(VirtualService(6, VIP, 80, "rr"))
    fwd = Method.MASQ if method == "nat" else Method.ROUTE
    for addr in hops:
        engine.table.add_dest(svc, RealServer(addr, 8080 if fwd == Method.MASQ else 80, method=fwd))
    return engine, fwd


def objects(engine, offload) -> dict[str, int]:
    """sys.getsizeof of one offloaded connection's objects (dict slots of the tables not included)."""
    conn = next(iter(offload._offloaded))
    flows = [f for f in (conn.in_flow, conn.out_flow) if f is not None]
    return {
        "Conn": sys.getsizeof(conn),
        "FlowEntry": sum(sys.getsizeof(f) for f in flows),
        "keys and addresses (bytes)": sum(sys.getsizeof(b) for b in {id(b): b for b in (
            conn.caddr, conn.cport, conn.vaddr, conn.vport, conn.daddr, conn.dport, conn.in_key, conn.out_key,
            *(x for f in flows for x in (f.key, f.addrs, f.ports)))}.values()),
        "offload's tuple": sys.getsizeof(offload._offloaded[conn]),
    }


def measure(conns: int, method: str) -> dict:
    """In the namespace: fill an engine and the real map, and measure both."""
    from pylvs.datapath.bpf.adopt import resolve_hops
    from pylvs.datapath.bpf.loader import FastPath
    from pylvs.datapath.bpf.offload import FlowOffload
    from pylvs.engine import tcpstate
    from pylvs.engine.flow import KEY, VALUE
    from pylvs.sync.proto import SyncConn

    engine, fwd = build(method)
    per_conn = 2 if method == "nat" else 1
    fast = FastPath(pin_root=None, max_flows=conns * per_conn)
    offload = FlowOffload(engine, fast.flows)
    map_bytes = memlock(fast.flows.fd)
    dport = (8080 if method == "nat" else 80).to_bytes(2, "big")
    sample = random.Random(1).sample(range(conns), min(conns, 1000))
    gc.collect()
    before = rss()
    started = time.monotonic()
    for start in range(0, conns, BATCH):
        now = time.monotonic()
        for i in range(start, min(conns, start + BATCH)):
            caddr, cport = client(i)
            rec = SyncConn(6, caddr, cport, VIP, b"\0\x50", bytes((192, 0, 2, 11 + i % REAL_SERVERS)), dport,
                           flags=int(fwd), state=tcpstate.ESTABLISHED)
            resolve_hops(engine, engine.adopt(rec, now))
        offload.drain(now, -1)  # the STATE events: every recipe into the kernel's map
    fill_seconds = time.monotonic() - started
    gc.collect()
    after = rss()
    missing = 0
    for i in sample:  # the recipes are in the kernel (an LRU map evicts early when it is too small)
        caddr, cport = client(i)
        key = KEY.pack(2, 6, 0, bytes(10) + b"\xff\xff" + caddr, bytes(10) + b"\xff\xff" + VIP, cport, b"\0\x50")
        missing += fast.flows.lookup(key) is None
    result = {
        "conns": conns, "method": method, "table": len(engine.conns), "offloaded": len(offload),
        "map_max_entries": conns * per_conn, "map_key_bytes": KEY.size, "map_value_bytes": VALUE.size,
        "map_memlock_bytes": map_bytes, "sampled_missing_from_map": missing,
        "lvsd_rss_growth_bytes": after - before, "objects_of_one_conn": objects(engine, offload),
        "fill_seconds": round(fill_seconds, 1),
    }
    result["per_conn"] = {
        "map": round(map_bytes / conns), "lvsd_rss": round((after - before) / conns),
        "total": round((map_bytes + after - before) / conns),
    }
    fast.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=1_000_000)
    p.add_argument("--method", choices=("nat", "dr"), default="nat")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.conns, args.method)))
        return 0
    net = Netns()
    try:
        net.add("director")
        out = net.exec("director", sys.executable, os.path.abspath(__file__), "--child", "--conns", str(args.conns),
                       "--method", args.method, timeout=1800).stdout
    finally:
        net.teardown()
    print(json.dumps(json.loads(out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
