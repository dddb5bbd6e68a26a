"""The SYN proxy of a virtual service (DPVS's and Alibaba LVS's synproxy), in the engine's slow path.

1. A client's SYN is answered by the director with a SYN-ACK whose sequence number is a SYN cookie
   (pylvs.engine.syncookie): no state is kept, a retransmitted SYN gets a fresh SYN-ACK.
2. The client's ACK is checked (cookie, age, the options echoed in its timestamp); a bad one is dropped
   and counted (`synproxy_bad_cookie`). A good one is scheduled like a SYN; the connection gets a
   `ProxiedConn` and the director sends the real server a SYN with the client's ISN and the options the
   cookie gave back. The ACK (with any data) and what the client sends next are held (up to
   SETUP_QUEUE frames); the SYN is sent again every SYN_RETRY seconds while the client sends.
3. The real server's SYN-ACK is not forwarded: it fixes the deltas, and the held frames are replayed to
   it. A RST instead is sent on to the client, in the client's numbering.
4. From then on every packet of the connection is shifted: client -> server acknowledgements and SACK
   edges up by (server ISN - cookie), server -> client sequence numbers down by as much; the server's
   timestamps are moved onto the clock the client saw in the SYN-ACK (and the client's echoes back);
   windows are rescaled when the real server's window scale differs from the one the director
   announced (OUR_WSCALE) or it does not scale at all. Both directions of such a connection are
   engine-only for life: the FlowEntry layout has no place for these deltas.

It needs the server's replies: NAT and FULLNAT. With DR and TUN the SYN-ACK goes from the real server
to the client directly and could not be shifted; such a connection is dropped (`synproxy_no_replies`).

IPv6 services (NAT66, FULLNAT with IPv6 local addresses, and NAT64) work alike: the client's side is
IPv6, so are the SYN-ACK, the SYN and the ACK the proxy makes (hop limit instead of TTL, no header
checksum, the MSS less 60 bytes of headers, Linux's IPv6 cookie MSS table); only TCP fields are
shifted, whatever the family of either side.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from pylvs.engine.egress import NOTHING, Buffer, Egress, Output
from pylvs.engine.egress6 import Egress6, packet_end
from pylvs.engine.flow import F_ENGINE_ONLY
from pylvs.engine.forward.base import Forwarder
from pylvs.engine.forward.clientaddr import proxy_header, tcp_options
from pylvs.engine.syncookie import SEQ_MASK, SynCookies, decode_ts, encode_ts
from pylvs.packet import checksum, icmp
from pylvs.packet import ipv6 as v6
from pylvs.packet.layout import ETHERTYPE_IPV4, IP, PROTO_TCP, TCP_ACK, TCP_CSUM, TCP_RST, TCP_SYN
from pylvs.packet.vnet import EMPTY as EMPTY_VNET
from pylvs.packet.vnet import F_NEEDS_CSUM

if TYPE_CHECKING:
    from pylvs.engine.conntrack import Conn, ConnTable
    from pylvs.engine.services import VirtualService

OUR_WSCALE = 7       # the window scale the director announces (Linux's for its default buffers)
SETUP_QUEUE = 16     # client frames held per connection until the real server answers (IW10 fits)
SYN_RETRY = 1.0      # seconds before the SYN to a silent real server is sent again
DEFAULT_MTU = 1500   # the client's link, while there is no route to it
TCP_HEADERS = 40     # IPv4 + TCP, what the MSS leaves out of the MTU
TCP_HEADERS6 = 60    # IPv6 + TCP
OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_SACK, OPT_TS = 2, 3, 4, 5, 8
_OPT_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_TS: 10}
_TCP = struct.Struct("!2s2sIIBBHHH")
_ETH = b"\0" * 12 + ETHERTYPE_IPV4.to_bytes(2, "big")  # MACs are set by Egress.send
_ETH6 = b"\0" * 12 + v6.ETHERTYPE_IPV6.to_bytes(2, "big")


class Handshake:
    """What a client's valid cookie ACK proves: its ISN, the director's, and the SYN's options."""

    __slots__ = ("client_isn", "cookie", "mss", "wscale", "sack", "ts", "window")

    def __init__(self, client_isn: int, cookie: int, mss: int, wscale: int | None, sack: bool,
                 ts: tuple[int, int] | None, window: int) -> None:
        self.client_isn, self.cookie, self.mss = client_isn, cookie, mss
        self.wscale, self.sack = wscale, sack
        self.ts = ts  # (the client's TSval, the director's TSval it echoes) of the ACK
        self.window = window


class ProxiedConn:
    """The SYN proxy's state of one connection (`Conn.synproxy`)."""

    __slots__ = ("hs", "rs_isn", "seq_delta", "ts_delta", "win_in", "win_out", "held", "syn", "syn_at")

    def __init__(self, hs: Handshake, syn: bytes, now: float) -> None:
        self.hs = hs
        self.rs_isn: int | None = None  # set by the real server's SYN-ACK: setup is over
        self.seq_delta = 0  # server ISN - cookie ISN
        self.ts_delta: int | None = None  # director's TSval - server's TSval, when both use timestamps
        self.win_in = 0  # left shift of client windows (the server does not scale)
        self.win_out: tuple[int, int] | None = None  # (server's shift, the client's idea of it)
        self.held: list[tuple[bytearray, bool]] = []  # (frame, whether the engine has counted it)
        self.syn, self.syn_at = syn, now


def _u32(buf: Buffer, off: int) -> int:
    return int.from_bytes(buf[off:off + 4], "big")


def _patch(buf: Buffer, l4: int, off: int, value: int, size: int, partial: bool) -> None:
    """Overwrite a field of the TCP header at any alignment, keeping a complete checksum right."""
    start = off - ((off - l4) & 1)
    end = off + size + ((off + size - l4) & 1)
    old = bytes(buf[start:end])
    buf[off:off + size] = value.to_bytes(size, "big")
    if not partial:
        c = l4 + TCP_CSUM
        value = checksum.apply(buf[c] << 8 | buf[c + 1], checksum.delta(old, bytes(buf[start:end])))
        buf[c:c + 2] = value.to_bytes(2, "big")


def _options(buf: Buffer, l4: int) -> dict[int, int]:
    """kind -> offset of the first option of each kind (lengths checked for the kinds read here)."""
    found: dict[int, int] = {}
    for off, kind, length in tcp_options(buf, l4):
        if kind not in found and length == _OPT_LEN.get(kind, length):
            found[kind] = off
    return found


def _addrs(buf: Buffer) -> tuple[bytes, bytes]:
    """(source, destination) of the IPv4 or IPv6 packet in frame `buf`."""
    if buf[IP] >> 4 == 6:
        return bytes(buf[IP + v6.V6_SRC:IP + v6.V6_SRC + 16]), bytes(buf[IP + v6.V6_DST:IP + v6.V6_DST + 16])
    return bytes(buf[IP + 12:IP + 16]), bytes(buf[IP + 16:IP + 20])


def _ttl(buf: Buffer) -> int:
    return buf[IP + v6.V6_HLIM] if buf[IP] >> 4 == 6 else buf[IP + 8]


def _located(frame: Buffer) -> tuple[int, int]:
    """(TCP header offset, IP packet length) of a client frame the engine parsed or the proxy made."""
    if frame[IP] >> 4 == 6:
        end = packet_end(frame)
        parsed = v6.walk(frame, end)
        assert parsed is not None  # the engine walked it when it came in
        return parsed.l4, end - IP
    return IP + ((frame[IP] & 0x0F) << 2), frame[IP + 2] << 8 | frame[IP + 3]


def _segment(src: bytes, dst: bytes, sport: bytes, dport: bytes, seq: int, ack: int, flags: int,
             window: int, options: bytes, ttl: int = 64) -> bytes:
    """A TCP segment in IPv4 (DF set) or, for 16-byte addresses, IPv6; checksums complete."""
    hdr = bytearray(_TCP.pack(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, (5 + len(options) // 4) << 4, flags,
                              min(window, 0xFFFF), 0, 0)) + options
    if len(src) == 16:
        hdr[TCP_CSUM:TCP_CSUM + 2] = checksum.checksum(hdr, v6.pseudo_sum(src, dst, PROTO_TCP, len(hdr))).to_bytes(
            2, "big")
        return v6.header(src, dst, PROTO_TCP, len(hdr), ttl) + bytes(hdr)
    pseudo = checksum.pseudo_header_sum(src, dst, PROTO_TCP, len(hdr))
    hdr[TCP_CSUM:TCP_CSUM + 2] = checksum.checksum(hdr, pseudo).to_bytes(2, "big")
    return icmp.ipv4_header(src, dst, PROTO_TCP, len(hdr), ttl=ttl, df=True) + bytes(hdr)


def _frame(packet: bytes) -> bytearray:
    """A frame around a packet the proxy made for the client's side (MACs set when it leaves)."""
    return bytearray(EMPTY_VNET + (_ETH6 if packet[0] >> 4 == 6 else _ETH) + packet)


def _syn_options(mss: int, wscale: int | None, sack: bool, ts: tuple[int, int] | None) -> bytes:
    """MSS, then SACK permitted and timestamps, then window scale, laid out as Linux sends them."""
    out = struct.pack("!BBH", OPT_MSS, 4, mss)
    if ts is not None:
        out += (b"\x04\x02" if sack else b"\x01\x01") + struct.pack("!BBII", OPT_TS, 10, *ts)
        if wscale is not None:
            out += struct.pack("!BBBB", 1, OPT_WSCALE, 3, wscale)
    return out


class SynProxy:
    """Cookies, handshakes and shifting for every SYN-proxy service of one engine.

    `inject(conn, frame, l4, totlen, now)` is the engine's path for a client frame of a known connection
    (state, counters, then the connection's forwarder); the proxy uses it for the SYN it makes and for
    the client's ACK it held.
    """

    def __init__(self, egress: Egress, inject: Callable[[Conn, bytearray, int, int, float], Output],
                 secret: bytes | None = None) -> None:
        self.egress = egress
        self.egress6 = Egress6(egress)
        self.inject = inject
        self.cookies = SynCookies(secret)
        self.counters: Counter[str] = Counter()  # syn_acks, handshakes, established, rs_resets
        self._wrapped: dict[int, SynProxied] = {}

    # -- before a connection exists: SYN -> SYN-ACK, ACK -> Handshake ---------------------------

    def screen(self, svc: VirtualService, buf: Buffer, l4: int, flags: int, now: float) -> Handshake | Output:
        """A segment for no known connection of a SYN-proxy service: the answer, or the proven handshake."""
        if flags & TCP_RST or (flags & TCP_SYN and flags & TCP_ACK) or not flags & (TCP_SYN | TCP_ACK):
            return self.egress.drop("no_conn")
        if flags & TCP_SYN:
            return self._syn_ack(svc, buf, l4, now)
        hs = self._check(buf, l4, now)
        if hs is None:
            return self.egress.drop("synproxy_bad_cookie")
        self.counters["handshakes"] += 1
        return hs

    def _syn_ack(self, svc: VirtualService, buf: Buffer, l4: int, now: float) -> Output:
        caddr, vaddr = _addrs(buf)
        cport, vport = bytes(buf[l4:l4 + 2]), bytes(buf[l4 + 2:l4 + 4])
        isn = _u32(buf, l4 + 4)
        opts = _options(buf, l4)
        mss = int.from_bytes(buf[opts[OPT_MSS] + 2:opts[OPT_MSS] + 4], "big") if OPT_MSS in opts else 536
        ts = (_u32(buf, opts[OPT_TS] + 2), 0) if OPT_TS in opts else None
        # Without timestamps the cookie cannot carry window scale and SACK: neither is offered then.
        wscale = min(buf[opts[OPT_WSCALE] + 2], 14) if OPT_WSCALE in opts and ts else None
        sack = OPT_SACK_PERM in opts and ts is not None
        cookie, _ = self.cookies.make(caddr + vaddr + cport + vport, isn, mss, now)
        headers = TCP_HEADERS6 if len(caddr) == 16 else TCP_HEADERS
        hop = self.egress.hop(caddr)
        own_mss = (hop.mtu if hop is not None else DEFAULT_MTU) - headers
        if svc.proxy_protocol:  # the PROXY header goes in front of the first data
            own_mss -= len(proxy_header(svc.proxy_protocol, caddr, cport, vaddr, vport))
        if ts is not None:
            ts = (encode_ts(now, wscale, sack), ts[0])
        options = _syn_options(own_mss, OUR_WSCALE if wscale is not None else None, sack, ts)
        # The window lets the client send no more before the real server answers than is held for it.
        window = SETUP_QUEUE * own_mss
        self.counters["syn_acks"] += 1
        segment = _segment(vaddr, caddr, vport, cport, cookie, isn + 1, TCP_SYN | TCP_ACK, window, options)
        return (self.egress6 if len(caddr) == 16 else self.egress).send_ip(segment, now)

    def _check(self, buf: Buffer, l4: int, now: float) -> Handshake | None:
        caddr, vaddr = _addrs(buf)
        tuple4 = caddr + vaddr + bytes(buf[l4:l4 + 4])
        client_isn = (_u32(buf, l4 + 4) - 1) & SEQ_MASK
        cookie = (_u32(buf, l4 + 8) - 1) & SEQ_MASK
        mss = self.cookies.check(tuple4, client_isn, cookie, now)
        if mss is None:
            return None
        opts = _options(buf, l4)
        wscale, sack, ts = None, False, None
        if OPT_TS in opts:
            ts = (_u32(buf, opts[OPT_TS] + 2), _u32(buf, opts[OPT_TS] + 6))
            decoded = decode_ts(ts[1])
            if decoded is None:
                return None
            wscale, sack = decoded
        return Handshake(client_isn, cookie, mss, wscale, sack, ts, buf[l4 + 14] << 8 | buf[l4 + 15])

    # -- the connection: SYN to the real server, its answer, the shifting -----------------------

    def open(self, conn: Conn, hs: Handshake, buf: Buffer, now: float) -> Output:
        """The ACK `buf` proved `hs` and `conn` was scheduled for it: hold the ACK, send the SYN."""
        inner = conn.forwarder
        if not inner.sees_replies:
            return self.egress.drop("synproxy_no_replies")  # the new entry expires in its initial 3 s
        wrapped = self._wrapped.get(id(inner))
        if wrapped is None:
            wrapped = self._wrapped[id(inner)] = SynProxied(inner, self)
        conn.forwarder = wrapped
        for flow in (conn.in_flow, conn.out_flow):
            flow.flags |= F_ENGINE_ONLY
        syn = self._syn_frame(conn, hs, _ttl(buf))
        st = conn.synproxy = ProxiedConn(hs, bytes(syn), now)
        st.held.append((bytearray(buf), False))
        return self._inject(conn, syn, now)

    def _inject(self, conn: Conn, frame: bytearray, now: float) -> Output:
        return self.inject(conn, frame, *_located(frame), now)

    @staticmethod
    def _syn_frame(conn: Conn, hs: Handshake, ttl: int) -> bytearray:
        """The client's SYN as the cookie gave it back (its window, never scaled in a SYN, from the ACK)."""
        ts = (hs.ts[0], 0) if hs.ts is not None else None
        window = hs.window << (hs.wscale or 0)
        return _frame(_segment(conn.caddr, conn.vaddr, conn.cport, conn.vport, hs.client_isn, 0, TCP_SYN, window,
                               _syn_options(hs.mss, hs.wscale, hs.sack, ts), ttl))

    def hold(self, conn: Conn, st: ProxiedConn, buf: Buffer, l4: int, now: float) -> Output:
        """A client frame before the real server answered: held for it; the SYN again if it is late."""
        if buf[l4 + 13] & TCP_SYN or len(st.held) >= SETUP_QUEUE:
            return self.egress.drop("synproxy_setup")
        st.held.append((bytearray(buf), True))
        if now - st.syn_at < SYN_RETRY:
            return NOTHING
        st.syn_at = now
        return self._inject(conn, bytearray(st.syn), now)

    def answer(self, conn: Conn, st: ProxiedConn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        """The real server's answer to the SYN: a SYN-ACK ends the setup, a RST goes on to the client."""
        hs = st.hs
        flags = buf[l4 + 13]
        if flags & TCP_RST:
            self.counters["rs_resets"] += 1
            st.held.clear()
            _patch(buf, l4, l4 + 4, (hs.cookie + 1) & SEQ_MASK, 4, partial)  # what the client expects next
            return conn.forwarder.inner.outbound(conn, buf, l4, partial, now)
        if flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK or _u32(buf, l4 + 8) != (hs.client_isn + 1) & SEQ_MASK:
            return self.egress.drop("synproxy_setup")
        st.rs_isn = _u32(buf, l4 + 4)
        st.seq_delta = (st.rs_isn - hs.cookie) & SEQ_MASK
        opts = _options(buf, l4)
        if hs.ts is not None and OPT_TS in opts:
            st.ts_delta = (hs.ts[1] - _u32(buf, opts[OPT_TS] + 2)) & SEQ_MASK
        rs_wscale = buf[opts[OPT_WSCALE] + 2] if OPT_WSCALE in opts and hs.wscale is not None else None
        if hs.wscale is not None and rs_wscale is None:
            st.win_in = hs.wscale  # the server reads the client's windows unscaled
        announced = OUR_WSCALE if hs.wscale is not None else 0
        if (rs_wscale or 0) != announced:
            st.win_out = (min(rs_wscale or 0, 14), announced)
        self.counters["established"] += 1
        held, st.held = st.held, []
        out: Output = []
        for frame, counted in held:
            if counted:  # seen by the engine when it came: only forward it now
                out += conn.forwarder.inbound(conn, frame, _located(frame)[0], bool(frame[0] & F_NEEDS_CSUM), now)
            else:
                out += self._inject(conn, frame, now)
        return out

    def ack_again(self, conn: Conn, st: ProxiedConn, now: float) -> Output:
        """The real server sent its SYN-ACK again (our ACK was lost): acknowledge it once more."""
        hs = st.hs
        ts = struct.pack("!BBBBII", 1, 1, OPT_TS, 10, *hs.ts) if hs.ts is not None else b""
        frame = _frame(_segment(conn.caddr, conn.vaddr, conn.cport, conn.vport, hs.client_isn + 1, hs.cookie + 1,
                                TCP_ACK, hs.window, ts))
        return conn.forwarder.inbound(conn, frame, _located(frame)[0], False, now)

    @staticmethod
    def shift_in(st: ProxiedConn, buf: Buffer, l4: int, partial: bool) -> None:
        """Client -> server: acknowledgements and SACK edges into the server's numbering, TSecr onto its clock."""
        delta = st.seq_delta
        if buf[l4 + 13] & TCP_ACK:
            _patch(buf, l4, l4 + 8, (_u32(buf, l4 + 8) + delta) & SEQ_MASK, 4, partial)
        if (buf[l4 + 12] >> 4) > 5:
            for off, kind, length in tcp_options(buf, l4):
                if kind == OPT_SACK:
                    for edge in range(off + 2, off + length - 3, 4):
                        _patch(buf, l4, edge, (_u32(buf, edge) + delta) & SEQ_MASK, 4, partial)
                elif kind == OPT_TS and length == 10 and st.ts_delta is not None:
                    _patch(buf, l4, off + 6, (_u32(buf, off + 6) - st.ts_delta) & SEQ_MASK, 4, partial)
        if st.win_in:
            window = buf[l4 + 14] << 8 | buf[l4 + 15]
            _patch(buf, l4, l4 + 14, min(window << st.win_in, 0xFFFF), 2, partial)

    @staticmethod
    def shift_out(st: ProxiedConn, buf: Buffer, l4: int, partial: bool) -> None:
        """Server -> client: sequence numbers into the cookie's numbering, TSval onto the SYN-ACK's clock."""
        _patch(buf, l4, l4 + 4, (_u32(buf, l4 + 4) - st.seq_delta) & SEQ_MASK, 4, partial)
        if st.ts_delta is not None and (buf[l4 + 12] >> 4) > 5:
            for off, kind, length in tcp_options(buf, l4):
                if kind == OPT_TS and length == 10:
                    _patch(buf, l4, off + 2, (_u32(buf, off + 2) + st.ts_delta) & SEQ_MASK, 4, partial)
        if st.win_out is not None:
            window = buf[l4 + 14] << 8 | buf[l4 + 15]
            scaled = min((window << st.win_out[0]) >> st.win_out[1], 0xFFFF)
            _patch(buf, l4, l4 + 14, scaled or (1 if window else 0), 2, partial)


class SynProxied(Forwarder):
    """A method's forwarder with the SYN proxy in front: holds, shifts, then lets the method rewrite."""

    sees_replies = True

    def __init__(self, inner: Forwarder, proxy: SynProxy) -> None:
        super().__init__(inner.egress)
        self.inner, self.proxy = inner, proxy
        self.method = inner.method

    def bind(self, conn: Conn, conns: ConnTable) -> str | None:
        return self.inner.bind(conn, conns)

    def release(self, conn: Conn) -> None:
        self.inner.release(conn)

    def icmp(self, conn: Conn, buf: Buffer, ihl: int, totlen: int, emb: int, el4: int, direction: int,
             now: float) -> Output:
        return self.inner.icmp(conn, buf, ihl, totlen, emb, el4, direction, now)

    def icmp6(self, conn: Conn, buf: Buffer, l4: int, end: int, emb: int, el4: int, direction: int,
              now: float) -> Output:
        return self.inner.icmp6(conn, buf, l4, end, emb, el4, direction, now)  # type: ignore[attr-defined]

    def inbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        st: ProxiedConn = conn.synproxy
        if st.rs_isn is None:
            if buf[l4 + 13] & TCP_SYN and not buf[l4 + 13] & TCP_ACK and bytes(buf) == st.syn:
                return self.inner.inbound(conn, buf, l4, partial, now)  # the proxy's own SYN
            return self.proxy.hold(conn, st, buf, l4, now)
        self.proxy.shift_in(st, buf, l4, partial)
        out = self.inner.inbound(conn, buf, l4, partial, now)
        conn.in_flow.flags |= F_ENGINE_ONLY  # FULLNAT lifts it once TOA is sent; the shift stays here
        return out

    def outbound(self, conn: Conn, buf: Buffer, l4: int, partial: bool, now: float) -> Output:
        st: ProxiedConn = conn.synproxy
        if st.rs_isn is None:
            return self.proxy.answer(conn, st, buf, l4, partial, now)
        if buf[l4 + 13] & TCP_SYN:
            return self.proxy.ack_again(conn, st, now)
        self.proxy.shift_out(st, buf, l4, partial)
        return self.inner.outbound(conn, buf, l4, partial, now)
