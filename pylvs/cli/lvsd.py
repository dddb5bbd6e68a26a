"""lvsd: the pylvs director daemon (runs in the foreground, in the current network namespace)."""

from __future__ import annotations

import argparse
import logging
import sys

from pylvs import __version__
from pylvs.bgp.config import DEFAULT_HOLD_TIME, BgpConfigError, BgpSettings
from pylvs.bgp.config import settings as bgp_settings
from pylvs.control.client import DEFAULT_PATH
from pylvs.control.config_file import ConfigFileError
from pylvs.control.keepalived_runner import EXIT_CONFIG
from pylvs.datapath.bpf.libbpf import BpfError
from pylvs.engine.engine import Settings
from pylvs.keepalived import ConfigError as KeepalivedConfigError
from pylvs.sync.config import SyncSettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lvsd", description="pylvs director: IPVS-compatible layer-4 load balancer")
    p.add_argument("-i", "--interface", action="append", required=True, metavar="IF",
                   help="interface the director sends and receives on (repeat for each)")
    p.add_argument("--control", default=DEFAULT_PATH, metavar="PATH",
                   help=f"control socket: a file path, or @NAME for an abstract socket of this network namespace "
                        f"(default {DEFAULT_PATH})")
    p.add_argument("--config", metavar="FILE", help="load virtual services from an ipvsadm-save file at start")
    p.add_argument("--save-config", action="store_true",
                   help="write the service table back to --config FILE after every change")
    p.add_argument("--keepalived", metavar="FILE",
                   help="take virtual services and health checks from a keepalived.conf (SIGHUP reloads it)")
    p.add_argument("--config-id", metavar="ID", help="keepalived config id, for @ID conditional lines")
    p.add_argument("--no-steering", action="store_true",
                   help="do not install the nftables rules that keep the kernel off the director's traffic")
    p.add_argument("--datapath", choices=("auto", "bpf", "python"), default="auto",
                   help="established flows in the kernel (bpf: tc ingress program), or every packet in Python; "
                        "auto (default): bpf where it loads, else python with a log line saying why")
    p.add_argument("--keep-conns", metavar="FILE",
                   help="at a graceful stop (SIGTERM/SIGINT) write the connection table to FILE, and read it back "
                        "at the next start, so established connections survive a restart")
    p.add_argument("--ring", type=int, choices=(2, 3), default=2,
                   help="receive ring layout: TPACKET_V2 (default, no added latency) or TPACKET_V3 (block batching)")
    p.add_argument("--retire-ms", type=int, default=1, help="TPACKET_V3 block retire timeout (ms)")
    p.add_argument("--expire-nodest-conn", action="store_true", help="as the IPVS sysctl (default 0)")
    p.add_argument("--expire-quiescent-template", action="store_true", help="as the IPVS sysctl (default 0)")
    p.add_argument("--conn-reuse-mode", type=int, default=1, help="as the IPVS sysctl (default 1)")
    p.add_argument("--sloppy-tcp", action="store_true", help="as the IPVS sysctl (default 0)")
    for name in ("lblc", "lblcr"):
        p.add_argument(f"--{name}-expiration", type=int, default=86400, metavar="S",
                       help="as the IPVS sysctl (default 86400)")
    sync = p.add_argument_group("connection sync (lvsadm --start-daemon), as the IPVS sysctls")
    sync.add_argument("--sync-version", type=int, choices=(0, 1), default=1, help="message version sent (default 1)")
    sync.add_argument("--sync-threshold", type=int, nargs=2, default=(3, 50), metavar=("T", "P"),
                      help="sync a connection when its packet count %% P == T (default 3 50)")
    sync.add_argument("--backup-only", action="store_true",
                      help="while a backup sync daemon runs, leave the VIPs to the master (no ARP, no new connections)")
    bgp = p.add_argument_group("BGP: announce each VIP while it has a real server with weight > 0 (speaker: BIRD 2)")
    bgp.add_argument("--bgp-local-as", metavar="AS", help="this director's AS number; enables BGP")
    bgp.add_argument("--bgp-peer", action="append", default=[], metavar="ADDR:AS",
                     help="a BGP neighbour (the router) and its AS; repeat for each")
    bgp.add_argument("--bgp-router-id", metavar="ID", help="BGP identifier (default: the lowest interface address)")
    bgp.add_argument("--bgp-hold-time", type=int, default=DEFAULT_HOLD_TIME, metavar="S",
                     help=f"hold time offered to peers, keepalives every third of it (default {DEFAULT_HOLD_TIME})")
    bgp.add_argument("--bgp-next-hop", metavar="ADDR",
                     help="next hop announced for the VIPs (default: the director's address on each session)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"lvsd {__version__}")
    return p.parse_args(argv)


def bgp_options(args: argparse.Namespace) -> BgpSettings | None:
    if args.bgp_local_as is None:
        if args.bgp_peer or args.bgp_router_id or args.bgp_next_hop:
            raise BgpConfigError("the --bgp-* options need --bgp-local-as AS")
        return None
    return bgp_settings(args.bgp_local_as, args.bgp_peer, args.bgp_router_id, args.bgp_hold_time, args.bgp_next_hop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.save_config and not args.config:
        print("lvsd: --save-config needs --config FILE", file=sys.stderr)
        return 2
    threshold, period = args.sync_threshold
    if threshold < 0 or period < 0 or (period and threshold >= period):
        print("lvsd: --sync-threshold needs 0 <= T < P (or P = 0)", file=sys.stderr)
        return 2
    try:
        bgp = bgp_options(args)
    except BgpConfigError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="lvsd: %(levelname)s %(message)s")
    settings = Settings(expire_nodest_conn=args.expire_nodest_conn,
                        expire_quiescent_template=args.expire_quiescent_template,
                        conn_reuse_mode=args.conn_reuse_mode, sloppy_tcp=args.sloppy_tcp)
    from pylvs.bgp.speaker import SpeakerError
    from pylvs.io import steering
    from pylvs.io.control_socket import ControlSocketError, check_free
    from pylvs.io.director import Director  # imports pyroute2; keep --help fast and root-free
    from pylvs.sched import lblc

    if not args.no_steering and not steering.available():
        print(f"lvsd: {steering.MISSING}", file=sys.stderr)
        return 1
    try:
        check_free(args.control)  # before anything is set up: never disturb a running lvsd's rules
    except ControlSocketError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return 1

    lblc.settings.lblc_expiration = args.lblc_expiration
    lblc.settings.lblcr_expiration = args.lblcr_expiration

    try:
        director = Director(args.interface, args.control, steer=not args.no_steering,
                            settings=settings, retire_ms=args.retire_ms, ring=args.ring,
                            config=args.config, save_config=args.save_config, keepalived=args.keepalived,
                            config_id=args.config_id,
                            sync_settings=SyncSettings(args.sync_version, threshold, period, args.backup_only),
                            datapath=args.datapath, keep_conns=args.keep_conns, bgp=bgp)
    except PermissionError as exc:
        print(f"lvsd: {exc} (lvsd needs root or CAP_NET_RAW/CAP_NET_ADMIN)", file=sys.stderr)
        return 1
    except (OSError, ConfigFileError, ControlSocketError, steering.SteeringError, BpfError, SpeakerError) as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return 1
    except KeepalivedConfigError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        director.run()
    finally:
        director.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
