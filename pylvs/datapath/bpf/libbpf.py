"""The few libbpf calls the fast path needs, through ctypes (Debian 12: libbpf1 1.1, its API only).

libbpf 1.x returns negative error numbers (or NULL with errno set); `check` turns them into
`BpfError` with a sentence an operator can act on. libbpf's own messages (the verifier's log when a
load fails) are collected in `log` instead of going to stderr.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from ctypes import POINTER, Structure, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p

LIBBPF_HINT = "install libbpf (Debian: apt-get install libbpf1, or libbpf-dev to build the program too)"


class BpfError(RuntimeError):
    """The fast path cannot load or run here; the message says why."""


class TestRunOpts(Structure):
    """struct bpf_test_run_opts (bpf.h)."""

    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p), ("data_size_in", c_uint32),
                ("data_size_out", c_uint32), ("ctx_in", c_void_p), ("ctx_out", c_void_p),
                ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32), ("retval", c_uint32), ("repeat", c_int),
                ("duration", c_uint32), ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32)]


class MapBatchOpts(Structure):
    """struct bpf_map_batch_opts (bpf.h)."""

    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class MapInfo(Structure):
    """The leading fields of struct bpf_map_info (linux/bpf.h): the kernel fills what fits."""

    _fields_ = [("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32), ("value_size", c_uint32),
                ("max_entries", c_uint32), ("map_flags", c_uint32)]


class TcHook(Structure):
    """struct bpf_tc_hook (libbpf.h)."""

    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_uint32)]


class TcOpts(Structure):
    """struct bpf_tc_opts (libbpf.h)."""

    _fields_ = [("sz", c_size_t), ("prog_fd", c_int), ("flags", c_uint32), ("prog_id", c_uint32),
                ("handle", c_uint32), ("priority", c_uint32)]


BPF_TC_INGRESS = 1
BPF_TC_F_REPLACE = 1
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RING_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)  # ring_buffer_sample_fn

# name: (result type, argument types)
_SIGNATURES = {
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_lookup_and_delete_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p, POINTER(c_uint32),
                                     POINTER(MapBatchOpts)]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(TestRunOpts)]),
    "bpf_tc_hook_create": (c_int, [POINTER(TcHook)]),
    "bpf_tc_attach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_tc_detach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "libbpf_num_possible_cpus": (c_int, []),
    "ring_buffer__new": (c_void_p, [c_int, RING_SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__epoll_fd": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
    "libbpf_set_print": (c_void_p, [_PRINT_FN]),
}


class Libbpf:
    """libbpf.so.1 with typed functions as attributes; `log` holds libbpf's recent messages."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            self.lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise BpfError(f"libbpf is not installed ({e}): {LIBBPF_HINT}") from None
        for fn, (restype, argtypes) in _SIGNATURES.items():
            try:
                f = getattr(self.lib, fn)
            except AttributeError:
                raise BpfError(f"{name} has no {fn} (libbpf 1.0 or newer is needed): {LIBBPF_HINT}") from None
            f.restype, f.argtypes = restype, argtypes
            setattr(self, fn, f)
        self.log: list[str] = []
        self._printer = self._capture_print()

    def _capture_print(self):
        # va_list is a pointer-sized array argument on x86-64 only; elsewhere libbpf keeps printing to stderr.
        if platform.machine() != "x86_64":
            return None
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
        buf = ctypes.create_string_buffer(1 << 20)  # a verifier log comes as one message

        def printer(level: int, fmt: bytes, args: int) -> int:
            vsnprintf(buf, len(buf), fmt, args)
            text = buf.value.decode(errors="replace")
            if len(text) > 6000:  # its end says what failed
                text = f"{text[:200]}\n[...]\n{text[-6000:]}"
            self.log.append(text)
            del self.log[:-400]  # a verifier log is long; its end says what failed
            return 0

        callback = _PRINT_FN(printer)
        self.libbpf_set_print(callback)
        return callback  # kept alive with this object

    def check(self, rc: int, what: str) -> int:
        """rc itself if it is not an error, else BpfError naming `what` and the errno."""
        if rc < 0:
            err = -rc
            raise BpfError(f"{what}: {os.strerror(err)} (errno {err})")
        return rc

    def pointer(self, ptr: int | None, what: str) -> int:
        if not ptr:
            err = ctypes.get_errno() or 2
            raise BpfError(f"{what}: {os.strerror(err)} (errno {err})")
        return ptr


_LIB: Libbpf | None = None


def libbpf() -> Libbpf:
    """The process's one libbpf binding (loaded on first use)."""
    global _LIB
    if _LIB is None:
        _LIB = Libbpf()
    return _LIB
