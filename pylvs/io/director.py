"""The director process: packet rings, kernel routes, steering and the control socket in one loop.

Single-threaded on purpose: control requests are applied between packet batches, which makes
every change atomic for the packet path without locks. After each round of the loop the director
pulls the engine's events: a ServicesChanged (coalesced, so once per batch of changes, however
large) reconciles steering, fwmark rings and gratuitous ARP; connection events go to the sync master
through its own subscription.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import selectors
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable

from pyroute2 import IPRoute

from pylvs.bgp.announce import healthy_vips
from pylvs.bgp.config import BgpSettings
from pylvs.bgp.speaker import Speaker, SpeakerError
from pylvs.control import api, config_file
from pylvs.control.keepalived_runner import KeepalivedRunner
from pylvs.datapath.bpf import adopt, flowsize, loader
from pylvs.datapath.bpf.ksched import KernelScheduler
from pylvs.datapath.bpf.libbpf import BpfError
from pylvs.datapath.bpf.loader import FastPath
from pylvs.datapath.bpf.offload import FlowOffload
from pylvs.engine.egress import Output
from pylvs.engine.engine import Engine, Interface, Settings
from pylvs.engine.events import ServicesChanged
from pylvs.engine.services import ConfigError
from pylvs.io import steering
from pylvs.io.afpacket import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, RingSocket
from pylvs.io.collector import Collector
from pylvs.io.control_socket import ControlServer, Streamed
from pylvs.io.kernel import KernelRoutes
from pylvs.io.sync_daemons import SyncDaemons
from pylvs.io.txring import TxRing
from pylvs.metrics import families as metrics_families
from pylvs.metrics import snapshot as metrics_snapshot
from pylvs.metrics.publisher import Publisher
from pylvs.packet.layout import ETH_TYPE
from pylvs.sync import snapshot
from pylvs.sync.config import SyncSettings
from pylvs.systemd.notify import Notifier
from pylvs.vrrp.director import VrrpDirector

log = logging.getLogger(__name__)

TICK = 1.0          # connection expiry and estimator cadence
PARKED_TICK = 0.05  # while frames wait for a neighbour
# The program wakes lvsd only once its event ring holds a batch (pylvs_fastpath.bpf.c event_wakeup):
# the ring is read at least this often (seconds) while the fast path runs, and before every round.
EVENT_POLL = 0.02
NEW_CONNS_PER_ROUND = 64  # of up to a ring's 256 frames per wakeup: the rest is left for established flows
COUNTING_OPS = ("list", "list-conns", "zero")  # requests that read or reset packet counters
SAVE_INTERVAL = 1.0  # --save-config writes at most once a second (a restore is one write, not one per line)
RECONCILE_INTERVAL = 0.25  # a large table's steering and ARP follow changes at most this often
RECONCILE_AT_ONCE = 200    # up to this many services, every change is reconciled (nft included) before the
                           # answer leaves; beyond, nft runs in the steering worker's thread
STEERING_CHECK = 5.0  # seconds between checks that nobody removed the nftables table
STATUS_INTERVAL = 5.0  # seconds between systemd STATUS= updates (only under systemd)
BGP_DRAIN = 0.5  # a stop with BGP: forward this long after withdrawing, while the routers move the flows away


def read_interface(ipr: IPRoute, name: str) -> Interface:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise SystemExit(f"lvsd: no such interface: {name}")
    link = ipr.get_links(found[0])[0]
    if not link["flags"] & 1:  # IFF_UP
        ipr.link("set", index=found[0], state="up")
    addrs = {socket.inet_aton(a.get("IFA_ADDRESS")) for a in ipr.get_addr(index=found[0], family=socket.AF_INET)}
    mac = bytes.fromhex(link.get("IFLA_ADDRESS").replace(":", ""))
    addrs6 = {socket.inet_pton(socket.AF_INET6, a.get("IFA_ADDRESS"))
              for a in ipr.get_addr(index=found[0], family=socket.AF_INET6) if a["scope"] == 0}  # global only
    return Interface(found[0], name, mac, addrs, link.get("IFLA_MTU") or 1500, addrs6)


def mem_available_pages() -> int | None:
    """The host's MemAvailable in pages, the memory-pressure defence's measure (None if unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    return None


class Director:
    def __init__(self, ifnames: list[str], control_path: str, steer: bool = True,
                 settings: Settings | None = None, retire_ms: int = 1, ring: int = 2,
                 config: str | None = None, save_config: bool = False, keepalived: str | None = None,
                 config_id: str | None = None, sync_settings: SyncSettings | None = None,
                 datapath: str = "auto", keep_conns: str | None = None, vrrp: bool = True,
                 bgp: BgpSettings | None = None, flush_flows: bool = False,
                 bpffs: str = loader.BPFFS, flow_entries: int = flowsize.DEFAULT_FLOW_ENTRIES) -> None:
        self.notify = Notifier.from_environment()  # systemd's Type=notify, when started by it
        self._reload_outcomes: deque[str] = deque()  # finished SIGHUP reloads, for READY=1
        self._next_status = 0.0
        self.selector = selectors.DefaultSelector()
        self.rings: dict[int, RingSocket] = {}
        self.tx: dict[int, object] = {}
        self.tx_rings: dict[tuple[int, int], TxRing] = {}  # (ifindex, ethertype): a round's frames leave together
        self.tx6: dict[int, object] = {}  # IPv6 frames leave through the IPv6 socket (its GSO types)
        self.errors = 0
        self.tx_errors = 0
        self.stopping = False
        self.steer = steer
        self._steering_installed = False  # never remove a table this process did not install
        self.steering: steering.Worker | None = None
        self._announced: set[bytes] = set()  # the addresses a gratuitous ARP went out for
        self._reconcile_pending = False
        self._last_reconcile = 0.0
        self._lost: set[str] = set()  # names of interfaces that disappeared
        self._next_steering_check = 0.0
        self.control: ControlServer | None = None
        self.routes: KernelRoutes | None = None
        self.config = config if save_config else None  # where to keep the table, if anywhere
        self._saved_generation = 0  # the table generation the file holds
        self._saved_at = 0.0
        self.keepalived: KeepalivedRunner | None = None
        self._queued: deque[list[dict]] = deque()  # requests from other threads (health checks)
        self._calls: deque[Callable[[], None]] = deque()  # work from other threads (VRRP transitions)
        self.vrrp: VrrpDirector | None = None
        self._reload_requested = False
        self.sync: SyncDaemons | None = None  # connection sync daemons (start-daemon)
        self.fast: FastPath | None = None  # the kernel fast path, when it runs
        self.offload: FlowOffload | None = None
        self.datapath = {"datapath": "python", "reason": ""}
        self.flush_flows = flush_flows  # a stop takes the fast path out instead of leaving it for the next lvsd
        self.bpffs = bpffs  # the BPF filesystem the flow map is pinned in
        self.flow_entries = flow_entries  # the flow map's size (lvsd --flow-entries)
        self.keep_conns = keep_conns  # where a graceful stop leaves the connection table for the next start
        self._running = False
        self._collector: Collector | None = None  # set by run()
        self.requests: Counter[tuple[str, str]] = Counter()  # control requests by (op, ok|error), for metrics
        self.bgp: Speaker | None = None  # announces the healthy VIPs to BGP peers (--bgp-local-as)
        self._drain_until: float | None = None  # stopping: withdrawn, still forwarding until then
        try:
            self._setup(ifnames, control_path, settings, retire_ms, ring)
            self._start_fast_path(datapath)
            self.sync = SyncDaemons(self.engine, self.selector, sync_settings)
            api.register_daemons(self.api, self.sync)
            if bgp is not None:
                self._start_bgp(bgp)
            if keepalived is not None:
                self.keepalived = KeepalivedRunner(keepalived, self.queue_requests, config_id)
                if vrrp and self.keepalived.config.vrrp_instances:
                    self.vrrp = VrrpDirector(self.keepalived.config, self.engine, self.sync, self.queue_call)
            if config is not None and (os.path.exists(config) or not save_config):
                count = config_file.load(self.engine, config)
                log.info("loaded %d rules from %s", count, config)
            self._saved_generation = self.engine.table.generation
            if keep_conns is not None:
                self._restore_conns(keep_conns)
        except BaseException:
            self.close()
            raise

    def _setup(self, ifnames: list[str], control_path: str, settings: Settings | None, retire_ms: int,
               ring_version: int) -> None:
        with IPRoute() as ipr:
            interfaces = [read_interface(ipr, name) for name in ifnames]
        self.routes = KernelRoutes({iface.ifindex: iface for iface in interfaces})
        self.engine = engine = Engine(self.routes, settings=settings)
        for iface in interfaces:
            engine.add_interface(iface)
        self.selector.register(self.routes.fileno(), selectors.EVENT_READ, self._netlink)
        self._ring_args = {"version": ring_version, "retire_ms": retire_ms}
        for iface in interfaces:
            self._open_interface_rings(iface)
        if self.steer:
            steering.install()
            self._steering_installed = True
            self.steering = steering.Worker()
        self.events = engine.subscribe()  # ServicesChanged only
        self.api = api.Control(engine)
        # a reload from lvsadm also reports to systemd: one SIGHUP may have arrived while it ran
        self.api.register("reload", lambda req: {"started": self._keepalived().reload(done=self._reloaded)})
        self.api.register("health", lambda req: self._keepalived().status())
        self.api.register("get-keepalived", lambda req: {"path": os.path.abspath(self._keepalived().path),
                                                         "config_id": self._keepalived().config_id})
        self.api.register("vrrp", lambda req: self._vrrp_status())
        self.api.register("get-datapath", lambda req: self._datapath_report())
        self.api.register("get-bgp", lambda req: self._bgp_status())
        self.api.register("rings", lambda req: {f"{r.ifname}/{self._ring_name(r)}": r.counters()
                                                for r in self.rings.values()})
        self.control = ControlServer(control_path, self._request, self.selector)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        self._setup_metrics()

    def _setup_metrics(self) -> None:
        """The metrics surface (pylvs.metrics): copied by this loop, read by the exporter, the status
        page (other threads, through the publisher) and `lvsadm --metrics` (the get-metrics op)."""
        self.metrics_sources = metrics_snapshot.Sources(
            self.engine,
            rings=lambda: [(r.ifname, self._ring_name(r), r.counters()) for r in self.rings.values()],
            datapath=self._datapath_status,
            sync=lambda: self.sync.list() if self.sync is not None else [],
            frame_errors=lambda: {"engine": self.errors, "send": self.tx_errors},
            requests=self.requests)
        self.metrics = Publisher(lambda: metrics_snapshot.build(self.metrics_sources), self._health_status, self._wake)
        self.api.register("get-metrics", lambda req: self._metrics_now())

    def _metrics_now(self) -> list[dict]:
        """get-metrics: a fresh copy, whole (the loop answers requests between rounds anyway)."""
        snap = dataclasses.replace(metrics_snapshot.take(self.metrics_sources), health=self.metrics.health_now())
        return metrics_families.to_json(metrics_families.families(snap))

    def _health_status(self) -> dict | None:
        """The health checks' state, from their thread (any thread but theirs may ask)."""
        runner = self.keepalived
        return runner.status() if runner is not None else None

    def _restore_conns(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("could not read the connection table in %s: %s", path, exc)
            return
        try:
            count = snapshot.load(self.engine, data, time.monotonic())
            log.info("restored %d connections from %s", count, path)
        except snapshot.SnapshotError as exc:
            log.warning("connection table in %s not used: %s", path, exc)
        os.unlink(path)  # used once: a later start must not revive these connections again

    def _save_conns(self, path: str) -> None:
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(snapshot.dump(self.engine))
            os.replace(tmp, path)
            log.info("connection table kept in %s for the next start", path)
        except OSError as exc:
            log.error("could not keep the connection table in %s: %s", path, exc)

    def _start_fast_path(self, mode: str) -> None:
        """--datapath auto|bpf|python: the kernel fast path executes established flows where it loads."""
        if mode == "python":
            self.datapath["reason"] = "--datapath python"
            log.info("data path: python (--datapath python)")
            self._remove_fast_path()
            return
        try:
            fast = FastPath(pin_root=self.bpffs, max_flows=self.flow_entries)
        except (BpfError, OSError) as exc:
            if mode == "bpf":
                raise BpfError(f"--datapath bpf: {exc}") from None
            self.datapath["reason"] = str(exc)
            log.warning("data path: python only; the kernel fast path did not load: %s", exc)
            self._remove_fast_path()
            return
        try:
            for ifindex in self.engine.interfaces:
                fast.attach(ifindex)  # replaces a previous lvsd's program: the pinned flows go on at once
        except BaseException:
            self._detach(fast)
            raise
        self.fast = fast
        if fast.mounted_bpffs:
            log.warning("fast path: mounted a BPF filesystem at %s for the pinned flows; if this /sys is lvsd's "
                        "own (ip netns exec), they end with lvsd: --bpffs DIR outside /sys keeps them across "
                        "restarts", self.bpffs)
        self.offload = FlowOffload(self.engine, fast.flows, busy=self._frames_waiting, capacity=fast.max_flows)
        if self.engine.settings.kernel_sched:
            try:
                self.offload.ksched = KernelScheduler(self.engine, fast)
            except BpfError as exc:  # a program built without it: every SYN goes to Python, as before
                log.warning("fast path: kernel scheduling is off: %s", exc)
        self.selector.register(fast.events.fileno(), selectors.EVENT_READ, self._kernel_events)
        self.datapath = {"datapath": "bpf", "reason": ""}
        names = ", ".join(iface.name for iface in self.engine.interfaces.values())
        log.info("data path: bpf (tc ingress on %s) for established flows, python for the rest", names)

    def _remove_fast_path(self) -> None:
        """What a previous lvsd with the fast path left (its filters, its pinned flows) goes: this one
        forwards in Python and would not know those flows."""
        try:
            removed = [i for i in self.engine.interfaces if loader.remove_filter(i)]
            if loader.unpin(self.bpffs) or removed:
                log.info("fast path: removed the program and flows a previous lvsd left in the kernel")
        except (BpfError, OSError) as exc:
            log.warning("fast path: could not remove what a previous lvsd left: %s", exc)

    def _adopt_flows(self) -> None:
        """The flows a previous lvsd left in the pinned map, bound to the table as it is at start."""
        self._kernel_events()
        found = adopt.adopt(self.engine, self.offload, self.fast.flows, time.monotonic())
        if found.conns or found.deleted:
            log.info("fast path: adopted %d connections a previous lvsd left in the kernel; deleted %d "
                     "flows that no virtual service or real server here takes", found.conns, found.deleted)

    def _kernel_events(self, fd: int = -1, events: int = 0) -> None:
        """The TCP state changes the fast path made, applied before any frame that followed them."""
        if self.offload is not None:
            self.offload.apply(self.fast.events.read())

    def _start_bgp(self, cfg: BgpSettings) -> None:
        router_id = cfg.router_id or min(
            (socket.inet_ntoa(a) for i in self.engine.interfaces.values() for a in i.addrs if len(a) == 4),
            key=socket.inet_aton, default=None)
        if router_id is None:
            raise SpeakerError("BGP needs a router id: give --bgp-router-id (no interface has an address)")
        self.bgp = Speaker(cfg, router_id)

    def _bgp_status(self) -> dict:
        if self.bgp is None:
            raise ConfigError("EOPNOTSUPP", "lvsd was not started with --bgp-local-as")
        return self.bgp.status()

    def _detach(self, fast: FastPath) -> None:
        for ifindex in self.engine.interfaces:
            try:
                fast.detach(ifindex)
            except BpfError as exc:
                log.warning("fast path: %s", exc)
        fast.close()

    def _datapath_status(self) -> dict:
        status = dict(self.datapath)
        if self.fast is not None and self.offload is not None:
            status["offloaded_conns"] = len(self.offload)
            status["tcp_state_mismatches"] = self.offload.mismatches  # kernel and engine disagreed: withdrawn
            status["retired_conns"] = self.offload.retired  # ended in the kernel, entries taken out there
            status["counters"] = self.fast.counters.read()
            status["flow_entries"] = self.fast.max_flows
            status["flow_map_bytes"] = flowsize.flow_map_bytes(self.fast.max_flows)
            if self.offload.ksched is not None:  # SYNs the program scheduled, and those it left to the engine
                status["kernel_sched"] = {**self.offload.ksched.counters.read(), "adopted": self.offload.adopted,
                                          "refused": self.offload.refused, "rerouted": self.offload.rerouted}
        return status

    def _datapath_report(self) -> dict:
        """lvsadm --datapath: the status, with the flow map's entries in use (a walk of the whole map,
        so for this command only, not for metrics)."""
        status = self._datapath_status()
        if self.fast is not None:
            status["flow_entries_used"] = len(self.fast.flows)
        return status

    # -- callbacks --------------------------------------------------------------------------

    def _request(self, request: dict) -> dict | Streamed:
        op = request.get("op") if isinstance(request, dict) else None
        answer = self._answer(op, request)
        ok = isinstance(answer, Streamed) or answer.get("ok")
        known = isinstance(op, str) and op in self.api.ops  # any other name counts as "unknown": bounded labels
        self.requests[(op if known else "unknown", "ok" if ok else "error")] += 1
        return answer

    def _answer(self, op: object, request: dict) -> dict | Streamed:
        if self.offload is not None:
            self._kernel_events()  # the kernel's changes not yet read (the ring wakes lvsd per batch)
        if self.offload is not None and op in COUNTING_OPS:
            self.offload.refresh_all()  # what the kernel forwarded is in the numbers, as in IPVS
        if op == "list-conns":  # possibly huge: built piece by piece between rounds of the loop
            return Streamed(b'{"ok":true,"result":{"conns":[', api.conns_json(self.engine, time.monotonic()),
                            b"]}}\n")
        answer = self.api.handle(request, time.monotonic())
        self._drain_events()  # steering and ARP follow before the answer leaves, as IPVS's table is live
        return answer

    def _keepalived(self) -> KeepalivedRunner:
        if self.keepalived is None:
            raise ConfigError("EOPNOTSUPP", "lvsd was not started with --keepalived")
        return self.keepalived

    def _vrrp_status(self) -> dict:
        if self.vrrp is None:
            raise ConfigError("EOPNOTSUPP", "lvsd runs no VRRP instance (--keepalived with vrrp_instance blocks)")
        return self.vrrp.status()

    def queue_requests(self, requests: list[dict]) -> None:
        """Thread-safe: requests from the health checks, applied in order by the packet loop."""
        self._queued.append(requests)
        self._wake()

    def queue_call(self, fn: Callable[[], None]) -> None:
        """Thread-safe: `fn` runs in the packet loop, in order (VRRP transitions)."""
        self._calls.append(fn)
        self._wake()

    def _apply_queued(self) -> None:
        while self._calls:
            self._calls.popleft()()
        while self._queued:
            for request in self._queued.popleft():
                answer = self.api.handle(request, time.monotonic())
                if not answer["ok"]:
                    log.warning("health-check change %s not applied: %s", request.get("op"), answer["error"])

    def _drain_events(self) -> None:
        """Act on what the engine reports: reconcile once for however many table changes there were.

        A large table is reconciled at most every RECONCILE_INTERVAL (its snapshot costs milliseconds),
        so a burst of changes such as a 10,000-line restore is reconciled a handful of times."""
        for event in self.events:
            if isinstance(event, ServicesChanged):
                self._reconcile_pending = True
        if self._reconcile_pending:
            now = time.monotonic()
            if len(self.engine.table) <= RECONCILE_AT_ONCE or now >= self._last_reconcile + RECONCILE_INTERVAL:
                self._reconcile_pending = False
                self._last_reconcile = now
                self._services_changed()
        if self.sync is not None:
            self.sync.drain()
        if self.offload is not None:
            self.offload.drain(time.monotonic())

    def _services_changed(self) -> None:
        self._sync_fwmark_rings()
        if self.steering is not None:
            sets = steering.elements(self.engine)
            self.steering.submit(sets)  # nft runs in the worker's thread
            if len(self.engine.table) <= RECONCILE_AT_ONCE:
                self.steering.wait_idle()  # a few ms: the kernel is off the new VIPs before anything else
        # Gratuitous ARP for the addresses the director has just taken (all of them after standing by).
        owned = set(self.engine.owned)
        new, self._announced = owned - self._announced, owned
        if new:
            self.send(self.engine.announce(new))
        if self.bgp is not None:
            self.bgp.want(healthy_vips(self.engine))  # BIRD is driven from its own thread

    def _open_interface_rings(self, iface: Interface) -> None:
        # IPv4 frames without a mark (the main ring, also used to send), and ARP.
        ring = self._open_ring(iface.name, ETH_P_IP, 0, **self._ring_args)
        self._open_ring(iface.name, ETH_P_ARP, None, slots=16)
        ring6 = self._open_ring(iface.name, ETH_P_IPV6, 0, allmulti=True, **self._ring_args)
        # Each family's frames of a round leave through a transmit ring of their own; a frame too long for a
        # slot (GSO) through its family's socket, whose protocol the kernel gives the frame.
        for family, rx, tx in ((ETH_P_IP, ring, self.tx), (ETH_P_IPV6, ring6, self.tx6)):
            tx[rx.ifindex] = rx.send
            try:
                self.tx_rings[rx.ifindex, family] = tx_ring = TxRing(iface.name, rx.send)
                tx[rx.ifindex] = tx_ring.queue
            except OSError as exc:
                log.warning("%s: no transmit ring (%s): each frame is sent on its own", iface.name, exc)

    # -- interfaces that go away and come back ------------------------------------------------

    def _interface_lost(self, ifname: str, reason: str) -> None:
        """Close the rings of an interface that is gone; the rest of the director goes on."""
        for fd, ring in list(self.rings.items()):
            if ring.ifname == ifname:
                self.selector.unregister(fd)
                self.tx.pop(ring.ifindex, None)
                for family in (ETH_P_IP, ETH_P_IPV6):
                    tx_ring = self.tx_rings.pop((ring.ifindex, family), None)
                    if tx_ring is not None:
                        tx_ring.close()
                self.tx6.pop(ring.ifindex, None)
                del self.rings[fd]
                try:
                    ring.close()
                except (BufferError, OSError):
                    pass
        self._lost.add(ifname)
        log.warning("interface %s is gone (%s): its rings are closed; they reopen when it returns", ifname, reason)

    def _look_for_lost_interfaces(self) -> None:
        """Reopen what an interface that returned (under the same name, any ifindex) needs."""
        for name in sorted(self._lost):
            try:
                socket.if_nametoindex(name)
                with IPRoute() as ipr:
                    iface = read_interface(ipr, name)
            except (OSError, SystemExit):
                continue
            old = next(i.ifindex for i in self.engine.interfaces.values() if i.name == name)
            self.routes.interfaces.pop(old, None)
            self.routes.interfaces[iface.ifindex] = iface
            self.routes.reload()
            self.engine.replace_interface(old, iface)
            if self.offload is not None:
                self.offload.reroute()  # recipes held the old interface's hops
                self.fast.attach(iface.ifindex)
            self._lost.discard(name)
            self._open_interface_rings(iface)
            self._sync_fwmark_rings()
            self.send(self.engine.announce())
            log.warning("interface %s is back (ifindex %d): rings reopened, forwarding resumes", name, iface.ifindex)

    def _open_ring(self, ifname: str, protocol: int, mark: int | None, **kw) -> RingSocket:
        ring = RingSocket(ifname, protocol=protocol, mark=mark, **kw)
        self.rings[ring.fileno()] = ring
        self.selector.register(ring.fileno(), selectors.EVENT_READ, self._receiver(ring, mark or 0))
        return ring

    def _sync_fwmark_rings(self) -> None:
        """One small ring per (interface, fwmark service): its BPF filter passes only that mark (an IPv6
        fwmark service's ring takes IPv6 frames)."""
        wanted = {(iface.name, svc.fwmark, ETH_P_IPV6 if len(svc.addr) == 16 else ETH_P_IP)
                  for iface in self.engine.interfaces.values()
                  for svc in self.engine.table if svc.fwmark and iface.name not in self._lost}
        have = {(r.ifname, r.mark, r.protocol): fd for fd, r in self.rings.items() if r.mark}
        for key in wanted - have.keys():
            self._open_ring(key[0], key[2], key[1], slots=64)
        for key in have.keys() - wanted:
            ring = self.rings.pop(have[key])
            self.selector.unregister(ring.fileno())
            ring.close()

    @staticmethod
    def _ring_name(ring: RingSocket) -> str:
        return metrics_snapshot.ring_name(ring.mark, ring.protocol == ETH_P_IPV6)

    def _frames_waiting(self, ifindex: int, key: bytes) -> bool:
        """A frame of the flow `key` waits for the engine on `ifindex` (FlowOffload's `busy`)."""
        return any(r.ifindex == ifindex and r.waiting(key) for r in self.rings.values())

    def _receiver(self, ring: RingSocket, mark: int):
        process = self.engine.process
        tx, tx6 = self.tx, self.tx6
        ifindex = ring.ifindex
        family = socket.AF_INET6 if ring.protocol == ETH_P_IPV6 else socket.AF_INET

        def handle(frame) -> None:
            try:
                out = process(frame, ifindex, clock[0], mark)
            except Exception:  # noqa: BLE001 - one bad frame must not stop the director
                self.errors += 1
                if self.errors <= 10:
                    log.exception("engine error on a frame from ifindex %d", ifindex)
                return
            for out_if, buf in out:
                try:
                    (tx6 if buf[ETH_TYPE] == 0x86 else tx)[out_if](buf)
                except (OSError, KeyError) as exc:
                    self.tx_errors += 1
                    if self.tx_errors <= 10:
                        log.warning("send on ifindex %d failed: %s", out_if, exc)

        clock = [0.0]

        def receive(fd: int, events: int) -> None:
            if fd not in self.rings:
                return  # closed earlier in this round (its interface went away)
            clock[0] = time.monotonic()  # one reading per wakeup, shared by the frames it drains
            self.engine.start_round(NEW_CONNS_PER_ROUND)
            if self.offload is not None:
                self._kernel_events()  # a frame punted after a kernel-made state change sees that change
            ring.drain(handle)
            if self.offload is not None:
                # Recipes go to the kernel once their ring is drained, and before the round's frames
                # leave: a SYN's answer then finds the recipes its connection got with the SYN.
                self.offload.drain(clock[0], ifindex, family)
            self.flush_tx()  # the round's frames leave back to back: a response and its FIN together
            if events:
                err = ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
                    self._interface_lost(ring.ifname, os.strerror(err))  # else the socket stays readable

        return receive

    def _netlink(self, fd: int, events: int) -> None:
        if self.routes is not None and self.routes.poll_events():
            if self.routes.moved:  # a neighbour's MAC changed: the kernel's copies of it are rewritten
                if self.offload is not None:
                    self._kernel_events()  # (from the engine's state with the kernel's changes applied)
                    self.offload.rehop(self.routes.moved)
                self.routes.moved.clear()
            self.send(self.engine.flush_parked(time.monotonic()))

    def _woken(self, fd: int, events: int) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        self._apply_queued()
        if self._reload_requested:
            self._reload_requested = False
            self._reload()
        while self._reload_outcomes:
            self._apply_queued()  # the reload's changes were queued before its outcome
            self.notify.ready(f"{self._reload_outcomes.popleft()}; {self._status_line()}")

    def _reload(self) -> None:
        """SIGHUP: systemd hears RELOADING=1 now and READY=1 once the new table is in place."""
        if self.keepalived is None:
            self.notify.reloading("SIGHUP")
            log.info("SIGHUP: nothing to re-read (lvsd was not started with --keepalived)")
            self.notify.ready(f"SIGHUP: nothing to re-read; {self._status_line()}")
            return
        self.notify.reloading(f"reloading {self.keepalived.path}")
        self.keepalived.reload(done=self._reloaded)  # False: one is running; its READY=1 follows

    def _reloaded(self, outcome: str) -> None:
        """From the reload's thread: READY=1 goes out from the loop, after the changes."""
        self._reload_outcomes.append(outcome)
        self._wake()

    def _status_line(self) -> str:
        """What `systemctl status lvsd` shows on its Status: line."""
        table = self.engine.table
        dests = sum(len(svc.dests) for svc in table)
        return (f"{len(table)} virtual services, {dests} real servers, {len(self.engine.conns)} connections; "
                f"data path {self.datapath['datapath']}")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the socket buffer is full: the loop is awake already

    def _sighup(self, *_args: object) -> None:
        self._reload_requested = True
        self._wake()

    def send(self, out: Output) -> None:
        for ifindex, buf in out:
            try:
                (self.tx6 if buf[ETH_TYPE] == 0x86 else self.tx)[ifindex](buf)
            except (OSError, KeyError):
                self.tx_errors += 1
        self.flush_tx()

    def flush_tx(self) -> None:
        for tx_ring in self.tx_rings.values():
            if tx_ring.pending:
                try:
                    tx_ring.flush()
                except OSError as exc:
                    self.tx_errors += 1
                    if self.tx_errors <= 10:
                        log.warning("send on %s failed: %s", tx_ring.ifname, exc)

    # -- loop -------------------------------------------------------------------------------

    def stop(self, *_args: object) -> None:
        if self.bgp is not None and self._drain_until is None:  # a second signal stops at once
            self.bgp.withdraw()
            self._drain_until = time.monotonic() + BGP_DRAIN
        else:
            self.stopping = True
        self._wake()

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        signal.signal(signal.SIGHUP, self._sighup)
        self._running = True
        self._drain_events()  # the table loaded at start: steering, rings and the first announcement
        if self.keepalived is not None:
            self.keepalived.start()  # its startup table arrives through queue_requests
            self._apply_queued()
            self._drain_events()
        if self.offload is not None:
            self._adopt_flows()  # once the table given at start (--config, --keepalived) is in place
        if self.vrrp is not None:
            self.vrrp.start()
        next_tick = next_event_poll = time.monotonic()
        self._collector = Collector(next_tick)
        log.info("lvsd running on %s, control socket %s", ", ".join(i.name for i in self.engine.interfaces.values()),
                 self.control.path if self.control else "-")
        self.notify.ready(f"forwarding on {', '.join(i.name for i in self.engine.interfaces.values())}: "
                          f"{self._status_line()}")
        while not self.stopping:
            deadline = min(next_tick, self._last_reconcile + RECONCILE_INTERVAL) if self._reconcile_pending \
                else next_tick
            if self.offload is not None:
                deadline = min(deadline, next_event_poll)
            if self._drain_until is not None:
                deadline = min(deadline, self._drain_until)
                self.stopping = time.monotonic() >= self._drain_until
            timeout = max(0.0, deadline - time.monotonic())
            for key, events in self.selector.select(timeout):
                key.data(key.fd, events)
            now = time.monotonic()
            if self.offload is not None and now >= next_event_poll:
                next_event_poll = now + EVENT_POLL
                self._kernel_events()
            self._drain_events()
            self.metrics.step(now)  # a piece of the metrics snapshot, while someone reads them
            if self.config and self.engine.table.generation != self._saved_generation \
                    and now - self._saved_at >= SAVE_INTERVAL:
                self._save_config()
            if now >= next_tick:
                if self.offload is not None:
                    self.offload.refresh(TICK)  # before expiry: kernel-forwarded packets keep connections
                self.send(self.engine.tick(now, mem_available_pages()))
                self.sync.tick(now)
                self._housekeeping(now)
                self._collector.tick(now)
                next_tick = now + (PARKED_TICK if self.engine.egress.parked else TICK)

    def _housekeeping(self, now: float) -> None:
        if self.notify.enabled and now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            self.notify.status(self._status_line())
        if self._lost:
            self._look_for_lost_interfaces()
        if self.control is not None:
            self.control.expire(now)  # idle clients, clients that do not read their answers
        for fd in list(self.rings):  # a reader out of step with its ring may get no wakeup at all
            self.selector.get_key(fd).data(fd, 0)
        if self.steer and now >= self._next_steering_check:
            self._next_steering_check = now + STEERING_CHECK
            try:
                if not steering.present():
                    log.warning("nftables table inet %s was removed or flushed; restoring it", steering.TABLE)
                    steering.restore(self.engine)
                    self.steering.submit(steering.elements(self.engine))  # after any older one still queued
            except steering.SteeringError as exc:
                log.error("%s", exc)

    def _save_config(self) -> None:
        self._saved_generation = self.engine.table.generation
        self._saved_at = time.monotonic()
        try:
            config_file.save(self.engine, self.config)
        except OSError as exc:
            log.error("could not save the configuration to %s: %s", self.config, exc)

    def close(self) -> None:
        if self._collector is not None:
            self._collector.close()
        self.notify.stopping("stopping: removing rules and programs")
        if self.bgp is not None:
            self.bgp.close()  # first: withdraw (if the drain did not), end the sessions, then stop forwarding
            self.bgp = None
        if self.config and getattr(self, "engine", None) is not None \
                and self.engine.table.generation != self._saved_generation:
            self._save_config()  # the last changes, still inside their second
        keep_flows = self.offload is not None and not self.flush_flows
        kept = len(self.offload) if keep_flows else 0
        if self.offload is not None:
            self._kernel_events()  # the kernel's last state changes and counts, into the table that is kept
            self.offload.refresh_all()
            self.offload.close(keep=keep_flows)
            self.offload = None
        if self.keep_conns is not None and self._running:
            self._save_conns(self.keep_conns)
        if self.fast is not None:
            self.selector.unregister(self.fast.events.fileno())
            if keep_flows:  # attached and pinned: the kernel forwards them until the next lvsd adopts them
                log.info("fast path: %d connections left in the kernel for the next lvsd (%s)",
                         kept, self.fast.pin_path)
                self.fast.close()
            else:
                self._detach(self.fast)
                if self.fast.pin_path:
                    loader.unpin(self.bpffs)
            self.fast = None
        if self.vrrp is not None:
            self.vrrp.close()  # a master steps down (priority 0) before the sync daemons go
            self.vrrp = None
        if self.sync is not None:
            self.sync.close()
            self.sync = None
        if self.keepalived is not None:
            self.keepalived.stop()
            self.keepalived = None
        if self.control is not None:
            self.control.close()
            self.control = None
        for ring in [*self.rings.values(), *self.tx_rings.values()]:
            try:
                ring.close()
            except (BufferError, OSError):
                pass
        self.rings.clear()
        self.tx_rings.clear()
        if self.routes is not None:
            self.routes.close()
            self.routes = None
        if self.steering is not None:
            self.steering.close()
            self.steering = None
        if self._steering_installed:
            steering.remove()
        self.selector.close()
        self.notify.close()


