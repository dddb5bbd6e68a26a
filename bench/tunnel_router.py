"""The router's tunnels for the TUN lab's direct path: build tunnel_router.bpf.c, load it, attach it.

The program goes on tc egress of the router's interface towards the real servers, with one
`tunnel_peers` entry per real server (its MAC -> VIP, router address, RIP, tunnel type, GUE port).
Its counters stay readable through the loaded object until `close`; the filter, and so the program
and its maps, stay in the kernel until the interface goes with the lab.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import socket
import struct
import subprocess
from dataclasses import dataclass

from pylvs.datapath.bpf.libbpf import BpfError, TcHook, TcOpts, libbpf
from pylvs.datapath.bpf.loader import in_netns

SOURCE = pathlib.Path(__file__).with_name("tunnel_router.bpf.c")
PROGRAM = b"tunnel_router"
PEER_MAP = b"tunnel_peers"
COUNTER_MAP = b"tunnel_counters"
COUNTERS = ("encapsulated", "passed", "failed")  # enum counter in the program
KINDS = {"ipip": 1, "gue": 2, "gre": 3}  # enum tunnel_kind
BPF_TC_EGRESS = 2
FILTER_HANDLE = 1
FILTER_PRIORITY = 1
_KEY = struct.Struct("6s2x")            # struct peer_key
_PEER = struct.Struct("4s4s4s2sBx")     # struct peer (addresses and port in network order)
_COUNTER = struct.Struct("Q")


@dataclass(frozen=True)
class Peer:
    """One real server as the program sees it."""

    mac: str
    vip: str
    saddr: str  # the router's address towards the real servers
    rip: str
    kind: str   # "ipip", "gue" or "gre"
    gue_port: int = 0

    def key(self) -> bytes:
        return _KEY.pack(bytes.fromhex(self.mac.replace(":", "")))

    def value(self) -> bytes:
        return _PEER.pack(socket.inet_aton(self.vip), socket.inet_aton(self.saddr), socket.inet_aton(self.rip),
                          self.gue_port.to_bytes(2, "big"), KINDS[self.kind])


def build(out_dir: str) -> str:
    """Compile the program with clang (as the Makefile's `bpf` target does the fast path); its path."""
    obj = os.path.join(out_dir, "tunnel_router.bpf.o")
    arch = subprocess.run(["clang", "-print-multiarch"], capture_output=True, text=True, check=True).stdout.strip()
    done = subprocess.run(["clang", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", f"-I/usr/include/{arch}",
                           "-c", str(SOURCE), "-o", obj], capture_output=True, text=True)
    if done.returncode:
        raise BpfError(f"compiling {SOURCE.name} failed:\n{done.stderr}")
    return obj


class TunnelRouter:
    """The program loaded, its peers written, attached to tc egress of `ifname` in network namespace `netns`."""

    def __init__(self, obj_path: str, netns: str, ifname: str, peers: list[Peer]) -> None:
        self.lib = lib = libbpf()
        self._obj = lib.pointer(lib.bpf_object__open_file(os.fsencode(obj_path), None), f"opening {obj_path}")
        try:
            del lib.log[:]
            rc = lib.bpf_object__load(self._obj)
            if rc < 0:
                raise BpfError(f"the kernel refused {obj_path} ({os.strerror(-rc)}):\n{''.join(lib.log[-12:])}")
            peer_fd = lib.bpf_map__fd(lib.pointer(lib.bpf_object__find_map_by_name(self._obj, PEER_MAP), "peers"))
            for peer in peers:
                lib.check(lib.bpf_map_update_elem(peer_fd, peer.key(), peer.value(), 0), f"adding {peer}")
            self._counter_fd = lib.bpf_map__fd(
                lib.pointer(lib.bpf_object__find_map_by_name(self._obj, COUNTER_MAP), "counters"))
            prog = lib.pointer(lib.bpf_object__find_program_by_name(self._obj, PROGRAM), "finding the program")
            in_netns(netns, lambda: self._attach(lib.bpf_program__fd(prog), socket.if_nametoindex(ifname)))
        except BaseException:
            self.close()
            raise

    def _attach(self, prog_fd: int, ifindex: int) -> None:
        hook = TcHook(ctypes.sizeof(TcHook), ifindex, BPF_TC_EGRESS, 0)
        rc = self.lib.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and rc != -errno.EEXIST:
            self.lib.check(rc, f"adding a clsact qdisc to interface {ifindex}")
        opts = TcOpts(ctypes.sizeof(TcOpts), prog_fd, 0, 0, FILTER_HANDLE, FILTER_PRIORITY)
        self.lib.check(self.lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
                       f"attaching the tunnels to interface {ifindex}")

    def counters(self) -> dict[str, int]:
        """Frames encapsulated, passed untouched and dropped (summed over CPUs)."""
        ncpu = self.lib.libbpf_num_possible_cpus()
        found = {}
        for index, name in enumerate(COUNTERS):
            key = ctypes.c_uint32(index)
            values = ctypes.create_string_buffer(_COUNTER.size * ncpu)
            self.lib.check(self.lib.bpf_map_lookup_elem(self._counter_fd, ctypes.byref(key), values), "counters")
            found[name] = sum(n for (n,) in _COUNTER.iter_unpack(values.raw))
        return found

    def close(self) -> None:
        """Let go of the object (an attached filter keeps the program and its maps in the kernel)."""
        if self._obj:
            self.lib.bpf_object__close(self._obj)
            self._obj = None
