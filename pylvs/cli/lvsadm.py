"""lvsadm: an ipvsadm 1.31 drop-in that talks to lvsd instead of the kernel.

Parsing and printing are ipvsadm's (pylvs.control.ipvsadm_args / ipvsadm_format); this module
only glues them to the control socket. Deliberate differences from ipvsadm:
  * the daemon is contacted only when needed, so -h, -v and command-line errors work without it;
  * -R applies line by line as ipvsadm does, but sends runs of lines as one `sequence` request;
    `-R --atomic` applies all lines or none (one `batch`), and its errors name the input line;
  * `--control PATH` (or $PYLVS_CONTROL) selects the socket;
  * `-v` prints `lvsadm v<version> (ipvsadm v1.31 compatible)`.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from pylvs import __version__
from pylvs.control import client as control_client
from pylvs.engine.drops import REASONS
from pylvs.ipvsadm import format as fmt
from pylvs.ipvsadm.args import Command, ParseError, parse_command
from pylvs.ipvsadm.rules import RuleError, rules_to_requests
from pylvs.ipvsadm.rules import tokens as rule_tokens
from pylvs.vrrp import status as vrrp_status

VERSION_LINE = f"lvsadm v{__version__} (ipvsadm v1.31 compatible)"

# ipvs_strerror(): per-operation messages first, then the generic ones [ipvs.md §1.4]
_OP_ERRORS = {
    ("add-service", "EEXIST"): "Service already exists",
    ("add-service", "ENOENT"): "Scheduler or persistence engine not found",
    ("edit-service", "ESRCH"): "No such service",
    ("edit-service", "ENOENT"): "Scheduler or persistence engine not found",
    ("del-service", "ESRCH"): "No such service",
    ("zero", "ESRCH"): "No such service",
    ("add-dest", "ESRCH"): "Service not defined",
    ("add-dest", "EEXIST"): "Destination already exists",
    ("edit-dest", "ESRCH"): "Service not defined",
    ("edit-dest", "ENOENT"): "No such destination",
    ("del-dest", "ESRCH"): "Service not defined",
    ("del-dest", "ENOENT"): "No such destination",
    ("start-daemon", "EEXIST"): "Daemon has already run",
    ("stop-daemon", "ESRCH"): "No daemon is running",
    ("list", "ESRCH"): "No such service",
}
_GENERIC_ERRORS = {
    "EPERM": "Permission denied (you must be root)",
    "EINVAL": "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    "ENOPROTOOPT": "Protocol not available",
    "ENOMEM": "Memory allocation problem",
    "EOPNOTSUPP": "Operation not supported with IPv6",
    "EAFNOSUPPORT": "Operation not supported with specified address family",
    "EMSGSIZE": "Module is wrong version",
}


class Transport(Protocol):
    def request(self, obj: dict[str, Any]) -> dict[str, Any]: ...


class _Exit(Exception):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


def error_text(op: str, answer: dict[str, Any]) -> str:
    """The line ipvsadm prints for a failed operation."""
    if answer.get("error"):
        return str(answer["error"])
    name = str(answer.get("errno", ""))
    if (op, name) in _OP_ERRORS:
        return _OP_ERRORS[(op, name)]
    if name in _GENERIC_ERRORS:
        return _GENERIC_ERRORS[name]
    code = getattr(errno_mod, name, None)
    return os.strerror(code) if isinstance(code, int) else (name or "Unknown error")


class _Session:
    """Connects to lvsd on first use; turns transport failures into exits."""

    def __init__(self, control: str | None, transport: Transport | None):
        self._control = control
        self._transport = transport

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self._transport is None:
            try:
                self._transport = control_client.Client(self._control)
            except control_client.ConnectFailed as err:
                message = f"Can't initialize ipvs: {err.reason}\nAre you sure that lvsd is running?"
                raise _Exit(2, message) from None
        try:
            return self._transport.request(obj)
        except control_client.ControlError as err:
            raise _Exit(1, str(err)) from None

    def result(self, obj: dict[str, Any], code: int) -> Any:
        """The answer's result, or exit with `code` and ipvsadm's message."""
        answer = self.request(obj)
        if not answer.get("ok"):
            raise _Exit(code, error_text(str(obj.get("op")), answer))
        return answer.get("result")

    def close(self) -> None:
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()


def usage(prog: str) -> str:
    from pylvs.sched import SCHEDULERS  # the daemon's registry; imported here, only -h needs it

    p = prog
    schedulers = "|".join(SCHEDULERS)
    return f"""{VERSION_LINE}
Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] \
[-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} --start-daemon {{master|backup}} [daemon-options]
  {p} --stop-daemon {{master|backup}}
  {p} -P|Q virtual-service -z local-address [-F ifname]
  {p} -G [virtual-service]
  {p} -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --add-laddr       -P        add a FULLNAT local address to a service
  --del-laddr       -Q        delete a FULLNAT local address from a service
  --get-laddr       -G        list FULLNAT local addresses
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --sctp-service    service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero

Options:
  --ipv6         -6                   fwmark entry uses IPv6
  --scheduler    -s scheduler         one of {schedulers},
                                      the default scheduler is wlc.
  --pe            engine              alternate persistence engine may be sip,
                                      not set by default.
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --fullnat                           full NAT (source and destination NAT)
  --proxy-protocol version            FULLNAT client address header: v1, v2 or disable
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is ipip.
  --tun-port      port                tunnel destination port
  --tun-nocsum                        tunnel encapsulation without checksum
  --tun-csum                          tunnel encapsulation with checksum
  --tun-remcsum                       tunnel encapsulation with remote checksum
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)
  --laddr        -z local-address     FULLNAT local address (with -P/-Q)
  --ifname       -F ifname            interface of the local address (with -P/-Q)
  --control         path              lvsd control socket (default ${control_client.ENV_VAR}
                                      or {control_client.DEFAULT_PATH})
Daemon Options:
  --syncid sid                        syncid for connection sync (default=0)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)
lvsadm extensions:
  --control PATH                      lvsd control socket (default $PYLVS_CONTROL or {control_client.DEFAULT_PATH})
  --json                              with -L/-S/-G: print the daemon's data as JSON instead of text
  --atomic                            with -R: apply all lines or none (lines numbered in errors)
  --reload                            test lvsd's keepalived.conf (as lvsd -t), re-read it if it passes
  --health                            health-check state of a keepalived-driven lvsd, as JSON
  --vrrp                              VRRP instances of a keepalived-driven lvsd: state, priority, master
  --datapath                          which data path forwards (bpf fast path or python) and its counters
  --drops                             frames lvsd dropped, by reason, and its receive rings' counters
  --doctor [-t|-u|-f service]         probe the DR and TUN real servers with real packets and say what is
                                      wrong (exit 1 if anything is, or could not be told)
  --synproxy     -j enable|disable    with -A/-E: lvsd answers the service's SYNs with SYN cookies (DPVS)
  --metrics                           lvsd's metrics in Prometheus's text format (with --json: as JSON)
  --bgp                               the VIPs lvsd announces over BGP and the state of its sessions
"""


def split_control(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Take lvsadm's own `--control PATH` out of an ipvsadm command line."""
    rest: list[str] = []
    control: str | None = None
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest.extend(argv[i:])
            break
        if token == "--control":
            if i + 1 >= len(argv):
                raise _Exit(255, "--control: missing argument")
            control = argv[i + 1]
            i += 2
            continue
        if token.startswith("--control="):
            control = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    return rest, control


# ---------------------------------------------------------------------------------------------
# commands


_JSON_QUERIES = {
    "all": {"op": "list"}, "save": {"op": "list"}, "conns": {"op": "list-conns"},
    "timeout": {"op": "get-timeout"}, "daemon": {"op": "get-daemon"}, "laddr": {"op": "get-laddr"},
}


def _json_listing(cmd: Command, session: _Session) -> str:
    """`--json` (an lvsadm extension): the daemon's own answer, for tools, instead of ipvsadm's text."""
    request = dict(_JSON_QUERIES.get(cmd.listing or "", {"op": "list"}))
    if cmd.svc is not None and request["op"] in ("list", "get-laddr"):
        request["svc"] = cmd.svc
    return json.dumps(session.result(request, 1), indent=2, sort_keys=True) + "\n"


def _listing(cmd: Command, session: _Session) -> str:
    kind, f = cmd.listing, cmd.fmt
    if kind == "all":
        info = session.result({"op": "get-info"}, 1) or {}
        services = (session.result({"op": "list"}, 1) or {}).get("services", [])
        return fmt.format_services(services, f, info)
    if kind == "save":
        services = (session.result({"op": "list"}, 1) or {}).get("services", [])
        return fmt.format_services(services, f)
    if kind == "service":
        services = (session.result({"op": "list", "svc": cmd.svc}, 1) or {}).get("services", [])
        if not services:
            raise _Exit(1, _OP_ERRORS[("list", "ESRCH")])
        return fmt.format_single_service(services[0], f)
    if kind == "conns":
        return fmt.format_conns((session.result({"op": "list-conns"}, 1) or {}).get("conns", []), f)
    if kind == "timeout":
        return fmt.format_timeout(session.result({"op": "get-timeout"}, 1) or {})
    if kind == "daemon":
        return fmt.format_daemons((session.result({"op": "get-daemon"}, 1) or {}).get("daemons", []))
    request: dict[str, Any] = {"op": "get-laddr"}
    if cmd.svc is not None:
        request["svc"] = cmd.svc
    return fmt.format_laddrs((session.result(request, 1) or {}).get("services", []))


RESTORE_RUN = 64  # ops per `sequence` request: a few ms of the packet loop each, so forwarding never waits long


class _Restore:
    """`-R` as ipvsadm's restore_table: line by line, in order. A refused change prints ipvsadm's
    message and the next line runs; fail() and tryhelp_exit() errors stop, keeping what was applied;
    `-L`/`-S` lines list. The exit status is the last line's. Consecutive changes go to lvsd as one
    `sequence` request (applied in order, one answer each), so a long file costs few requests."""

    def __init__(self, session: _Session, stdout: TextIO, stderr: TextIO, prog: str) -> None:
        self.session, self.stdout, self.stderr, self.prog = session, stdout, stderr, prog
        self.pending: list[dict[str, Any] | str] = []  # a request, or a message a line already got
        self.status = 0

    def run(self, stdin: TextIO) -> int:
        try:
            for line in stdin:
                argv = rule_tokens(line)
                if argv:  # ipvsadm hands an empty line to no one
                    self._line(argv)
        finally:  # also before a fatal error leaves: the lines before it are applied
            self._flush()
        return self.status

    def _line(self, argv: list[str]) -> None:
        try:
            cmd = parse_command(argv, self.prog, reading_stdin=True)
        except ParseError as err:
            if err.fatal:
                self._flush()
                raise _Exit(err.code, err.message) from None
            self.pending.append(err.message)
            return
        if cmd.name in ("help", "version"):  # usage_exit(0) / version_exit(0) end the restore
            self._flush()
            self.stdout.write(usage(self.prog) if cmd.name == "help" else VERSION_LINE + "\n")
            raise _Exit(0)
        if cmd.listing is not None:
            self._flush()
            self.stdout.write(_listing(cmd, self.session))
            self.status = 0
            return
        self.pending.extend(cmd.requests)
        if len(self.pending) >= RESTORE_RUN:
            self._flush()

    def _flush(self) -> None:
        pending, self.pending = self.pending, []
        ops = [item for item in pending if isinstance(item, dict)]
        results = self.session.result({"op": "sequence", "ops": ops}, 255) if ops else []
        if not isinstance(results, list) or len(results) != len(ops):
            raise _Exit(1, "lvsd did not answer the sequence op by op")
        answers = iter(results)
        for item in pending:
            message = item if isinstance(item, str) else None
            if isinstance(item, dict):
                answer = next(answers)
                message = None if answer.get("ok") else error_text(str(item.get("op")), answer)
            if message is not None:
                self.stderr.write(message + "\n")
            self.status = 0 if message is None else 255


def _restore_atomic(session: _Session, stdin: TextIO, prog: str) -> None:
    """-R --atomic: every line is parsed first; then one batch, so the rules apply all together or not at all."""
    try:
        ops, op_lines = rules_to_requests(stdin, prog)
    except RuleError as err:
        raise _Exit(err.code, str(err)) from None
    answer = session.request({"op": "batch", "ops": ops})
    if answer.get("ok"):
        return
    index = answer.get("line")
    failed = ops[index] if isinstance(index, int) and 0 <= index < len(ops) else {}
    where = f"line {op_lines[index]}: " if failed else ""
    raise _Exit(255, where + error_text(str(failed.get("op", "batch")), answer))


def check_before_reload(session: _Session, stderr: TextIO, prog: str) -> None:
    """`--reload` tests lvsd's keepalived.conf as `lvsd -t` does and refuses a file that fails."""
    from pylvs.cli import configtest  # the keepalived parser: only --reload needs it

    where = session.result({"op": "get-keepalived"}, 255)
    verdict = configtest.check(keepalived_conf=where["path"], config_id=where.get("config_id"))
    for message in verdict.messages:
        stderr.write(message + "\n")
    if not verdict.ok:
        raise _Exit(verdict.code, f"{prog}: {where['path']}: test failed, not reloaded "
                                  f"(lvsd keeps its running configuration)")


def drops_text(drops: dict[str, int], rings: dict[str, dict[str, int]]) -> str:
    lines = ["Dropped frames by reason:"]
    lines += [f"  {reason:<22} {count:>12}  {REASONS.get(reason, '')}" for reason, count in sorted(drops.items())]
    if not drops:
        lines.append("  none")
    lines.append("Receive rings (interface/ring): packets, drops (ring full), truncated, resyncs:")
    lines += [f"  {name:<22} {c.get('packets', 0):>12} {c.get('drops', 0):>8} {c.get('truncated', 0):>8} "
              f"{c.get('resyncs', 0):>8}" for name, c in sorted(rings.items())]
    return "\n".join(lines) + "\n"


def metrics_text(result: list) -> str:
    from pylvs.metrics.exporter import text  # prometheus_client: only for this option
    from pylvs.metrics.families import from_json

    return text(from_json(result))


def datapath_text(status: dict) -> str:
    if status["datapath"] != "bpf":
        return f"data path: python ({status.get('reason') or 'the fast path is not in use'})\n"
    counters = status.get("counters", {})
    lines = [f"data path: bpf fast path for established flows, python for the rest; "
             f"{status.get('offloaded_conns', 0)} connections in the kernel"]
    if "flow_entries" in status:  # lvsd --flow-entries; a NAT or FULLNAT connection takes two entries
        used = status.get("flow_entries_used")
        lines.append(f"flow map: {status['flow_entries']} entries ({status['flow_map_bytes'] >> 10} KiB of kernel "
                     f"memory), {'?' if used is None else used} in use")
    lines += [f"  {name:<20} {value}" for name, value in counters.items()]
    if "retired_conns" in status:  # lvsd's side: what the program's reports did
        lines.append(f"connections ended in the kernel (entries retired there): {status['retired_conns']}; "
                     f"kernel and engine states disagreed (withdrawn): {status.get('tcp_state_mismatches', 0)}")
    if "kernel_sched" in status:  # SYNs scheduled by the program (lvsd --no-kernel-sched)
        lines.append("kernel scheduling of new connections (mh, sh, dh, rr, wrr): on")
        lines += [f"  {name:<20} {value}" for name, value in status["kernel_sched"].items()]
    return "\n".join(lines) + "\n"


def _doctor(selection: list[str], session: _Session, as_json: bool, stdout: TextIO, prog: str) -> int:
    from pylvs.doctor import report, run  # the prober's dependencies only when asked for

    request: dict[str, Any] = {"op": "list"}
    if selection:
        try:
            cmd = parse_command(["-L", *selection], prog)  # ipvsadm's own -t/-u/-f parsing and messages
        except ParseError as err:
            raise _Exit(err.code, err.message) from None
        if cmd.svc is None:
            raise _Exit(2, "--doctor takes one service: -t|-u VIP:PORT or -f MARK")
        request["svc"] = cmd.svc
    services = (session.result(request, 1) or {}).get("services", [])
    if selection and not services:
        raise _Exit(1, _OP_ERRORS[("list", "ESRCH")])
    reports = run.probe_all(run.targets(services))
    stdout.write(report.as_json(reports) if as_json else report.text(reports))
    return report.exit_code(reports)


def bgp_text(status: dict) -> str:
    get = status.get  # an older or other lvsd may leave fields out: print what there is
    lines = [f"BGP speaker: BIRD pid {get('pid') or '-'} (restarts {get('restarts', 0)}), "
             f"local AS {get('local_as', '-')}, router id {get('router_id', '-')}, "
             f"hold time {get('hold_time', '-')} s, next hop {get('next_hop', '-')}",
             "Announced: " + (", ".join(f"{vip}/32" for vip in get("announced", [])) or "none")]
    if get("wanted", []) != get("announced", []):
        lines.append("Pending:   " + (", ".join(f"{vip}/32" for vip in get("wanted", [])) or "none"))
    lines.append(f"{'Peer':<16} {'AS':>10}  {'State':<12} {'Since':<13} Routes out")
    lines += [f"{p.get('address', '-'):<16} {p.get('as', '-'):>10}  {p.get('state', '-'):<12} "
              f"{p.get('since', '-'):<13} {p.get('exported', '-')}" for p in get("peers", [])]
    return "\n".join(lines) + "\n"


def run(
    argv: Sequence[str],
    *,
    prog: str = "lvsadm",
    transport: Transport | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one lvsadm invocation; `transport` replaces the control socket (tests)."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    session: _Session | None = None
    try:
        args, control = split_control(argv)
        as_json, atomic = "--json" in args, "--atomic" in args
        args = [a for a in args if a not in ("--json", "--atomic")]
        if args in (["--reload"], ["--health"]):  # lvsadm extensions for a keepalived-driven lvsd
            session = _Session(control, transport)
            if args == ["--reload"]:
                check_before_reload(session, stderr, prog)
            result = session.result({"op": args[0][2:]}, 255)
            if args[0] == "--health":
                stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
            return 0
        if args == ["--drops"]:  # pylvs extension: not part of ipvsadm's outputs
            session = _Session(control, transport)
            drops, rings = session.result({"op": "get-drops"}, 255), session.result({"op": "rings"}, 255)
            stdout.write(json.dumps({"drops": drops, "rings": rings}, sort_keys=True) + "\n" if as_json
                         else drops_text(drops, rings))
            return 0
        if args == ["--metrics"]:  # pylvs extension: what `lvsd --metrics` serves, through the control socket
            session = _Session(control, transport)
            result = session.result({"op": "get-metrics"}, 255)
            stdout.write(json.dumps(result, sort_keys=True) + "\n" if as_json else metrics_text(result))
            return 0
        if args == ["--vrrp"]:  # pylvs extension: keepalived's vrrp_instance state in lvsd
            session = _Session(control, transport)
            result = session.result({"op": "vrrp"}, 255)
            stdout.write(json.dumps(result, sort_keys=True) + "\n" if as_json else vrrp_status.text(result))
            return 0
        if args == ["--datapath"]:  # pylvs extension: not part of ipvsadm's outputs
            session = _Session(control, transport)
            result = session.result({"op": "get-datapath"}, 255)
            stdout.write(json.dumps(result, sort_keys=True) + "\n" if as_json else datapath_text(result))
            return 0
        if args[:1] == ["--doctor"]:  # pylvs extension: probes DR and TUN real servers
            session = _Session(control, transport)
            return _doctor(args[1:], session, as_json, stdout, prog)
        if args == ["--bgp"]:  # pylvs extension: not part of ipvsadm's outputs
            session = _Session(control, transport)
            result = session.result({"op": "get-bgp"}, 255)
            stdout.write(json.dumps(result, sort_keys=True) + "\n" if as_json else bgp_text(result))
            return 0
        try:
            # no arguments at all lists the table, names resolved (ipvsadm's list_all(FMT_NONE))
            cmd = parse_command(args or ["-L"], prog)
        except ParseError as err:
            raise _Exit(err.code, err.message) from None
        if cmd.name == "help":
            stdout.write(usage(prog))
            return 0
        if cmd.name == "version":
            stdout.write(VERSION_LINE + "\n")
            return 0
        if atomic and cmd.name != "restore":
            raise _Exit(2, f"Illegal '--atomic' option with the '{cmd.name}' command")
        session = _Session(control, transport)
        if cmd.name == "restore" and atomic:
            _restore_atomic(session, stdin, prog)
        elif cmd.name == "restore":
            return _Restore(session, stdout, stderr, prog).run(stdin)
        elif cmd.listing is not None:
            stdout.write(_json_listing(cmd, session) if as_json else _listing(cmd, session))
        else:
            for request in cmd.requests:
                session.result(request, 255)
        return 0
    except _Exit as done:
        if done.message:
            stderr.write(done.message + "\n")
        return done.code
    finally:
        if session is not None:
            session.close()


def program_name(argv0: str) -> str:
    """The program as the user typed it, for `Try ... -h'. A script's interpreter gets the path the
    shell found, not argv[0]: a path that is what PATH finds for its name was typed as the name;
    `python -m pylvs.cli.lvsadm` is lvsadm."""
    if os.path.abspath(argv0) == os.path.abspath(__file__):
        return "lvsadm"
    name = os.path.basename(argv0)
    found = shutil.which(name) if os.path.isabs(argv0) else None
    return name if found and os.path.realpath(found) == os.path.realpath(argv0) else argv0


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        prog, args = program_name(sys.argv[0]), sys.argv[1:]
    else:
        prog, args = "lvsadm", list(argv)
    try:
        return run(args, prog=prog)
    except BrokenPipeError:  # `lvsadm -Ln | head`
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
