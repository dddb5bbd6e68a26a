"""The pylvs demo: a NAT lab in network namespaces, load-balanced by lvsd, configured with lvsadm.

Run as root: `make demo` (or `python3 -m pylvs.lab.demo`). Everything it creates is removed at the
end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import re
import signal
import sys

from pylvs.lab.netns import LabError
from pylvs.lab.topology import CLIENT, DIP, VIP, NatLab


def say(text: str = "") -> None:
    print(text, flush=True)


def lvsadm(lab: NatLab, *args: str) -> str:
    say(f"# lvsadm {' '.join(args)}")
    out = lab.lvsadm(*args).stdout
    if out:
        say(out.rstrip("\n"))
    return out


def demo(requests: int = 6) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # SIGTERM tears down like Ctrl-C
    lab = NatLab(n_rs=3)
    say(f"Building the NAT lab (namespaces {lab.net.prefix}-*):")
    say(f"  client {CLIENT} -> VIP {VIP}:80 -> director (DIP {DIP}) -> real servers "
        f"{', '.join(f'{a}:{lab.rport}' for a in lab.rips)}")
    try:
        lab.up()
        lab.start_lvsd()
        say("lvsd is running in the director namespace (interfaces vip0, dip0).\n")
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
    finally:
        lab.down()
        left = lab.net.leftovers()
        say(f"\nLab removed{'' if not left else ' EXCEPT ' + ', '.join(left)}.")


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
