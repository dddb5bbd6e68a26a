"""pylvs-lab: build a lab in network namespaces with lvsd running, keep it until Ctrl-C, then remove it.

For trying lvsadm and traffic by hand (run as root). The lab has no services: add them with the lvsadm
command line it prints, send traffic from the client namespace, and press Ctrl-C to tear it all down.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from pylvs.lab.base import Lab
from pylvs.lab.netns import LabError
from pylvs.lab.topologies_dr_tun import DrLab, TunLab
from pylvs.lab.topology import VIP, NatLab

LABS = {"nat": NatLab, "dr": DrLab, "tun": TunLab}


def build(kind: str, n_rs: int) -> Lab:
    return TunLab() if kind == "tun" else LABS[kind](n_rs=n_rs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pylvs-lab", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=sorted(LABS), help="topology: NAT, direct routing or tunnelling")
    p.add_argument("--rs", type=int, default=2, metavar="N", help="real servers (nat, dr; default 2)")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lab = build(args.kind, args.rs)
    try:
        lab.up()
        lab.start_lvsd()
        director, client = lab.net.name("director"), lab.net.name("client")
        lvsadm = f"ip netns exec {director} {shlex.quote(sys.executable)} -m pylvs.cli.lvsadm --control {lab.control}"
        print(f"lab up: VIP {VIP}, real servers {', '.join(lab.rips)}\n"
              f"  lvsadm:  {lvsadm} -L -n\n"
              f"  client:  ip netns exec {client} curl http://{VIP}/\n"
              f"  lvsd log: {lab.net.tmp}/lvsd.log\n"
              "Ctrl-C removes the lab.", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    except LabError as exc:
        print(f"pylvs-lab: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
