"""An AF_PACKET transmit ring: the frames of one round of the loop leave in one system call.

lvsd rewrites a round of frames (up to a receive ring's worth) and used to send each with its own
send(): between a response and the FIN that follows it, the client's kernel could wake its reader,
which then closed first and kept the TIME_WAIT (issue 19). `queue(frame)` copies a frame into the
next slot of a PACKET_TX_RING (TPACKET_V2, virtio_net_hdr first, as the receive side hands it over);
`flush()` hands every queued frame to the kernel with one send(), which transmits them back to back,
in order, without returning to Python in between. A frame longer than a slot (a GSO super-frame)
flushes what is queued and is sent on its own by `fallback` (another socket's send: once a socket
has a transmit ring, its send() only sends the ring), so the order stays that of `queue` calls.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Callable

from pylvs.io.afpacket import PACKET_QDISC_BYPASS, PACKET_VERSION, PACKET_VNET_HDR, SOL_PACKET, TPACKET_V2

PACKET_LOSS = 14         # a malformed frame is skipped (its slot given back) instead of stopping the ring
PACKET_TX_RING = 13
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
DATA = 32                # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll): where a frame's bytes start
SLOT = 2048              # a 1500-byte MTU frame with its virtio_net_hdr, Ethernet header and tpacket2_hdr
SLOTS = 1024
_REQ = struct.Struct("4I")
_HDR = struct.Struct("=III")  # tp_status, tp_len, tp_snaplen
_SEND_REQUEST = struct.pack("=I", TP_STATUS_SEND_REQUEST)
_AVAILABLE = struct.pack("=I", TP_STATUS_AVAILABLE)


class TxRing:
    """One interface's transmit ring (its own socket, bound to the interface with protocol 0: it
    receives nothing)."""

    def __init__(self, ifname: str, fallback: Callable[[object], object], slots: int = SLOTS,
                 slot_size: int = SLOT) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
            block = max(slot_size, mmap.PAGESIZE)
            per_block = block // slot_size
            sock.setsockopt(SOL_PACKET, PACKET_TX_RING, _REQ.pack(block, slots // per_block, slot_size, slots))
            self.ring = mmap.mmap(sock.fileno(), block * (slots // per_block), mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((ifname, 0))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fallback = fallback
        self.ifname = ifname
        self.view = memoryview(self.ring)
        self.slots = slots
        self.slot_size = slot_size
        self.room = slot_size - DATA
        self.next = 0
        self.pending = 0   # frames queued since the last flush
        self.direct = 0    # frames too long for a slot, sent on their own
        self.flushes = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def queue(self, frame) -> None:
        """Copy a frame (virtio_net_hdr + Ethernet) into the ring; it leaves at the next flush()."""
        n = len(frame)
        if n > self.room:
            self.flush()
            self.direct += 1
            self.fallback(frame)
            return
        off = self.next * self.slot_size
        view = self.view
        if view[off:off + 4] != _AVAILABLE:
            self.flush()  # every slot is queued or still being sent: send them, then look again
            if view[off:off + 4] != _AVAILABLE:
                self.direct += 1
                self.fallback(frame)
                return
        view[off + DATA:off + DATA + n] = frame
        _HDR.pack_into(view, off, TP_STATUS_AVAILABLE, n, n)
        view[off:off + 4] = _SEND_REQUEST  # last: the kernel may take the slot from now on
        self.next = (self.next + 1) % self.slots
        self.pending += 1

    def flush(self) -> None:
        """Send every queued frame, in order, with one system call."""
        if not self.pending:
            return
        self.pending = 0
        self.flushes += 1
        self.sock.send(b"", socket.MSG_DONTWAIT)

    def close(self) -> None:
        self.view.release()
        self.ring.close()
        self.sock.close()
