"""How long a response's FIN trails its last data segment at the client, and who closes first.

Issue 19: through nftables DNAT the real server's FIN reaches the client right behind the response,
before wrk has read it, so the client closes second and the real server keeps the TIME_WAIT; when a
director lets the FIN lag, the client closes first and keeps it. This script runs Connection: close
load (wrk) through each mode of the NAT lab while tcpdump records the client's side, and reports per
connection: the gap between the last data segment from the server and the server's FIN (0 when the
FIN rides on the data), and the share of connections where the client's FIN came first.

Run as root:  python3 bench/lag.py [--modes nftables,pylvs-bpf,pylvs] [--seconds 5] [--connections 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)] if str(REPO) not in sys.path else []
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from benchlab import VIP, http_check  # noqa: E402
from modes_lvs import MODES  # noqa: E402
from run import log, quiet_teardown  # noqa: E402

from pylvs.lab.netns import wait_for  # noqa: E402

FIN, SYN, RST = 0x01, 0x02, 0x04
_PCAP_NS = 0xA1B23C4D  # nanosecond-resolution pcap (tcpdump --time-stamp-precision=nano)
_REC = struct.Struct("=IIII")


def read_pcap(path: str):
    """(time in s, raw frame) of every Ethernet frame in a pcap file, without scapy (fast for 100k frames)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack_from("=I", data)[0]
    scale = 1e-9 if magic == _PCAP_NS else 1e-6
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = _REC.unpack_from(data, off)
        off += 16
        yield sec + frac * scale, data[off:off + caplen]
        off += caplen


@dataclass
class Conn:
    last_data: float | None = None   # the server's last segment with payload before its FIN
    server_fin: float | None = None
    client_fin: float | None = None
    fin_with_data: bool = False


def connections(path: str, server: str) -> dict[int, Conn]:
    """Per client port: when the server's data and FIN and the client's FIN crossed the client's link."""
    srv = bytes(int(x) for x in server.split("."))
    conns: dict[int, Conn] = {}
    for t, f in read_pcap(path):
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 0x0F) * 4
        tcp = 14 + ihl
        total = int.from_bytes(f[16:18], "big")
        doff = (f[tcp + 12] >> 4) * 4
        payload = total - ihl - doff
        flags = f[tcp + 13]
        from_server = f[26:30] == srv
        cport = int.from_bytes(f[tcp + 2:tcp + 4] if from_server else f[tcp:tcp + 2], "big")
        if flags & SYN and not from_server:
            conns[cport] = Conn()  # a new connection on this port (ports are reused)
            continue
        c = conns.get(cport)
        if c is None or flags & RST:
            continue
        if from_server and c.server_fin is None:
            if payload > 0:
                c.last_data = t
            if flags & FIN:
                c.server_fin = t
                c.fin_with_data = payload > 0
        elif not from_server and flags & FIN and c.client_fin is None:
            c.client_fin = t
    return conns


def summarize(conns: dict[int, Conn]) -> dict:
    done = [c for c in conns.values() if c.server_fin is not None and c.last_data is not None]
    lags = sorted((c.server_fin - c.last_data) * 1e6 for c in done)
    both = [c for c in conns.values() if c.server_fin is not None and c.client_fin is not None]
    client_first = sum(1 for c in both if c.client_fin < c.server_fin)

    def pct(p: float) -> float | None:
        return round(lags[min(len(lags) - 1, int(p * len(lags)))], 1) if lags else None

    return {"connections": len(done), "lag_us_p50": pct(0.5), "lag_us_p90": pct(0.9), "lag_us_p99": pct(0.99),
            "lag_us_mean": round(statistics.fmean(lags), 1) if lags else None,
            "fin_with_data": round(sum(c.fin_with_data for c in done) / len(done), 3) if done else None,
            "client_closed_first": round(client_first / len(both), 3) if both else None}


def measure(cls, seconds: int, connections_n: int) -> dict:
    mode = cls()
    lab = mode.make_lab()
    try:
        lab.build()
        mode.setup(lab)
        url = mode.http_url(lab)
        http_check(lab, url)
        server = urlsplit(url).hostname or VIP
        path = os.path.join(lab.net.tmp, "lag.pcap")
        logfile = os.path.join(lab.net.tmp, "lag-tcpdump.log")
        cap = lab.net.popen("client", "tcpdump", "-i", "eth0", "-n", "-s", "128", "--immediate-mode",
                            "--time-stamp-precision=nano", "-w", path, "tcp port 80 or tcp port 8080",
                            log="lag-tcpdump.log")
        wait_for(lambda: os.path.exists(logfile) and "listening on" in Path(logfile).read_text(), what="tcpdump")
        lab.net.exec("client", "wrk", "-t1", f"-c{connections_n}", f"-d{seconds}s", "-H", "Connection: close", url,
                     timeout=seconds + 30)
        time.sleep(0.5)
        lab.net.kill(cap)
        result = summarize(connections(path, server))
        mode.stop(lab)
        return result
    finally:
        quiet_teardown(lab)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="nftables,pylvs-bpf,pylvs")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=10, help="wrk -c (default 10)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/lag.py needs root (network namespaces)")
    known = {m.name: m for m in MODES}
    results = {}
    for name in args.modes.split(","):
        if name not in known:
            sys.exit(f"unknown mode {name}: one of {', '.join(known)}")
        log(f"{name}: {args.seconds} s of wrk -t1 -c{args.connections} Connection: close, tcpdump on the client")
        try:
            results[name] = measure(known[name], args.seconds, args.connections)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            results[name] = {"error": str(exc)}
        log(f"{name}: {results[name]}")
    head = ("mode", "conns", "lag p50 us", "lag p90 us", "lag p99 us", "FIN on data", "client closed first")
    print("".join(f"{h:>20}" for h in head))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:>20}  error: {r['error']}")
            continue
        cells = (name, r["connections"], r["lag_us_p50"], r["lag_us_p90"], r["lag_us_p99"], r["fin_with_data"],
                 r["client_closed_first"])
        print("".join(f"{c!s:>20}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
