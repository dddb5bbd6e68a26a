"""The fast path's maps from Python: FlowEntry recipes in, packet counters out.

`FlowMap` writes and deletes the packed FlowEntry (pylvs.engine.flow) and reads back what the
kernel counted for it; `Counters` sums the program's per-CPU counters (fixed indices, the
`enum pylvs_counter` of pylvs_fastpath.bpf.c, in that order).
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterator

from pylvs.datapath.bpf.libbpf import BpfError, Libbpf, MapBatchOpts
from pylvs.engine.flow import KEY, VALUE, FlowEntry

COUNTERS = ("hit", "miss", "pass_other", "punt_engine_only", "punt_tcp_flags", "punt_fragment",
            "punt_ip_options", "punt_ttl", "punt_mtu", "punt_bad_header", "punt_unsupported", "punt_no_room",
            "drop_error", "tcp_event", "punt_ring_full", "punt_ext_header", "punt_toa")
BPF_ANY, BPF_NOEXIST = 0, 1  # bpf_map_update_elem flags
ENOTSUPP = 524  # the kernel's internal "operation not supported", which bpf() can return
_COUNT_FIELDS = struct.Struct("=QQQ")  # packets, bytes, last_seen_ns: the value's last three fields
_COUNTS = VALUE.size - _COUNT_FIELDS.size
COUNT_BATCH = 4096  # entries per system call when the map is read out (a 720 KiB buffer)


class FlowMap:
    """The LRU hash of FlowEntry recipes, by the map's file descriptor."""

    def __init__(self, lib: Libbpf, fd: int) -> None:
        self.lib = lib
        self.fd = fd

    def put(self, entry: FlowEntry) -> None:
        """Write (or replace) the entry's recipe; its counters start from the entry's own."""
        rc = self.lib.bpf_map_update_elem(self.fd, entry.pack_key(), entry.pack_value(), BPF_ANY)
        if rc < 0:  # (the message only then: naming the entry costs more than writing it)
            self.lib.check(rc, f"writing flow {entry!r}")

    def put_new(self, key: bytes, value: bytes) -> bool:
        """Write a packed value under a packed key only if the key is absent (BPF_NOEXIST): False if present."""
        rc = self.lib.bpf_map_update_elem(self.fd, key, value, BPF_NOEXIST)
        if rc == -errno.EEXIST:
            return False
        self.lib.check(rc, f"claiming flow {key.hex()}")
        return True

    def delete(self, entry: FlowEntry) -> bool:
        """Remove the entry's recipe; False if it was not there (never put, or evicted)."""
        return self.delete_key(entry.pack_key(), entry)

    def delete_key(self, key: bytes, entry: FlowEntry | None = None) -> bool:
        """Remove the recipe under a packed key; False if there was none."""
        rc = self.lib.bpf_map_delete_elem(self.fd, key)
        if rc == -errno.ENOENT:
            return False
        if rc < 0:
            self.lib.check(rc, f"deleting flow {entry!r}" if entry is not None else f"deleting flow {key.hex()}")
        return True

    def take(self, entry: FlowEntry) -> bool:
        """Delete the entry's recipe and copy its last counts into `entry` in one step (nothing the kernel
        counts in between is lost); False if it was not there."""
        value = ctypes.create_string_buffer(VALUE.size)
        rc = self.lib.bpf_map_lookup_and_delete_elem(self.fd, entry.pack_key(), value)
        if rc == -errno.ENOENT:
            return False
        if rc in (-errno.EINVAL, -ENOTSUPP, -errno.EOPNOTSUPP):  # before Linux 5.14: two steps
            present = self.refresh(entry)
            return self.delete(entry) and present
        if rc < 0:
            self.lib.check(rc, f"taking flow {entry!r}")
        entry.packets, entry.bytes, entry.last_seen_ns = counts(value.raw)
        return True

    def lookup(self, key: bytes) -> bytes | None:
        """The packed value stored under a packed key, or None."""
        value = ctypes.create_string_buffer(VALUE.size)
        rc = self.lib.bpf_map_lookup_elem(self.fd, key, value)
        if rc == -errno.ENOENT:
            return None
        self.lib.check(rc, "reading a flow")
        return value.raw

    def refresh(self, entry: FlowEntry) -> bool:
        """Copy what the kernel counted (packets, bytes, last_seen_ns) into `entry`; False if gone."""
        value = self.lookup(entry.pack_key())
        if value is None:
            return False
        entry.packets, entry.bytes, entry.last_seen_ns = counts(value)
        return True

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (packed key, packed value) pair; entries deleted meanwhile are skipped."""
        for keys, values, n in self._batches():
            for i in range(n):
                yield keys[i * KEY.size:(i + 1) * KEY.size], values[i * VALUE.size:(i + 1) * VALUE.size]

    def _batches(self) -> Iterator[tuple[bytes, bytes, int]]:
        """The map read out COUNT_BATCH entries per system call (Linux 5.6 and later; before, one entry
        and two calls at a time): (keys, values, how many) per batch."""
        keys = ctypes.create_string_buffer(KEY.size * COUNT_BATCH)
        values = ctypes.create_string_buffer(VALUE.size * COUNT_BATCH)
        batch_in, batch_out = ctypes.create_string_buffer(KEY.size), ctypes.create_string_buffer(KEY.size)
        opts = MapBatchOpts(ctypes.sizeof(MapBatchOpts), 0, 0)
        start = None
        while True:
            n = ctypes.c_uint32(COUNT_BATCH)
            rc = self.lib.bpf_map_lookup_batch(self.fd, start, batch_out, keys, values, ctypes.byref(n),
                                               ctypes.byref(opts))
            if start is None and rc in (-errno.EINVAL, -ENOTSUPP, -errno.EOPNOTSUPP):
                yield from self._one_by_one()  # no batch reads in this kernel
                return
            if rc < 0 and rc != -errno.ENOENT:
                self.lib.check(rc, "reading the flow map")
            if n.value:
                yield keys.raw[:KEY.size * n.value], values.raw[:VALUE.size * n.value], n.value
            if rc == -errno.ENOENT:  # the end of the map (with the last batch's entries in n)
                return
            ctypes.memmove(batch_in, batch_out, KEY.size)
            start = batch_in

    def _one_by_one(self) -> Iterator[tuple[bytes, bytes, int]]:
        prev: bytes | None = None
        nxt = ctypes.create_string_buffer(KEY.size)
        while True:
            rc = self.lib.bpf_map_get_next_key(self.fd, prev, nxt)
            if rc == -errno.ENOENT:
                return
            self.lib.check(rc, "walking the flow map")
            prev = nxt.raw
            value = self.lookup(prev)
            if value is not None:
                yield prev, value, 1

    def clear(self) -> int:
        """Delete every entry; how many there were."""
        keys = [key for key, _ in self.items()]
        for key in keys:
            rc = self.lib.bpf_map_delete_elem(self.fd, key)
            if rc != -errno.ENOENT:
                self.lib.check(rc, "clearing the flow map")
        return len(keys)

    def __len__(self) -> int:
        """How many entries the map holds. The kernel keeps no count of an LRU hash that it would tell:
        this reads every entry out (~0.6 µs per entry held: 65,536 take 36 ms, 1,048,576 0.9 s,
        measured on Linux 6.18)."""
        return sum(n for _, _, n in self._batches())


def counts(value: bytes) -> tuple[int, int, int]:
    """(packets, bytes, last_seen_ns) of a packed value (native byte order, as VALUE packs)."""
    return _COUNT_FIELDS.unpack_from(value, _COUNTS)


class Counters:
    """The program's per-CPU counters, summed over CPUs, by name (COUNTERS, or `names` of another array)."""

    def __init__(self, lib: Libbpf, fd: int, names: tuple[str, ...] = COUNTERS) -> None:
        self.lib = lib
        self.fd = fd
        self.names = names
        self.cpus = lib.check(lib.libbpf_num_possible_cpus(), "counting CPUs")

    def read(self) -> dict[str, int]:
        out = {}
        values = (ctypes.c_uint64 * self.cpus)()
        for index, name in enumerate(self.names):
            key = ctypes.c_uint32(index)
            rc = self.lib.bpf_map_lookup_elem(self.fd, ctypes.byref(key), values)
            if rc < 0:
                raise BpfError(f"reading fast path counter {name}: errno {-rc}")
            out[name] = sum(values)
        return out
