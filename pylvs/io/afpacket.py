"""AF_PACKET sockets with a memory-mapped receive ring and virtio_net_hdr on every frame.

One socket per interface: it receives through a ring (frames are handed to the engine as
memoryviews into the ring and rewritten in place, no copy) and sends with `send()`.
PACKET_VNET_HDR makes GSO super-frames and partial checksums cross intact; PACKET_QDISC_BYPASS
skips the qdisc layer; PACKET_IGNORE_OUTGOING keeps our own transmissions out of the ring.

Two ring layouts (`version`):
- TPACKET_V2 (default): fixed 68 KB slots, one per frame. The kernel wakes the reader for every
  frame, so a lone request is forwarded at once; under load the reader still drains many frames
  per wakeup.
- TPACKET_V3: variable-size frames packed into blocks. The kernel hands a block over only when it
  is full or its retire timer (>= 1 ms) fires, which adds up to that much latency to every request
  at moderate rates (measured: ~2 ms p50 for HTTP keep-alive); it uses memory better for bulk.
`drain(handle)` hands every ready frame over: V2 walks its slots with `SlotRing`, V3 goes through
`blocks()`, `frames(block)` and `release(block)`.

The reader must never lose its place in the ring: it moves on before handing a frame over (a
failing handler does not leave it behind), and a wakeup that finds nothing where the next frame
should be scans the ring and continues from the oldest frame the kernel has handed over
(`resyncs` counts it). A frame ready for less than RESYNC_AGE may only mean that another CPU is
still writing the expected slot: then the reader waits rather than reorder. Frames the kernel
dropped because the ring was full are read from PACKET_STATISTICS when a frame says so
(TP_STATUS_LOSING) and added to `drops`.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import socket
import struct
import time
from collections.abc import Callable, Iterator

from pylvs.packet.vnet import VNET_HDR_LEN

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_ALLMULTI = 2
_MREQ = struct.Struct("=iHH8s")  # struct packet_mreq
SO_ATTACH_FILTER = 26
SKF_AD_MARK = 0xFFFFF000 + 20  # classic BPF ancillary load of skb->mark

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 1 << 1      # frame truncated to the snap length
TP_STATUS_LOSING = 1 << 2
PACKET_OUTGOING = 4
PACKET_OTHERHOST = 3

_REQ = struct.Struct("4I")
_PKT2 = struct.Struct("=IIIHH")  # tpacket2_hdr: status, len, snaplen, mac, net
_STAMP2 = struct.Struct("=I12xII")  # tpacket2_hdr: status, then sec, nsec (when the kernel took the frame)
_STATS = struct.Struct("II")  # tpacket_stats: packets (received + dropped), drops; reading resets them
_KERNEL = bytes(4)  # TP_STATUS_KERNEL: the slot belongs to the kernel again
V2_SLOT = 17 * 4096  # holds a 64 KB GSO frame with its headers
# A frame ready beyond an empty expected slot may only mean that another CPU is still writing that
# slot (the kernel claims slots in order but fills them concurrently): the reader jumps only when
# the waiting frame is older than this, which such a write never takes.
RESYNC_AGE = 0.05
_REQ3 = struct.Struct("7I")
_BLOCK = struct.Struct("=8xIII")         # block_status, num_pkts, offset_to_first_pkt (at 8)
_PKT = struct.Struct("=IIIIIIHH")              # next_offset, sec, nsec, snaplen, len, status, mac, net
_SLL_PKTTYPE = 48 + 10                          # sockaddr_ll follows the 48-byte tpacket3_hdr


def attach_mark_filter(sock: socket.socket, mark: int) -> ctypes.Array:
    """A classic BPF socket filter that accepts only frames whose skb->mark equals `mark`.

    Returns the program buffer, which must outlive the setsockopt call (the kernel copies it)."""
    program = [
        (0x20, 0, 0, SKF_AD_MARK),  # ld [mark]
        (0x15, 0, 1, mark),         # jeq #mark, accept, drop
        (0x06, 0, 0, 0x40000),      # ret #262144 (whole frame)
        (0x06, 0, 0, 0),            # ret #0 (drop)
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return code


# Ready frames `SlotRing.waiting` looks at before it assumes the flow's are among them: behind a backlog
# that long the recipe waits anyway, and looking costs about 2 µs a frame.
WAITING_SCAN = 16


def _carries(frame: memoryview, key: bytes) -> bool:
    """Whether an Ethernet frame may belong to the flow `key` (addresses then ports): its addresses are
    the key's, and its ports too where they are at their usual place (else it may)."""
    etype = frame[12:14]
    if len(key) == 12 and etype == b"\x08\x00":
        return len(frame) >= 38 and frame[26:34] == key[:8] and (frame[14] != 0x45 or frame[34:38] == key[8:12])
    if len(key) == 36 and etype == b"\x86\xdd":
        return len(frame) >= 58 and frame[22:54] == key[:32] and (frame[20] not in (6, 17) or
                                                                  frame[54:58] == key[32:36])
    return False


class SlotRing:
    """The TPACKET_V2 ring walk over any writable buffer of `slots` slots of `slot_size` bytes.

    Kept apart from the socket so that it can be tested on a bytearray laid out as a ring."""

    def __init__(self, view: memoryview, slot_size: int, slots: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self.clock = clock  # the kernel stamps frames with CLOCK_REALTIME
        self.slot_size = slot_size
        self.slots = slots
        self.next = 0         # the slot the next frame should be in
        self.truncated = 0    # frames longer than a slot (dropped)
        self.resyncs = 0      # wakeups that found the next frame elsewhere than expected
        self.losing = False   # a frame said that the kernel dropped frames before it (ring full)

    def drain(self, handle: Callable[[memoryview], object]) -> int:
        """Hand every ready frame to `handle(frame)` and give its slot back right after; the count.

        At most one ring's worth per call: under endless traffic the loop must still get back to
        the selector (control requests, timers); frames left over keep the socket readable."""
        view, unpack, slot_size, slots = self.view, _PKT2.unpack_from, self.slot_size, self.slots
        i = self.next
        handled = 0
        while handled < slots:
            off = i * slot_size
            status, length, snaplen, mac, _net = unpack(view, off)
            if not status & TP_STATUS_USER:
                if handled:
                    break
                oldest = self._oldest_ready(i)
                if oldest is None:
                    break
                self.resyncs += 1
                i = oldest
                continue
            if status & TP_STATUS_LOSING:
                self.losing = True
            i = (i + 1) % slots
            self.next = i  # before the handler: a failing one must not lose our place
            handled += 1
            try:
                if snaplen != length or status & TP_STATUS_COPY:
                    self.truncated += 1
                else:
                    start = off + mac
                    handle(view[start - VNET_HDR_LEN:start + snaplen])
            finally:
                view[off:off + 4] = _KERNEL
        return handled

    def ready(self) -> bool:
        """Whether the next frame is waiting for us (without taking it)."""
        return bool(int.from_bytes(self.view[self.next * self.slot_size:self.next * self.slot_size + 4],
                                   "little") & TP_STATUS_USER)

    def waiting(self, key: bytes) -> bool:
        """Whether a frame of the flow `key` (addresses then ports, as the packets carry them: 12 bytes
        IPv4, 36 IPv6) waits for us, without taking any. Beyond WAITING_SCAN ready frames, or for a
        frame whose ports it cannot find (IP options, IPv6 extension headers), it says yes."""
        view, unpack, slot_size, slots = self.view, _PKT2.unpack_from, self.slot_size, self.slots
        i = self.next
        for _ in range(min(slots, WAITING_SCAN)):
            off = i * slot_size
            status, _length, snaplen, mac, _net = unpack(view, off)
            if not status & TP_STATUS_USER:
                return False
            if _carries(view[off + mac:off + mac + snaplen], key):
                return True
            i = (i + 1) % slots
        return True

    def _oldest_ready(self, start: int) -> int | None:
        """The slot of the oldest frame handed to us (by kernel timestamp, then ring order from
        `start`), or None if there is none or it is too recent to be sure we are out of step."""
        view, unpack, slot_size, slots = self.view, _STAMP2.unpack_from, self.slot_size, self.slots
        best: tuple[int, int, int] | None = None
        for step in range(slots):
            slot = (start + step) % slots
            status, sec, nsec = unpack(view, slot * slot_size)
            if status & TP_STATUS_USER and (best is None or (sec, nsec) < best[:2]):
                best = (sec, nsec, slot)
        if best is None or abs(self.clock() - (best[0] + best[1] / 1e9)) < RESYNC_AGE:
            return None
        return best[2]


class RingSocket:
    """An interface's packet socket: ring receive, direct send, both with virtio_net_hdr."""

    def __init__(self, ifname: str, version: int = 2, slots: int = 256, block_size: int = 1 << 20,
                 block_nr: int = 16, retire_ms: int = 1, protocol: int = ETH_P_IP, mark: int | None = 0,
                 allmulti: bool = False) -> None:
        """`protocol` ETH_P_IP (or ETH_P_IPV6) sees frames after the ingress hooks, so marks that nftables
        sets there (`table netdev`) are visible; `mark` keeps only frames with that mark (None: no
        filter); `allmulti` has the interface pass every multicast frame up (neighbour solicitations
        for VIPs go to solicited-node groups the director's kernel never joined)."""
        self.ifname = ifname
        self.ifindex = socket.if_nametoindex(ifname)
        self.version = version
        self.mark = mark
        self.protocol = protocol
        if version == 2:
            block_size, block_nr = V2_SLOT, slots
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: no rx until bound
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2 if version == 2 else TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            if version == 2:
                req = _REQ.pack(block_size, block_nr, block_size, block_nr)
            else:
                req = _REQ3.pack(block_size, block_nr, 2048, block_size // 2048 * block_nr, retire_ms, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.ring = mmap.mmap(sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            if mark is not None:
                self._filter = attach_mark_filter(sock, mark)  # before bind: no unfiltered frame gets in
            sock.bind((ifname, protocol))
            if allmulti:
                mreq = _MREQ.pack(self.ifindex, PACKET_MR_ALLMULTI, 0, bytes(8))
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.view = memoryview(self.ring)
        self.block_size = block_size
        self.block_nr = block_nr
        self.next_block = 0  # V3
        self.truncated = 0   # V3 frames longer than their slot (V2 counts them in `slot_ring`)
        self.packets = 0     # PACKET_STATISTICS: frames the kernel took for this socket, drops included
        self.drops = 0       # PACKET_STATISTICS: frames the kernel dropped because the ring was full
        self.send = sock.send
        self.slot_ring = SlotRing(self.view, block_size, block_nr) if version == 2 else None

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, handle: Callable[[memoryview], object]) -> None:
        """Hand every ready frame to `handle(frame)` and give its slot back right after.

        `handle` must be done with the frame when it returns (lvsd sends synchronously)."""
        slot_ring = self.slot_ring
        if slot_ring is not None:
            slot_ring.drain(handle)
            if slot_ring.losing:
                slot_ring.losing = False
                self.read_statistics()
            return
        for block in itertools.islice(self.blocks(), self.block_nr):
            try:
                for frame in self.frames(block):
                    handle(frame)
            finally:
                self.release(block)

    def waiting(self, key: bytes) -> bool:
        """Whether a frame of the flow `key` waits for `drain` (SlotRing.waiting; TPACKET_V3: any frame)."""
        if self.slot_ring is not None:
            return self.slot_ring.waiting(key)
        return self.ready()

    def ready(self) -> bool:
        """Whether a frame is waiting for `drain` (without taking it)."""
        if self.slot_ring is not None:
            return self.slot_ring.ready()
        off = self.next_block * self.block_size
        return bool(int.from_bytes(self.ring[off + 8:off + 12], "little") & TP_STATUS_USER)

    def read_statistics(self) -> None:
        """Add the kernel's counters since the last reading to `packets` and `drops`."""
        packets, drops = _STATS.unpack_from(self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        self.packets += packets
        self.drops += drops

    def counters(self) -> dict[str, int]:
        """What an operator wants to know about this ring (reads the kernel's statistics first)."""
        self.read_statistics()
        slot_ring = self.slot_ring
        return {"packets": self.packets, "drops": self.drops,
                "truncated": self.truncated + (slot_ring.truncated if slot_ring else 0),
                "resyncs": slot_ring.resyncs if slot_ring else 0}

    def blocks(self) -> Iterator[int]:
        """Offsets of the V3 blocks the kernel has handed to us, in ring order."""
        ring = self.ring
        while True:
            off = self.next_block * self.block_size
            if not int.from_bytes(ring[off + 8:off + 12], "little") & TP_STATUS_USER:  # block_status
                return
            self.next_block = (self.next_block + 1) % self.block_nr  # before yielding: a consumer may stop
            yield off

    def frames(self, block: int) -> Iterator[memoryview]:
        """The frames of one V3 block, each starting with its virtio_net_hdr."""
        view = self.view
        _, num, first = _BLOCK.unpack_from(view, block)
        pos = block + first
        for _ in range(num):
            nxt, _s, _ns, snaplen, length, status, mac, _net = _PKT.unpack_from(view, pos)
            if snaplen != length or status & TP_STATUS_COPY:
                self.truncated += 1
            elif view[pos + _SLL_PKTTYPE] != PACKET_OUTGOING:
                start = pos + mac
                yield view[start - VNET_HDR_LEN:start + snaplen]
            pos += nxt

    def release(self, block: int) -> None:
        """Give a V3 block back to the kernel once every frame in it has been sent."""
        self.ring[block + 8:block + 12] = _KERNEL

    def close(self) -> None:
        self.view.release()
        self.ring.close()
        self.sock.close()
