"""Load the fast path program, pin its flow map per network namespace, attach it to tc ingress.

    fast = FastPath()                  # loads build/bpf/pylvs_fastpath.bpf.o (make bpf)
    fast.attach(ifindex)               # clsact + direct-action filter on the interface's ingress
    fast.flows.put(entry)              # FlowEntry recipes in (pylvs.engine.flow)
    fast.flows.refresh(entry)          # what the kernel counted for it
    fast.counters.read()               # hits, misses, punts by reason
    fast.events.read()                 # TCP state changes the program made (pollable: fast.events.fileno())
    fast.detach(ifindex); fast.close()

The flow map is pinned at /sys/fs/bpf/pylvs/netns-<inode of the network namespace>/flows, so a
restarted lvsd in the same namespace gets the same map and the established flows in it
(docs/design.md, "Kernel fast path"), when /sys/fs/bpf outlives the process: the host's, mounted by
systemd. `ip netns exec` gives every process a /sys of its own, where the loader mounts a BPF
filesystem (`mounted_bpffs`) whose pins end with the process; a BPF filesystem outside /sys (lvsd
--bpffs) keeps them there too.
The flow map holds `max_flows` entries (lvsd --flow-entries, pylvs.datapath.bpf.flowsize).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import pathlib
import threading
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from pylvs.datapath.bpf.events import EventRing
from pylvs.datapath.bpf.flowsize import DEFAULT_FLOW_ENTRIES, flow_map_bytes
from pylvs.datapath.bpf.libbpf import (
    BPF_TC_F_REPLACE,
    BPF_TC_INGRESS,
    BpfError,
    Libbpf,
    MapInfo,
    TcHook,
    TcOpts,
    TestRunOpts,
    libbpf,
)
from pylvs.datapath.bpf.maps import Counters, FlowMap
from pylvs.engine import tcpstate

OBJECT = pathlib.Path(__file__).resolve().parents[3] / "build" / "bpf" / "pylvs_fastpath.bpf.o"
PROGRAM = b"pylvs_fastpath"
FLOW_MAP = b"pylvs_flows"
COUNTER_MAP = b"pylvs_counters"
TCP_TABLE_MAP = b"pylvs_tcp_table"
EVENT_MAP = b"pylvs_events"
# The loop drains it before every ring of frames; a short connection the program schedules costs about
# 400 bytes of records (CREATED, three changes, its retirement): 4 MB hold two seconds of 5,000 a second.
EVENT_RING_BYTES = 1 << 22
BPFFS = "/sys/fs/bpf"
BPFFS_MAGIC = 0xCAFE4A11
FILTER_HANDLE = 0x1F10  # our tc filter: fixed, so a restarted lvsd replaces or removes its own
FILTER_PRIORITY = 1
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
log = logging.getLogger(__name__)


def pinned_entries(path: str) -> int | None:
    """The size (max_entries) of the map pinned at `path`, or None if none is."""
    lib = libbpf()
    fd = lib.bpf_obj_get(os.fsencode(path))
    if fd == -errno.ENOENT:
        return None
    lib.check(fd, f"opening the pinned flow map {path}")
    try:
        info = MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        lib.check(lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
                  f"reading the pinned flow map {path}")
        return info.max_entries
    finally:
        os.close(fd)


def netns_inode(netns: str | None = None) -> int:
    """The inode that names a network namespace (a path such as /run/netns/NAME, or ours)."""
    return os.stat(netns or "/proc/thread-self/ns/net").st_ino


def pin_dir(root: str = BPFFS, netns: str | None = None) -> str:
    return os.path.join(root, "pylvs", f"netns-{netns_inode(netns)}")


def unpin(root: str = BPFFS, netns: str | None = None) -> bool:
    """Remove the pinned maps of a network namespace (its flows end with their program); False if none."""
    if not is_bpffs(root):
        return False
    directory = pin_dir(root, netns)
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)
    return True


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def is_bpffs(path: str) -> bool:
    st = _Statfs()
    if _libc().statfs(os.fsencode(path), ctypes.byref(st)) != 0:
        return False
    return (st.f_type & 0xFFFFFFFF) == BPFFS_MAGIC


def ensure_bpffs(root: str = BPFFS) -> bool:
    """Mount the BPF filesystem at `root` unless it is there already (as systemd and Cilium do);
    whether it was mounted here."""
    if is_bpffs(root):
        return False
    os.makedirs(root, exist_ok=True)
    if _libc().mount(b"bpf", os.fsencode(root), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise BpfError(f"cannot mount the BPF filesystem at {root}: {os.strerror(err)} "
                       "(lvsd needs root, or mount it: mount -t bpf bpf /sys/fs/bpf)")
    return True


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """fn() with the calling thread in network namespace `netns` (a path), or here when None.

    Network namespaces are per thread: a helper thread enters it, so the caller's stays as it was."""
    if netns is None:
        return fn()
    result: list = []

    def enter_and_run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc().setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise BpfError(f"cannot enter network namespace {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append((True, fn()))
        except BaseException as e:  # handed to the caller's thread
            result.append((False, e))

    t = threading.Thread(target=enter_and_run, name="pylvs-netns")
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def remove_filter(ifindex: int, netns: str | None = None) -> bool:
    """Remove our filter (this or an earlier lvsd's) from `ifindex`; False if it was not there."""
    lib = libbpf()

    def remove() -> bool:
        hook = TcHook(ctypes.sizeof(TcHook), ifindex, BPF_TC_INGRESS, 0)
        opts = TcOpts(ctypes.sizeof(TcOpts), 0, 0, 0, FILTER_HANDLE, FILTER_PRIORITY)
        rc = lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
        if rc in (-errno.ENOENT, -errno.EINVAL, -errno.ENODEV):
            return False
        lib.check(rc, f"detaching the fast path from interface {ifindex}")
        return True
    return in_netns(netns, remove)


class TestRun(NamedTuple):
    verdict: int  # TC_ACT_OK (0): passed on; TC_ACT_REDIRECT (7): sent to the recipe's ifindex
    frame: bytes
    duration_ns: int


class FastPath:
    """One loaded instance of the program with its maps (flow map pinned unless pin_root is None)."""

    def __init__(self, obj_path: str | os.PathLike = OBJECT, pin_root: str | None = BPFFS,
                 netns: str | None = None, max_flows: int = DEFAULT_FLOW_ENTRIES,
                 event_bytes: int = EVENT_RING_BYTES) -> None:
        if not os.path.exists(obj_path):
            raise BpfError(f"the fast path program {obj_path} is not built: run `make bpf` "
                           "(it needs clang, llvm and libbpf-dev)")
        self.lib: Libbpf = libbpf()
        self.netns = netns
        lib = self.lib
        self._obj = lib.pointer(lib.bpf_object__open_file(os.fsencode(obj_path), None), f"opening {obj_path}")
        try:
            flows = lib.pointer(lib.bpf_object__find_map_by_name(self._obj, FLOW_MAP), "finding the flow map")
            counters = lib.pointer(lib.bpf_object__find_map_by_name(self._obj, COUNTER_MAP), "finding counters")
            table = lib.pointer(lib.bpf_object__find_map_by_name(self._obj, TCP_TABLE_MAP), "finding the TCP table")
            events = lib.pointer(lib.bpf_object__find_map_by_name(self._obj, EVENT_MAP), "finding the event ring")
            lib.check(lib.bpf_map__set_max_entries(events, event_bytes), "sizing the event ring")
            self.pin_path = None
            self.mounted_bpffs = False  # the BPF filesystem was mounted for this load
            if pin_root is not None:
                self.mounted_bpffs = ensure_bpffs(pin_root)
                directory = pin_dir(pin_root, netns)
                os.makedirs(directory, exist_ok=True)
                self.pin_path = os.path.join(directory, "flows")
                lib.check(lib.bpf_map__set_pin_path(flows, os.fsencode(self.pin_path)), "setting the pin path")
            self.max_flows = self._flow_entries(max_flows)
            lib.check(lib.bpf_map__set_max_entries(flows, self.max_flows), "sizing the flow map")
            del lib.log[:]
            rc = lib.bpf_object__load(self._obj)
            if rc < 0:
                raise BpfError(self._load_failure(-rc))
            prog = lib.pointer(lib.bpf_object__find_program_by_name(self._obj, PROGRAM), "finding the program")
            self.prog_fd = lib.bpf_program__fd(prog)
            self.flows = FlowMap(lib, lib.bpf_map__fd(flows))
            self.counters = Counters(lib, lib.bpf_map__fd(counters))
            self._load_tcp_table(lib.bpf_map__fd(table))
            self.events = EventRing(lib, lib.bpf_map__fd(events), lib.bpf_map__max_entries(events))
        except BaseException:
            lib.bpf_object__close(self._obj)
            self._obj = None
            raise

    def _flow_entries(self, requested: int) -> int:
        """The flow map's size: as requested, unless a pinned map of another size is there: it is kept.

        Kept, with its flows, rather than copied into a new map of the requested size: the previous
        lvsd's program is still attached and forwarding by it, writing counts and TCP states into it
        until this one's replaces it, so a copy would miss what changed in between; and a new map
        smaller than what is in use (or close to it: the LRU frees room ahead of need) would evict
        connections that no lvsd would then know. The operator applies the new size when the flows
        may end: a stop with --flush-flows, or removing the pin while no lvsd runs."""
        pinned = pinned_entries(self.pin_path) if self.pin_path else None
        if pinned is None or pinned == requested:
            return requested
        log.warning("fast path: keeping the pinned flow map %s of %d entries, and its flows; --flow-entries %d "
                    "applies after a stop with --flush-flows, or after removing the pin (rm %s) while no lvsd runs",
                    self.pin_path, pinned, requested, self.pin_path)
        return pinned

    def _load_tcp_table(self, fd: int) -> None:
        """The engine's TCP state table, so the program's transitions are the engine's by construction."""
        table = bytes(state for row in tcpstate.TRANSITIONS for state in row)
        key = ctypes.c_uint32(0)
        self.lib.check(self.lib.bpf_map_update_elem(fd, ctypes.byref(key), table, 0), "writing the TCP state table")

    def _load_failure(self, err: int) -> str:
        log = "".join(self.lib.log[-12:]).strip()
        if self.pin_path and os.path.exists(self.pin_path) and "reuse" in log:
            return (f"the pinned flow map {self.pin_path} has another layout or size than this program: "
                    f"remove it (rm {self.pin_path}) to start with an empty one")
        if err == errno.EPERM:
            return "loading BPF programs needs root (CAP_BPF and CAP_NET_ADMIN)"
        if err == errno.ENOMEM and "pylvs_flows" in log:
            return (f"the kernel could not allocate the flow map of {self.max_flows} entries "
                    f"({flow_map_bytes(self.max_flows) >> 20} MiB): give a smaller --flow-entries")
        return f"the kernel refused the fast path program ({os.strerror(err)}):\n{log}"

    # -- tc ingress ------------------------------------------------------------------------

    def attach(self, ifindex: int) -> None:
        """Run the program on every frame arriving on `ifindex` (replacing an earlier copy of ours)."""
        def attach() -> None:
            hook = TcHook(ctypes.sizeof(TcHook), ifindex, BPF_TC_INGRESS, 0)
            rc = self.lib.bpf_tc_hook_create(ctypes.byref(hook))
            if rc < 0 and rc != -errno.EEXIST:
                self.lib.check(rc, f"adding a clsact qdisc to interface {ifindex}")
            opts = TcOpts(ctypes.sizeof(TcOpts), self.prog_fd, BPF_TC_F_REPLACE, 0, FILTER_HANDLE, FILTER_PRIORITY)
            self.lib.check(self.lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
                           f"attaching the fast path to interface {ifindex}")
        in_netns(self.netns, attach)

    def detach(self, ifindex: int) -> bool:
        """Remove our filter from `ifindex` (the clsact qdisc stays); False if it was not there."""
        return remove_filter(ifindex, self.netns)

    # -- BPF_PROG_TEST_RUN -----------------------------------------------------------------

    def test_run(self, frame: bytes, ctx: bytes | None = None) -> TestRun:
        """Run the program once on an Ethernet frame: tc verdict, the frame as it left, time taken."""
        size = len(frame) + 256  # room for an encapsulation
        out = ctypes.create_string_buffer(size)
        data = ctypes.create_string_buffer(frame, len(frame))
        ctx_buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.addressof(data),
                           data_out=ctypes.addressof(out), data_size_in=len(frame), data_size_out=size,
                           ctx_in=ctypes.addressof(ctx_buf) if ctx_buf else None,
                           ctx_size_in=len(ctx) if ctx else 0, repeat=1)
        self.lib.check(self.lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
        return TestRun(opts.retval, out.raw[:opts.data_size_out], opts.duration)

    def close(self) -> None:
        """Unload (the pinned flow map and any attached filter stay; the kernel holds them)."""
        if self._obj:
            self.events.close()
            self.lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> FastPath:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
