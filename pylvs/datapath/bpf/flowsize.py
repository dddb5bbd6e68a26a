"""The fast path's flow map size (lvsd --flow-entries): its bounds and the kernel memory it takes.

A NAT or FULLNAT connection takes two entries (one a direction), DR and TUN one. The map is an LRU
hash the kernel allocates whole when it is created; when it is full, the kernel evicts the least
recently used entry and that flow's packets go to the engine again.
"""

from __future__ import annotations

from pylvs.engine.flow import KEY, VALUE

DEFAULT_FLOW_ENTRIES = 65536
MIN_FLOW_ENTRIES = 1024  # below, the LRU's per-CPU free lists take a good share of the map
MAX_FLOW_ENTRIES = 1 << 28  # the kernel's limit for a hash map (2^28 buckets of 16 bytes; E2BIG above)
HTAB_ELEM_BYTES = 48  # the kernel's header of a preallocated hash map element (Linux 6.x, 64-bit)
BUCKET_BYTES = 16


def flow_map_bytes(entries: int) -> int:
    """Kernel memory a flow map of `entries` takes from its creation: an element (header, key, value)
    per entry and a bucket per entry rounded up to a power of two. The kernel's own account of it
    (memlock in the map's fdinfo) matches: 240 bytes an entry at powers of two (test_fastpath_flowsize)."""
    buckets = 1 << (entries - 1).bit_length()
    return entries * (HTAB_ELEM_BYTES + KEY.size + VALUE.size) + buckets * BUCKET_BYTES
