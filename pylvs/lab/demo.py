"""The pylvs demo: a NAT lab in network namespaces, load-balanced by lvsd, configured with lvsadm.

Run as root: `make demo` (or `python3 -m pylvs.lab.demo`). Everything it creates is removed at the
end, also on Ctrl-C or failure.

lvsd runs with its Prometheus metrics and its status page on. The director's namespace is reached from
this host through one more veth pair with link-local addresses (HOST_SIDE, OBSERVE_ADDR): lvsd listens on
OBSERVE_ADDR, which a browser or Prometheus on this host reaches while the demo runs.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import urllib.request

from pylvs.lab.netns import LabError, run
from pylvs.lab.topology import CLIENT, DIP, VIP, NatLab

HOST_SIDE = "169.254.77.1/30"  # link-local: never routed beyond this host and the lab
OBSERVE_ADDR = "169.254.77.2"
METRICS_PORT, WEB_PORT = 9100, 8080


def say(text: str = "") -> None:
    print(text, flush=True)


def lvsadm(lab: NatLab, *args: str) -> str:
    say(f"# lvsadm {' '.join(args)}")
    out = lab.lvsadm(*args).stdout
    if out:
        say(out.rstrip("\n"))
    return out


def observe_link(lab: NatLab) -> str:
    """A veth pair from this host's namespace to the director's (mgmt0), for the metrics and the page.
    The host side is named after the lab; removing the director namespace removes both ends."""
    host_if = f"{lab.net.prefix}-m"
    run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", f"{lab.net.prefix}-n"])
    run(["ip", "link", "set", f"{lab.net.prefix}-n", "netns", lab.net.name("director")])
    lab.net.ip("director", "link", "set", f"{lab.net.prefix}-n", "name", "mgmt0")
    lab.net.ip("director", "link", "set", "mgmt0", "up")
    lab.net.addr("director", "mgmt0", f"{OBSERVE_ADDR}/30")
    run(["ip", "addr", "add", HOST_SIDE, "dev", host_if])
    run(["ip", "link", "set", host_if, "up"])
    return host_if


def check_from_host(url: str) -> str:
    """What the status page's JSON says, fetched from this host's namespace (the path a browser takes)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            status = json.load(answer)
    except (OSError, ValueError) as exc:
        return f"not reachable from this host ({exc})"
    return f"reachable from this host: {status['services_total']} service(s), {status['total']['conns']} connections"


def linger(lab: NatLab, web: str) -> None:
    """On a terminal: keep the lab up with light traffic until Enter, so the page has something to show."""
    if not sys.stdin.isatty():
        return
    lab.net.popen("client", "timeout", "900", "sh", "-c",
                  f"while :; do curl -s -o /dev/null http://{VIP}/; sleep 0.05; done", log="demo-traffic.log")
    say(f"\nThe lab stays up with light traffic (about 20 requests/s) while you look at {web} ;")
    say("press Enter (or Ctrl-C) to remove it.")
    try:
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass


def demo(requests: int = 6) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # SIGTERM tears down like Ctrl-C
    lab = NatLab(n_rs=3)
    say(f"Building the NAT lab (namespaces {lab.net.prefix}-*):")
    say(f"  client {CLIENT} -> VIP {VIP}:80 -> director (DIP {DIP}) -> real servers "
        f"{', '.join(f'{a}:{lab.rport}' for a in lab.rips)}")
    try:
        lab.up()
        observe_link(lab)
        metrics, web = f"{OBSERVE_ADDR}:{METRICS_PORT}", f"{OBSERVE_ADDR}:{WEB_PORT}"
        lab.start_lvsd("--metrics", metrics, "--web", web)
        say("lvsd is running in the director namespace (interfaces vip0, dip0), observed through mgmt0:")
        say(f"  Prometheus metrics  http://{metrics}/metrics")
        say(f"  live status page    http://{web}/")
        say("  (link-local addresses on a veth pair from this host into the director namespace)\n")
        lvsadm(lab, "-A", "-t", f"{VIP}:80", "-s", "rr")
        for addr in lab.rips:
            lvsadm(lab, "-a", "-t", f"{VIP}:80", "-r", f"{addr}:{lab.rport}", "-m", "-w", "1")
        say()
        lvsadm(lab, "-L", "-n")
        say(f"\n{requests} HTTP requests from the client to http://{VIP}/ :")
        for i in range(1, requests + 1):
            r = lab.curl(f"http://{VIP}/")
            if r.returncode:
                raise LabError(f"curl failed: {r.stderr.strip()}")
            name = r.stdout.strip()
            seen = lab.access_log(name)[-1] if lab.access_log(name) else "?"
            say(f"  request {i}: answered by {name} (which saw the client as {seen})")
        say("\nA 3-second wrk run (keep-alive, 20 connections):")
        w = lab.net.exec("client", "wrk", "-t1", "-c20", "-d3s", f"http://{VIP}/", timeout=30)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", w.stdout)
        say(f"  {rate.group(1) if rate else '?'} requests/s through the VIP")
        say()
        lvsadm(lab, "-L", "-n", "--stats")
        say()
        out = lab.lvsadm("-L", "-n", "-c").stdout.splitlines()
        say("# lvsadm -L -n -c   (first lines)")
        say("\n".join(out[:6]))
        say(f"  ... {max(0, len(out) - 2)} connection entries in all")
        say(f"\nStatus page http://{web}/ : {check_from_host(f'http://{web}/api/status')}")
        say(f"Metrics http://{metrics}/metrics, scraped from this host, for example:")
        say(metrics_lines(f"http://{metrics}/metrics"))
        linger(lab, f"http://{web}/")
    finally:
        run(["ip", "link", "del", f"{lab.net.prefix}-m"], check=False)  # gone with the namespace, unless half made
        lab.down()
        left = lab.net.leftovers()
        say(f"\nLab removed{'' if not left else ' EXCEPT ' + ', '.join(left)}.")


def metrics_lines(url: str) -> str:
    """A few of the metrics lvsd exports, scraped from this host's namespace as Prometheus would."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            lines = answer.read().decode().splitlines()
    except OSError as exc:
        return f"  not reachable from this host ({exc})"
    wanted = ("node_ipvs_connections_total ", "node_ipvs_backend_connections_inactive{", "pylvs_datapath_info{")
    return "\n".join(f"  {line}" for line in lines if line.startswith(wanted))


def main() -> int:
    try:
        demo()
    except KeyboardInterrupt:
        return 130
    except LabError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
