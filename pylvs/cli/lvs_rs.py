"""lvs-rs: set up (and check, and undo) a real server for LVS direct routing or tunneling.

    lvs-rs up --vip VIP [--vip ...] --method dr|tun [--tun-type ipip|gue|gre] [--tun-port N]
    lvs-rs down [--vip ...]
    lvs-rs check [--vip ... --method ...]
    lvs-rs decap --vip VIP --tun-type T [--tun-port N]   (the userspace decapsulator, foreground;
                                                          SIGUSR1 logs its counters)

Everything applies to the current network namespace (run it under `ip netns exec` for another).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pylvs.rs.host import DECAP_MODES, DEFAULT_DEV, METHODS, TUN_TYPES, Config, Host, NetError, SetupError


def _common(p: argparse.ArgumentParser, vip_required: bool) -> None:
    p.add_argument("--vip", action="append", default=[], required=vip_required, metavar="VIP",
                   help="virtual IP address (repeat for several)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where to keep what was changed (default /run/lvs-rs/net-<netns inode>)")


def _tunnel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default=None, help="dr (direct routing) or tun (tunneling)")
    p.add_argument("--tun-type", choices=TUN_TYPES, default="ipip", help="tunnel encapsulation (default ipip)")
    p.add_argument("--tun-port", type=int, default=0, metavar="N", help="UDP port of a GUE tunnel")
    p.add_argument("--dev", default=DEFAULT_DEV, help=f"TUN device of the userspace decapsulator ({DEFAULT_DEV})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvs-rs", description="Real-server side of LVS direct routing and tunneling")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="hold the VIP, quiet ARP about it, decapsulate tunnels")
    _common(up, True)
    _tunnel(up)
    up.add_argument("--decap", choices=DECAP_MODES, default="auto",
                    help="kernel tunnel device, userspace decapsulator, or the kernel's when it has one (auto)")
    down = sub.add_parser("down", help="undo what up did")
    _common(down, False)
    check = sub.add_parser("check", help="say what is missing")
    _common(check, False)
    _tunnel(check)
    decap = sub.add_parser("decap", help="run the userspace decapsulator in the foreground (SIGUSR1: log counters)")
    _common(decap, True)
    decap.add_argument("--tun-type", choices=TUN_TYPES, required=True)
    decap.add_argument("--tun-port", type=int, default=0)
    decap.add_argument("--dev", default=DEFAULT_DEV)
    decap.add_argument("--pidfile", help="written once the decapsulator is ready, removed when it stops")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def _config(args: argparse.Namespace, method: str | None) -> Config:
    return Config(vips=args.vip, method=method or "dr", tun_type=args.tun_type, tun_port=args.tun_port,
                  decap=getattr(args, "decap", "auto"), dev=args.dev)


def run_decap(args: argparse.Namespace) -> int:
    from pylvs.rs.decap import Decapsulator  # sockets and /dev/net/tun: only for this command

    if args.tun_type == "gue" and not args.tun_port:
        print("lvs-rs decap: a GUE tunnel needs --tun-port", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="lvs-rs decap: %(message)s")
    d = Decapsulator(args.tun_type, args.vip, args.dev, args.tun_port)
    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(args.pidfile + ".tmp", args.pidfile)
    logging.info("%s for %s on %s", args.tun_type, ", ".join(args.vip), d.dev)
    try:
        d.run()
    finally:
        d.close()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
        logging.info("stopped: %s", dict(d.counts))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "decap":
        return run_decap(args)
    host = Host(args.state_dir)
    try:
        if args.command == "up":
            if args.method is None:
                raise SetupError("--method dr|tun is needed")
            lines = host.up(_config(args, args.method))
        elif args.command == "down":
            lines = host.down(args.vip)
        else:
            cfg = _config(args, args.method) if args.vip else None
            problems = host.check(cfg)
            for line in problems:
                print(f"missing: {line}")
            if not problems:
                print("ok: this host is ready as a real server")
            return 1 if problems else 0
    except (SetupError, NetError, OSError) as exc:
        for line in host.log:
            print(line)
        print(f"lvs-rs {args.command}: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
