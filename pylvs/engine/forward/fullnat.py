"""FULLNAT: CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport, and back (ipvs.md §4.6).

Both ends are translated, so the real server only needs a route to the local address (LIP): it may
sit in any network. Local addresses come round-robin from the service's pool; local ports are
taken as the Alibaba LVS kernel does (a per-LIP cursor over [lport_min, lport_max], skipping ports
whose reply key is in use) and are free again when the connection leaves the table.

With the BPF fast path, a port is also claimed in the kernel's flow map (`claim`, set by its
FlowOffload: the reply key created there only if absent), where the program claims the ports of the
FULLNAT connections it schedules itself in the same way: the two allocators share every LIP's whole
range and never give out one reply key twice. The engine binds the connections the program made at
the local address and port it chose (`bind_at`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.egress import Buffer, Output
from pylvs.engine.flow import DIR_IN, DIR_OUT, F_ENGINE_ONLY, F_TOA, FlowEntry
from pylvs.engine.forward import clientaddr, translate
from pylvs.engine.forward.nat import AddressRewrite
from pylvs.engine.forward.rewrite import Deltas, finish_rebuilt, patch
from pylvs.ipvs_uapi import Method
from pylvs.packet.layout import IP, IP_SRC, IP_TTL, PROTO_TCP, TCP_ACK, TCP_CSUM, TCP_RST, TCP_SYN

if TYPE_CHECKING:
    from collections.abc import Callable

    from pylvs.engine.conntrack import Conn, ConnTable
    from pylvs.engine.services import LocalAddress



def packet_end(buf: Buffer) -> int:
    """Where the IP packet in frame `buf` ends (IPv4 total length, or IPv6 header + payload length)."""
    if buf[IP] >> 4 == 6:
        return IP + 40 + (buf[IP + 4] << 8 | buf[IP + 5])
    return IP + (buf[IP + 2] << 8 | buf[IP + 3])


LPORT_MIN = 5000     # fullnat_lport_min
LPORT_MAX = 65535    # fullnat_lport_max
LPORT_TRIES = 10000  # fullnat_lport_tries


class ClientAddress:
    """The slow-path state of delivering the client's address (TOA or PROXY protocol) on one connection.

    Under the PROXY protocol its packets of both directions are engine-only (the recipe cannot insert a
    header; acknowledgements and SACK edges are shifted back). TOA over IPv4 is the kernel's too: the
    request recipe is marked F_TOA and the program inserts the option into the client's first ACK
    (pylvs_fastpath.bpf.c insert_toa) and reports it (`kernel_sent_toa`); whichever path forwards that
    ACK inserts it, once. TOA over IPv6 (and NAT64, NAT46) stays engine-only until delivered.
    """

    __slots__ = ("kind", "pp_header", "isn_next", "seq_delta", "toa_sent")

    def __init__(self, kind: str, conn: Conn) -> None:
        self.kind = kind  # "toa", "v1" or "v2"
        self.pp_header = b""
        if kind in ("v1", "v2"):
            self.pp_header = clientaddr.proxy_header(kind, conn.caddr, conn.cport, conn.vaddr, conn.vport)
        self.isn_next = -1  # the client's first sequence number after its SYN
        self.seq_delta = 0  # bytes inserted into the client's stream
        self.toa_sent = False


class FullNat(AddressRewrite):
    method = Method.FULLNAT
    replies_local = True  # replies come to the local address
    toa = True  # TCP without the PROXY protocol: the client's address as TOA (lvsd --fullnat-toa)
    # claim(conn, reply key): the key is ours in the other data path too (None: no other data path)
    claim: Callable[[Conn, bytes], bool] | None = None

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        svc = conn.svc
        pool = [la for la in svc.laddrs if len(la.addr) == len(conn.daddr)]  # local addresses of its family
        if not pool:
            return "no_local_address"
        span = LPORT_MAX - LPORT_MIN + 1
        claim = self.claim
        for _ in range(len(pool)):
            laddr = pool[svc.laddr_cursor % len(pool)]
            svc.laddr_cursor += 1
            for _ in range(min(LPORT_TRIES, span)):
                laddr.next_port = (laddr.next_port + 1) % span
                lport = (LPORT_MIN + laddr.next_port).to_bytes(2, "big")
                out_key = conn.daddr + laddr.addr + conn.dport + lport
                if not conns.in_use(conn.proto, out_key) and (claim is None or claim(conn, out_key)):
                    self._take(conn, laddr, lport)
                    return None
                laddr.conflicts += 1
        return "no_local_port"

    def bind_at(self, conn: Conn, laddr: bytes, lport: bytes) -> str | None:
        """Bind at the local address and port a second data path chose (the caller has checked that the
        reply key is free here); refused if `laddr` is not one of the service's local addresses."""
        for la in conn.svc.laddrs:
            if la.addr == laddr:
                self._take(conn, la, lport)
                return None
        return "no_local_address"

    def _take(self, conn: Conn, laddr: LocalAddress, lport: bytes) -> None:
        conn.laddr, conn.lport, conn.out_key = laddr.addr, lport, conn.daddr + laddr.addr + conn.dport + lport
        conn.local = laddr
        laddr.conns += 1
        self._flows(conn)

    @classmethod
    def template(cls, conn: Conn) -> None:
        """The recipes of `conn` with the unspecified local address and port 0 (nothing taken): what the
        kernel's scheduling fills in per connection (pylvs.datapath.bpf.ksched)."""
        conn.laddr, conn.lport = bytes(len(conn.daddr)), b"\0\0"
        conn.out_key = conn.daddr + conn.laddr + conn.dport + conn.lport
        cls._flows(conn)

    @staticmethod
    def _flows(conn: Conn) -> None:
        client = conn.caddr + conn.vaddr, conn.cport + conn.vport
        local = conn.laddr + conn.daddr, conn.lport + conn.dport
        reply_seen = conn.daddr + conn.laddr, conn.dport + conn.lport
        reply_sent = conn.vaddr + conn.caddr, conn.vport + conn.cport
        # Addresses (8 bytes at IP_SRC) and ports (4 bytes at L4) are rewritten whole.
        conn.in_flow = FlowEntry(conn.proto, conn.in_key, Method.FULLNAT, DIR_IN, *local,
                                 Deltas(client[0], local[0], client[1], local[1]))
        conn.out_flow = FlowEntry(conn.proto, conn.out_key, Method.FULLNAT, DIR_OUT, *reply_sent,
                                  Deltas(reply_seen[0], reply_sent[0], reply_seen[1], reply_sent[1]))
        kind = conn.svc.proxy_protocol or ("toa" if getattr(conn.forwarder, "toa", True) else "")
        if conn.proto == PROTO_TCP and kind:
            conn.slow = ClientAddress(kind, conn)
            if kind == "toa" and len(conn.caddr) == 4 == len(conn.daddr):
                conn.in_flow.flags |= F_TOA  # the kernel may insert it (IPv4 on both sides)
            else:
                conn.in_flow.flags |= F_ENGINE_ONLY
            if kind != "toa":
                conn.out_flow.flags |= F_ENGINE_ONLY

    def release(self, conn: Conn) -> None:
        conn.local.conns -= 1

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        ca: ClientAddress | None = conn.slow
        if ca is not None:
            f = conn.in_flow
            hop = f.hop or self.hop(f, conn.daddr)
            # The checks see the packet as the client sent it; what the client's address adds to it
            # is fragmented if it no longer fits.
            refused = self.egress.refuse(buf, hop.mtu if hop is not None else 0, now)
            if refused is not None:
                return refused
            rebuilt = self._client_addr_in(conn, ca, buf, l4, partial)
            if rebuilt is not None:
                return self._send_rebuilt(conn, rebuilt, l4, partial, now)
        return self.rewrite(conn.in_flow, buf, l4, partial, conn.daddr, now, True)

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        ca: ClientAddress | None = conn.slow
        if ca is not None and ca.pp_header:
            self._client_addr_out(ca, buf, l4, partial)
        return self.rewrite(conn.out_flow, buf, l4, partial, conn.caddr, now, True)

    def _client_addr_in(self, conn: Conn, ca: ClientAddress, buf: Buffer, l4: int,
                        partial: bool) -> bytearray | None:
        """Insert TOA or the PROXY header where due (a new, longer frame), else shift the sequence number."""
        flags = buf[l4 + 13]
        seq = int.from_bytes(buf[l4 + 4:l4 + 8], "big")
        if flags & TCP_SYN:
            ca.isn_next = (seq + 1) & clientaddr.SEQ_MASK
            return None
        end = packet_end(buf)
        if ca.kind == "toa":
            if not flags & TCP_ACK:
                return None
            # Delivered with this ACK: from now on the recipe alone serves the connection.
            conn.slow = None
            conn.in_flow.flags &= ~(F_ENGINE_ONLY | F_TOA)
            self.egress.flows_changed(conn)
            return clientaddr.insert_option(buf, l4, end, clientaddr.toa(*self._client(buf, l4)))
        payload = end - l4 - (buf[l4 + 12] >> 4) * 4
        if seq == ca.isn_next and payload > 0:
            ca.seq_delta = len(ca.pp_header)  # (again, for a retransmission of the first data)
            return clientaddr.insert(buf, l4 + (buf[l4 + 12] >> 4) * 4, end, ca.pp_header)
        if ca.seq_delta and ca.isn_next >= 0 and clientaddr.seq_after_eq(seq, ca.isn_next):
            patch(buf, l4 + 4, (seq + ca.seq_delta) & clientaddr.SEQ_MASK, 4, l4 + TCP_CSUM, partial)
        return None

    @staticmethod
    def _client(buf: Buffer, l4: int) -> tuple[bytes, bytes]:
        if buf[IP] >> 4 == 6:
            return bytes(buf[IP + 8:IP + 24]), bytes(buf[l4:l4 + 2])
        return bytes(buf[IP + IP_SRC:IP + IP_SRC + 4]), bytes(buf[l4:l4 + 2])

    def _send_rebuilt(self, conn: Conn, buf: bytearray, l4: int, partial: bool, now: float) -> Output:
        f = conn.in_flow
        buf[IP + IP_SRC:IP + IP_SRC + 8] = f.addrs
        buf[l4:l4 + 4] = f.ports
        finish_rebuilt(buf, l4, TCP_CSUM, PROTO_TCP, partial)
        return self.egress.send(buf, f.hop or self.hop(f, conn.daddr), conn.daddr, now)

    def _client_addr_out(self, r: ClientAddress, buf: Buffer, l4: int, partial: bool) -> None:
        """Server -> client under the PROXY protocol: lower the MSS, map acknowledgements back."""
        csum = l4 + TCP_CSUM
        if buf[l4 + 13] & TCP_SYN:
            for off, kind, length in clientaddr.tcp_options(buf, l4):
                if kind == 2 and length == 4:  # MSS
                    mss = int.from_bytes(buf[off + 2:off + 4], "big")
                    patch(buf, off + 2, max(mss - len(r.pp_header), 536), 2, csum, partial)
        if not r.seq_delta:
            return
        ack = int.from_bytes(buf[l4 + 8:l4 + 12], "big")
        patch(buf, l4 + 8, self._unshift(r, ack), 4, csum, partial)
        for off, kind, length in clientaddr.tcp_options(buf, l4):
            if kind == 5:  # SACK edges are sequence numbers of the client's stream too
                for edge in range(off + 2, off + length - 3, 4):
                    value = int.from_bytes(buf[edge:edge + 4], "big")
                    patch(buf, edge, self._unshift(r, value), 4, csum, partial)

    @staticmethod
    def _unshift(r: ClientAddress, seq: int) -> int:
        """Server-side sequence number of the client's stream -> the client's own numbering."""
        if not clientaddr.seq_after_eq(seq, r.isn_next):
            return seq
        shifted = (seq - r.seq_delta) & clientaddr.SEQ_MASK
        return shifted if clientaddr.seq_after_eq(shifted, r.isn_next) else r.isn_next

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        return self.translated_error(conn, buf, IP + ihl, IP + totlen, emb, el4, direction, now)

    def translated_error(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
                         now: float) -> Output:
        """An ICMP(v6) error quoting a packet of `conn` (its ICMP header at `l4`), rebuilt for the other side
        (translate.error): from the real server's side, quoting LIP -> RIP, to the client from the VIP,
        quoting the client's packet as the client sent it (its sequence number before the PROXY header);
        from the client's side, quoting VIP -> CIP, to the real server from the local address, quoting
        the server's reply as the server sent it."""
        ca = conn.slow if isinstance(conn.slow, ClientAddress) and conn.slow.seq_delta else None
        seq_map = None
        if direction == DIR_OUT:
            flow, src, towards = conn.out_flow, conn.vaddr, conn.caddr
            quote = conn.caddr, conn.vaddr, conn.cport + conn.vport
            if ca is not None:
                seq_map = 4, lambda seq: self._unshift(ca, seq)
        else:
            flow, src, towards = conn.in_flow, conn.laddr, conn.daddr
            quote = conn.daddr, conn.laddr, conn.dport + conn.lport
            if ca is not None:
                seq_map = 8, lambda ack: self._shift(ca, ack)
        if buf[IP + (7 if buf[IP] >> 4 == 6 else IP_TTL)] <= 1:
            return self.egress.drop("ttl_exceeded")  # an error is never answered with another
        frame = translate.error(buf, l4, end, emb, el4, src, towards, *quote, seq_map)
        if frame is None:
            return self.egress.drop("icmp_untranslatable")
        return self.send_error(frame, flow.hop or self.hop(flow, towards), towards, now)

    def send_error(self, frame: bytearray, hop, towards: bytes, now: float) -> Output:
        return self.egress.send(frame, hop, towards, now)

    @staticmethod
    def _shift(r: ClientAddress, ack: int) -> int:
        """The client's numbering of its stream -> the server's (what _unshift undoes)."""
        return (ack + r.seq_delta) & clientaddr.SEQ_MASK if clientaddr.seq_after_eq(ack, r.isn_next) else ack


def kernel_sent_toa(conn: Conn, tcp_flags: int) -> bool:
    """The kernel forwarded a client segment of `conn` by its request recipe (a reported state change,
    Engine.tcp_transition): while that recipe is marked F_TOA, an ACK without SYN or RST went out with
    the TOA the program inserted (it punts one it cannot insert into). Delivered: the engine inserts none
    and the recipes it writes again carry no mark."""
    f = conn.in_flow
    if (f is None or not f.flags & F_TOA or not isinstance(conn.slow, ClientAddress)
            or tcp_flags & (TCP_SYN | TCP_RST) or not tcp_flags & TCP_ACK):
        return False
    conn.slow = None
    f.flags &= ~F_TOA
    return True
