"""lvsd: the pylvs director daemon (runs in the foreground, in the current network namespace)."""

from __future__ import annotations

import argparse
import logging
import sys

from pylvs import __version__
from pylvs.bgp.config import DEFAULT_HOLD_TIME, BgpConfigError, BgpSettings
from pylvs.bgp.config import settings as bgp_settings
from pylvs.cli import configtest
from pylvs.control.client import DEFAULT_PATH
from pylvs.control.config_file import ConfigFileError
from pylvs.control.keepalived_runner import EXIT_CONFIG
from pylvs.datapath.bpf import flowsize
from pylvs.datapath.bpf.libbpf import BpfError
from pylvs.engine.engine import Settings
from pylvs.keepalived import ConfigError as KeepalivedConfigError
from pylvs.sync.config import SyncSettings
from pylvs.systemd import journal, units
from pylvs.systemd.units import UNITS


def listen_address(text: str) -> tuple[str, int]:
    from pylvs.metrics.address import parse_listen

    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def flow_entries(text: str) -> int:
    """--flow-entries N: what the kernel takes for the flow map, from a size still worth an LRU."""
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not flowsize.MIN_FLOW_ENTRIES <= n <= flowsize.MAX_FLOW_ENTRIES:
        raise argparse.ArgumentTypeError(f"{n} is out of range: from {flowsize.MIN_FLOW_ENTRIES} to "
                                         f"{flowsize.MAX_FLOW_ENTRIES} (the kernel's limit)")
    return n


def mem_total() -> int | None:
    """This machine's memory in bytes (/proc/meminfo), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def flow_map_fits(entries: int, memory: int | None) -> str | None:
    """Why a flow map of `entries` cannot be allocated on a machine of `memory` bytes (None: it can)."""
    need = flowsize.flow_map_bytes(entries)
    if memory is not None and need > memory:
        return (f"--flow-entries {entries} needs {need / 2**30:.1f} GiB of kernel memory, more than this "
                f"machine's {memory / 2**30:.1f} GiB")
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvsd", description="pylvs director: IPVS-compatible layer-4 load balancer")
    p.add_argument("-i", "--interface", action="append", metavar="IF",
                   help="interface the director sends and receives on (repeat for each; required to run)")
    p.add_argument("--control", default=DEFAULT_PATH, metavar="PATH",
                   help=f"control socket: a file path, or @NAME for an abstract socket of this network namespace "
                        f"(default {DEFAULT_PATH})")
    p.add_argument("--config", metavar="FILE", help="load virtual services from an ipvsadm-save file at start")
    p.add_argument("--save-config", action="store_true",
                   help="write the service table back to --config FILE after every change")
    p.add_argument("--keepalived", metavar="FILE",
                   help="take virtual services and health checks from a keepalived.conf (SIGHUP reloads it)")
    p.add_argument("--config-id", metavar="ID", help="keepalived config id, for @ID conditional lines")
    p.add_argument("--no-vrrp", action="store_true",
                   help="with --keepalived: do not run its vrrp_instance blocks (keepalived --check: checkers only)")
    p.add_argument("--no-steering", action="store_true",
                   help="do not install the nftables rules that keep the kernel off the director's traffic")
    p.add_argument("--datapath", choices=("auto", "bpf", "python"), default="auto",
                   help="established flows in the kernel (bpf: tc ingress program), or every packet in Python; "
                        "auto (default): bpf where it loads, else python with a log line saying why")
    p.add_argument("--no-kernel-sched", action="store_true",
                   help="with the bpf data path: leave every SYN to Python (by default the kernel schedules "
                        "new connections of mh, sh, dh, rr and wrr services itself)")
    p.add_argument("--flush-flows", action="store_true",
                   help="at stop, take the kernel fast path out (its tc filters and pinned flows): the connections "
                        "it carries end with lvsd, instead of going on until the next lvsd adopts them")
    fs = flowsize

    def mib(n: int) -> int:
        return fs.flow_map_bytes(n) >> 20

    p.add_argument("--flow-entries", type=flow_entries, default=fs.DEFAULT_FLOW_ENTRIES, metavar="N",
                   help=f"size of the fast path's flow map (default {fs.DEFAULT_FLOW_ENTRIES}, from "
                        f"{fs.MIN_FLOW_ENTRIES} to {fs.MAX_FLOW_ENTRIES}): a NAT or FULLNAT connection takes two "
                        f"entries, DR and TUN one; beyond, the least recently used flows go back to Python. The "
                        f"kernel allocates it whole at start, {mib(1 << 20)} bytes an entry "
                        f"({fs.DEFAULT_FLOW_ENTRIES}: {mib(fs.DEFAULT_FLOW_ENTRIES)} MiB, 1048576: {mib(1 << 20)} "
                        f"MiB). A map of another size that a previous lvsd pinned is kept, with its flows, until a "
                        f"stop with --flush-flows")
    p.add_argument("--bpffs", default="/sys/fs/bpf", metavar="DIR",
                   help="BPF filesystem holding the fast path's pinned flow map, mounted there if it is not "
                        "(default /sys/fs/bpf; under `ip netns exec`, which mounts a /sys of its own, give one "
                        "outside /sys for the flows to survive a restart)")
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
    p.add_argument("--sloppy-sctp", action="store_true", help="as the IPVS sysctl (default 0)")
    p.add_argument("--fullnat-toa", type=int, choices=(0, 1), default=1,
                   help="FULLNAT TCP sends the client's address as TOA unless a service has --proxy-protocol "
                        "(as Alibaba LVS's fullnat_toa_entry, default 1; over IPv4 the kernel fast path inserts it "
                        "into the client's first ACK)")
    defence = p.add_argument_group("memory-pressure defence, as the IPVS sysctls (docs/design.md)")
    defence.add_argument("--amemthresh", type=int, default=1024, metavar="PAGES",
                         help="available memory below which the automatic modes act (default 1024)")
    defence.add_argument("--am-droprate", type=int, default=10, metavar="N",
                         help="drop_packet mode 3 drops 1 of N new connections (default 10)")
    for name in ("drop-entry", "drop-packet", "secure-tcp"):
        defence.add_argument(f"--{name}", type=int, choices=(0, 1, 2, 3), default=0,
                             help="0 off, 1/2 automatic, 3 always (default 0)")
    defence.add_argument("--max-conns", type=int, default=0, metavar="N",
                         help="hard cap on connection entries; refusals counted as max_conns (default 0: none)")
    for name in ("lblc", "lblcr"):
        p.add_argument(f"--{name}-expiration", type=int, default=86400, metavar="S",
                       help="as the IPVS sysctl (default 86400)")
    sync = p.add_argument_group("connection sync (lvsadm --start-daemon), as the IPVS sysctls")
    sync.add_argument("--sync-version", type=int, choices=(0, 1), default=1, help="message version sent (default 1)")
    sync.add_argument("--sync-threshold", type=int, nargs=2, default=(3, 50), metavar=("T", "P"),
                      help="sync a connection when its packet count %% P == T (default 3 50)")
    sync.add_argument("--backup-only", action="store_true",
                      help="while a backup sync daemon runs, leave the VIPs to the master (no ARP, no new connections)")
    check = p.add_argument_group("configuration test (no root, no network)")
    check.add_argument("-t", "--config-test", action="store_true",
                       help="check --config and/or --keepalived FILE as keepalived -t does, print the table lvsd "
                            "would build (ipvsadm -S -n form) and exit: 0 ok, 5 configuration errors, 4 (or 1 for "
                            "--config) lvsd would not start")
    check.add_argument("-q", "--quiet", action="store_true", help="with --config-test: print only the problems")
    p.add_argument("--print-unit", choices=UNITS, metavar="UNIT",
                   help=f"print a systemd unit for this lvsd and exit ({', '.join(UNITS)})")
    observe = p.add_argument_group("observing lvsd (read-only HTTP, off by default)")
    observe.add_argument("--metrics", type=listen_address, metavar="ADDR:PORT",
                         help="serve Prometheus metrics on http://ADDR:PORT/metrics (node_exporter's IPVS names, "
                              "then pylvs_*); ADDR may be [IPv6], or empty for every address")
    observe.add_argument("--web", type=listen_address, metavar="ADDR:PORT",
                         help="serve the live status page on http://ADDR:PORT/")
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
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if not args.interface and not args.config_test and not args.print_unit:
        p.error("the following arguments are required: -i/--interface")
    return args


def bgp_options(args: argparse.Namespace) -> BgpSettings | None:
    if args.bgp_local_as is None:
        if args.bgp_peer or args.bgp_router_id or args.bgp_next_hop:
            raise BgpConfigError("the --bgp-* options need --bgp-local-as AS")
        return None
    return bgp_settings(args.bgp_local_as, args.bgp_peer, args.bgp_router_id, args.bgp_hold_time, args.bgp_next_hop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.config_test:
        return configtest.run(args)
    if args.print_unit:
        sys.stdout.write(units.render(args.print_unit))
        return 0
    if args.save_config and not args.config:
        print("lvsd: --save-config needs --config FILE", file=sys.stderr)
        return 2
    threshold, period = args.sync_threshold
    if min(args.amemthresh, args.am_droprate, args.max_conns) < 0:
        print("lvsd: --amemthresh, --am-droprate and --max-conns must not be negative", file=sys.stderr)
        return 2
    if threshold < 0 or period < 0 or (period and threshold >= period):
        print("lvsd: --sync-threshold needs 0 <= T < P (or P = 0)", file=sys.stderr)
        return 2
    too_big = flow_map_fits(args.flow_entries, mem_total()) if args.datapath != "python" else None
    if too_big:
        print(f"lvsd: {too_big}", file=sys.stderr)
        return 2
    try:
        bgp = bgp_options(args)
    except BgpConfigError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return 2
    journal.configure_logging("lvsd", logging.DEBUG if args.verbose else logging.INFO)
    settings = Settings(expire_nodest_conn=args.expire_nodest_conn,
                        expire_quiescent_template=args.expire_quiescent_template,
                        conn_reuse_mode=args.conn_reuse_mode, sloppy_tcp=args.sloppy_tcp,
                        sloppy_sctp=args.sloppy_sctp,
                        amemthresh=args.amemthresh, am_droprate=args.am_droprate, drop_entry=args.drop_entry,
                        drop_packet=args.drop_packet, secure_tcp=args.secure_tcp, max_conns=args.max_conns,
                        kernel_sched=not args.no_kernel_sched, fullnat_toa=bool(args.fullnat_toa))
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
                            datapath=args.datapath, keep_conns=args.keep_conns, vrrp=not args.no_vrrp, bgp=bgp,
                            flush_flows=args.flush_flows, bpffs=args.bpffs, flow_entries=args.flow_entries)
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
        observers = start_observers(director, args)
    except OSError as exc:
        director.close()
        print(f"lvsd: {exc}", file=sys.stderr)
        return 1
    try:
        director.run()
    finally:
        for observer in observers:
            observer.close()
        director.close()
    return 0


def start_observers(director, args: argparse.Namespace) -> list:
    """The HTTP listeners asked for (--metrics, --web), each in a thread of its own."""
    from pylvs.metrics.exporter import Exporter
    from pylvs.web.server import StatusPage

    observers: list = []
    for option, address, cls, path in (("--metrics", args.metrics, Exporter, "/metrics"),
                                       ("--web", args.web, StatusPage, "/")):
        if address is None:
            continue
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        try:
            observers.append(cls(director.metrics, *address))
        except OSError as exc:
            for observer in observers:
                observer.close()
            raise OSError(exc.errno, f"{option} {host}:{address[1]}: {exc.strerror or exc}") from None
        logging.getLogger("lvsd").info("%s: http://%s:%d%s", option, host, address[1], path)
    return observers


if __name__ == "__main__":
    sys.exit(main())
