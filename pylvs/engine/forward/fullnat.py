"""FULLNAT: CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport, and back (ipvs.md §4.6).

Both ends are translated, so the real server only needs a route to the local address (LIP): it may
sit in any network. Local addresses come round-robin from the service's pool; local ports are
taken as the Alibaba LVS kernel does (a per-LIP cursor over [lport_min, lport_max], skipping ports
whose reply key is in use) and are free again when the connection leaves the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pylvs.engine.forward import clientaddr
from pylvs.engine.forward.base import Buffer, Forwarder, Output
from pylvs.engine.forward.rewrite import Deltas, finish, finish_rebuilt, patch
from pylvs.packet.layout import IP, IP_SRC, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_CSUM, TCP_SYN, UDP_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn
    from pylvs.engine.engine import Engine

LPORT_MIN = 5000     # fullnat_lport_min
LPORT_MAX = 65535    # fullnat_lport_max
LPORT_TRIES = 10000  # fullnat_lport_tries


class FullNatRecipe:
    __slots__ = ("in_header", "out_header", "in_deltas", "out_deltas", "client_addr", "pp_header",
                 "isn_next", "seq_delta", "toa_sent")

    def __init__(self, conn: Conn) -> None:
        # How the server learns the client address: "toa", "v1"/"v2" (PROXY protocol), or "" (UDP).
        self.client_addr = "" if conn.proto != PROTO_TCP else (conn.svc.proxy_protocol or "toa")
        self.pp_header = b""
        if self.client_addr in ("v1", "v2"):
            self.pp_header = clientaddr.proxy_header(self.client_addr, conn.caddr, conn.cport, conn.vaddr,
                                                     conn.vport)
        self.isn_next = -1  # the client's first sequence number after its SYN
        self.seq_delta = 0  # bytes inserted into the client's stream
        self.toa_sent = False
        client = conn.caddr + conn.vaddr, conn.cport + conn.vport
        local = conn.laddr + conn.daddr, conn.lport + conn.dport
        reply_seen = conn.daddr + conn.laddr, conn.dport + conn.lport
        reply_sent = conn.vaddr + conn.caddr, conn.vport + conn.cport
        # Addresses (8 bytes at IP_SRC) and ports (4 bytes at L4) are rewritten whole.
        self.in_header = local
        self.out_header = reply_sent
        self.in_deltas = Deltas(client[0], local[0], client[1], local[1])
        self.out_deltas = Deltas(reply_seen[0], reply_sent[0], reply_seen[1], reply_sent[1])


class FullNat(Forwarder):
    sees_replies = True

    def bind(self, engine: Engine, conn: Conn) -> bool:
        svc = conn.svc
        pool = svc.laddrs
        if not pool:
            engine.drops["no_local_address"] += 1
            return False
        lookup = engine.conns.by_proto.setdefault(conn.proto, {})
        span = LPORT_MAX - LPORT_MIN + 1
        for _ in range(len(pool)):
            laddr = pool[svc.laddr_cursor % len(pool)]
            svc.laddr_cursor += 1
            for _ in range(min(LPORT_TRIES, span)):
                laddr.next_port = (laddr.next_port + 1) % span
                lport = (LPORT_MIN + laddr.next_port).to_bytes(2, "big")
                out_key = conn.daddr + laddr.addr + conn.dport + lport
                if out_key not in lookup:
                    conn.laddr, conn.lport, conn.out_key = laddr.addr, lport, out_key
                    conn.recipe = FullNatRecipe(conn)
                    conn.local = laddr
                    laddr.conns += 1
                    return True
                laddr.conflicts += 1
        engine.drops["no_local_port"] += 1
        return False

    def release(self, engine: Engine, conn: Conn) -> None:
        conn.local.conns -= 1

    def inbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        r: FullNatRecipe = conn.recipe
        if r.client_addr:
            rebuilt = self._client_addr_in(r, buf, l4, partial)
            if rebuilt is not None:
                return self._send_rebuilt(engine, conn, rebuilt, l4, partial)
        buf[IP + IP_SRC:IP + IP_SRC + 8] = r.in_header[0]
        buf[l4:l4 + 4] = r.in_header[1]
        hop = conn.in_hop or engine.hop_for(conn, conn.daddr, True)
        return self._send(engine, conn, buf, l4, partial, r.in_deltas, hop, conn.daddr)

    def _client_addr_in(self, r: FullNatRecipe, buf: Buffer, l4: int, partial: bool) -> bytearray | None:
        """Insert TOA or the PROXY header where due (a new, longer frame), else shift the sequence number."""
        flags = buf[l4 + 13]
        seq = int.from_bytes(buf[l4 + 4:l4 + 8], "big")
        if flags & TCP_SYN:
            r.isn_next = (seq + 1) & clientaddr.SEQ_MASK
            return None
        end = IP + (buf[IP + 2] << 8 | buf[IP + 3])
        if r.client_addr == "toa":
            if not r.toa_sent and flags & TCP_ACK:
                r.toa_sent = True
                return clientaddr.insert_option(buf, l4, end, clientaddr.toa(*self._client(buf, l4)))
            return None
        payload = end - l4 - (buf[l4 + 12] >> 4) * 4
        if seq == r.isn_next and payload > 0:
            r.seq_delta = len(r.pp_header)  # (again, for a retransmission of the first data)
            return clientaddr.insert(buf, l4 + (buf[l4 + 12] >> 4) * 4, end, r.pp_header)
        if r.seq_delta and r.isn_next >= 0 and clientaddr.seq_after_eq(seq, r.isn_next):
            patch(buf, l4 + 4, (seq + r.seq_delta) & clientaddr.SEQ_MASK, 4, l4 + TCP_CSUM, partial)
        return None

    @staticmethod
    def _client(buf: Buffer, l4: int) -> tuple[bytes, bytes]:
        return bytes(buf[IP + IP_SRC:IP + IP_SRC + 4]), bytes(buf[l4:l4 + 2])

    def _send_rebuilt(self, engine: Engine, conn: Conn, buf: bytearray, l4: int, partial: bool) -> Output:
        r: FullNatRecipe = conn.recipe
        buf[IP + IP_SRC:IP + IP_SRC + 8] = r.in_header[0]
        buf[l4:l4 + 4] = r.in_header[1]
        hop = conn.in_hop or engine.hop_for(conn, conn.daddr, True)
        if not finish_rebuilt(buf, l4, TCP_CSUM, PROTO_TCP, partial, hop or engine.NO_HOP):
            return engine.ttl_exceeded(buf)
        if hop is None:
            return engine.park(conn.daddr, buf)
        return [(hop.ifindex, buf)]

    def _client_addr_out(self, r: FullNatRecipe, buf: Buffer, l4: int, partial: bool) -> None:
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
    def _unshift(r: FullNatRecipe, seq: int) -> int:
        """Server-side sequence number of the client's stream -> the client's own numbering."""
        if not clientaddr.seq_after_eq(seq, r.isn_next):
            return seq
        shifted = (seq - r.seq_delta) & clientaddr.SEQ_MASK
        return shifted if clientaddr.seq_after_eq(shifted, r.isn_next) else r.isn_next

    def outbound(self, engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool) -> Output:
        r: FullNatRecipe = conn.recipe
        if r.pp_header:
            self._client_addr_out(r, buf, l4, partial)
        buf[IP + IP_SRC:IP + IP_SRC + 8] = r.out_header[0]
        buf[l4:l4 + 4] = r.out_header[1]
        hop = conn.out_hop or engine.hop_for(conn, conn.caddr, False)
        return self._send(engine, conn, buf, l4, partial, r.out_deltas, hop, conn.caddr)

    @staticmethod
    def _send(engine: Engine, conn: Conn, buf: Buffer, l4: int, partial: bool, d: Deltas, hop,
              towards: bytes) -> Output:
        udp = conn.proto == PROTO_UDP
        if not finish(buf, l4, UDP_CSUM if udp else TCP_CSUM, d, partial, udp, hop or engine.NO_HOP):
            return engine.ttl_exceeded(buf)
        if hop is None:
            return engine.park(towards, buf)
        return [(hop.ifindex, buf)]
