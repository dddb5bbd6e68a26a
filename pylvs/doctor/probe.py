"""The doctor's I/O: routes and links from the kernel, AF_PACKET sockets, probes out, answers in.

Runs in the director's network namespace beside lvsd. Nothing here changes the host: packets are
sent from the director's own address, so the answers come back to it. lvsd's rings are bound to a
protocol and see only incoming frames, so they never see a probe; what comes back is addressed to
the director's own address, which lvsd's engine and its nftables steering leave alone (steering
drops only packets to a VIP, marked ones, and replies from NAT real servers *not* addressed to the
director); and the doctor reads the answers from its own AF_PACKET sockets, before netfilter. Each
SYN-ACK is answered with a RST through the path the SYN took, so nothing stays open on the real server.
(The director's kernel, which knows nothing of the probe, answers a SYN-ACK with a RST of its own;
it goes to the VIP's route and may be lost, which is harmless.)
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.doctor import frames
from pylvs.doctor.diagnose import answered, tunnel_size
from pylvs.doctor.model import OVERHEAD, Observation, Reply, Target
from pylvs.packet import arp
from pylvs.packet.layout import ETHERTYPE_ARP, ETHERTYPE_IPV4
from pylvs.rs import capture

DEFAULT_TIMEOUT = 1.0  # per round of probes: ARP, then the SYNs, then the full-size tunnel packets
SELECT_STEP = 0.05
SYS_NET = "/sys/class/net"


class RouteError(RuntimeError):
    pass


def ip_json(*args: str) -> list[dict]:
    """`ip -j ...` (iproute2): a route lookup costs a few ms, where importing a netlink library costs a second."""
    try:
        result = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouteError(f"ip {' '.join(args)}: {exc}") from None
    if result.returncode:
        raise RouteError(result.stderr.strip() or f"ip {' '.join(args)} failed")
    return json.loads(result.stdout or "[]")


def to_addresses(addrs: set[bytes]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program that accepts IPv4 packets whose destination is one of `addrs`."""
    program = [(capture.LD_W_ABS, 0, 0, capture.SKF_NET_OFF + 16)]
    for i, addr in enumerate(sorted(addrs)):
        program.append((capture.JEQ_K, len(addrs) - i, 0, int.from_bytes(addr, "big")))  # -> accept
    return [*program, (capture.RET_K, 0, 0, 0), (capture.RET_K, 0, 0, 0x40000)]


@dataclass
class Link:
    name: str
    mac: bytes
    mtu: int
    sockets: list[socket.socket] = field(default_factory=list)  # IPv4, then ARP


def read_links(root: str = SYS_NET) -> list[Link]:
    links = []
    for name in sorted(os.listdir(root)):
        try:
            with open(os.path.join(root, name, "address")) as f:
                mac = f.read().strip() or "00:00:00:00:00:00"
            with open(os.path.join(root, name, "mtu")) as f:
                mtu = int(f.read())
        except (OSError, ValueError):
            continue  # gone meanwhile, or no link-layer address
        links.append(Link(name, _mac_bytes(mac) if len(mac) == 17 else bytes(6), mtu))
    return links


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class Path:
    """How one target is reached: the link, our address on it, the next hop and its MAC."""

    target: Target
    obs: Observation
    link: Link | None = None
    src: bytes = b""
    hop: bytes = b""
    hop_mac: bytes | None = None  # on a shared segment: the real server's own MAC


@dataclass
class Probe:
    path: Path
    which: str                    # the Observation field it fills: method, plain_vip, rip, big
    rst: Callable[[int, int, int], bytes]  # (sport, dport, seq) -> a RST that goes where the SYN went
    reply: Reply | None = None


class Prober:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.links: dict[str, Link] = {}
        self.own_macs: set[bytes] = set()
        self.probes: dict[int, Probe] = {}
        self._next_id = random.randrange(1024, 30000)
        self.paths: list[Path] = []

    # -- setup --------------------------------------------------------------------------------

    def _read_links(self) -> None:
        for link in read_links():
            self.links[link.name] = link
            self.own_macs.add(link.mac)

    def _client_mtu(self, fallback: int) -> int:
        """The MTU towards the clients: the link of the default route (lvsd's clients come from there)."""
        try:
            routes = ip_json("-4", "route", "show", "default")
        except RouteError:
            return fallback
        for route in routes:
            link = self.links.get(route.get("dev", ""))
            if link is not None:
                return link.mtu
        return fallback

    def _path(self, t: Target) -> Path:
        p = Path(t, Observation())
        try:
            route = ip_json("-4", "route", "get", t.rip)[0]
        except (RouteError, IndexError) as exc:
            p.obs.error = f"no route to {t.rip}: {exc}"
            return p
        link = self.links.get(route.get("dev", ""))
        src = route.get("prefsrc")
        if link is None or not src or link.mac == bytes(6) or route.get("type", "unicast") != "unicast":
            p.obs.error = f"the route to {t.rip} leaves through no Ethernet link with an address"
            return p
        gateway = route.get("gateway")
        p.link, p.src = link, socket.inet_aton(src)
        p.hop = socket.inet_aton(gateway or t.rip)
        p.obs.source, p.obs.onlink, p.obs.next_hop = src, gateway is None, gateway or t.rip
        p.obs.egress_mtu = link.mtu
        p.obs.client_mtu = self._client_mtu(link.mtu)
        return p

    def _open(self, link: Link, addrs: set[bytes]) -> None:
        """An IPv4 socket that takes only what is addressed to `addrs` (a busy director's traffic stays in
        the kernel), and an ARP one; first the IPv4 one, which probes are also sent from."""
        if link.sockets:
            return
        try:
            for proto in (ETHERTYPE_IPV4, ETHERTYPE_ARP):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
                link.sockets.append(sock)
                if proto == ETHERTYPE_IPV4:
                    capture.attach_filter(sock, to_addresses(addrs))
                    capture.set_rcvbuf(sock)
                sock.setblocking(False)
                sock.bind((link.name, proto))
        except OSError:
            for sock in link.sockets:
                sock.close()
            link.sockets.clear()
            raise

    def close(self) -> None:
        for link in self.links.values():
            for sock in link.sockets:
                sock.close()
            link.sockets.clear()

    # -- the rounds ---------------------------------------------------------------------------

    def run(self, targets: list[Target]) -> list[Observation]:
        try:
            self._read_links()
            self.paths = [self._path(t) for t in targets]
            for p in self.paths:
                if p.link is not None:
                    try:
                        self._open(p.link, {q.src for q in self.paths if q.link is p.link})
                    except OSError as exc:  # no CAP_NET_RAW, or the link went away
                        p.obs.error = f"cannot open a packet socket on {p.link.name}: {exc.strerror or exc}"
                        p.link = None
            live = [p for p in self.paths if p.link is not None]
            self._arp_round(live)
            for p in live:
                if p.hop_mac is not None:
                    p.obs.next_hop_mac = _mac_text(p.hop_mac)
                    if p.obs.onlink:
                        p.obs.rs_mac = p.obs.next_hop_mac
            ready = [p for p in live if p.hop_mac is not None]
            self._round([probe for p in ready for probe in self._syn_probes(p)])
            self._round([probe for p in ready for probe in self._big_probe(p)])
            self._attribute_arp(live)  # ARP seen in any round counts
            return [p.obs for p in self.paths]
        finally:
            self.close()

    @staticmethod
    def _attribute_arp(paths: list[Path]) -> None:
        """A MAC answering for the VIP that is another real server's is that one's finding, not everyone's."""
        for p in paths:
            others = {q.obs.rs_mac for q in paths if q.link is p.link and q.obs.rs_mac != p.obs.rs_mac}
            p.obs.vip_arp = [m for m in p.obs.vip_arp if m not in others]
            p.obs.vip_announced = [m for m in p.obs.vip_announced if m not in others]

    def _send(self, link: Link, frame: bytes, arp_frame: bool = False) -> None:
        try:
            link.sockets[1 if arp_frame else 0].send(frame)
        except OSError:
            pass  # a full queue or a vanished link: the probe goes unanswered and says so

    def _arp_round(self, paths: list[Path]) -> None:
        asks = {(p.link.name, p.src, p.hop) for p in paths}
        vips = {(p.link.name, p.src, socket.inet_aton(p.target.vip)) for p in paths if p.obs.onlink}
        # Answers on a segment take well under a millisecond; a second request covers one lost frame.
        for resend in (0, 1):
            for name, src, target in sorted(asks | vips if not resend else asks):
                link = self.links[name]
                self._send(link, arp.request(link.mac, src, target), arp_frame=True)
            self._listen(self.timeout / 4, lambda: all(p.hop_mac is not None for p in paths) and not vips)

    def _probe(self, path: Path, which: str, dst: bytes, ttl: int, wrap: Callable[[bytes, int], bytes] | None = None,
               size: int = 0) -> Probe:
        """A SYN to `dst` (wrapped in the tunnel, if given) to the next hop. Its SYN-ACK is answered with a RST
        the same way and to the same address: whatever rewrite the SYN met on the real server, the RST
        meets too, and finds the connection."""
        ident = self._next_id
        self._next_id += 1
        link, port = path.link, path.target.port

        def frame(packet: bytes) -> bytes:
            return frames.ethernet(path.hop_mac, link.mac, wrap(packet, ident) if wrap else packet)

        def rst(sport: int, dport: int, seq: int) -> bytes:
            return frame(frames.rst(path.src, dst, sport, dport, seq, ident))

        probe = Probe(path, which, rst)
        self.probes[ident] = probe
        self._send(link, frame(frames.syn(path.src, dst, ident, port, ident, ttl, size)))
        return probe

    def _tunnel(self, path: Path) -> Callable[[bytes, int], bytes]:
        t = path.target
        rip = socket.inet_aton(t.rip)
        return lambda inner, ident: frames.encapsulate(t.tun_type, path.src, rip, inner, ident, t.tun_port)

    def _syn_probes(self, p: Path) -> list[Probe]:
        t = p.target
        vip, rip = socket.inet_aton(t.vip), socket.inet_aton(t.rip)
        # TTL 1 for the VIP: a host that does not own it cannot pass it on (it answers "time exceeded").
        probes = [self._probe(p, "rip", rip, 64)]
        if t.method == "dr":
            probes.append(self._probe(p, "method", vip, 1))
        else:
            probes.append(self._probe(p, "method", vip, 1, self._tunnel(p)))
            if p.obs.onlink:
                probes.append(self._probe(p, "plain_vip", vip, 1))
        return probes

    def _big_probe(self, p: Path) -> list[Probe]:
        t, o = p.target, p.obs
        if t.method != "tun" or not answered(o.method):
            return []
        size = tunnel_size(t, o.method.mss, o.client_mtu)
        if size > o.egress_mtu:
            return []  # the director cannot send it: the diagnosis says so from the MTUs alone
        o.big_size = size
        return [self._probe(p, "big", socket.inet_aton(t.vip), 1, self._tunnel(p), size - OVERHEAD[t.tun_type])]

    def _round(self, probes: list[Probe]) -> None:
        if not probes:
            return
        self._listen(self.timeout, lambda: all(pr.reply is not None for pr in probes))
        for pr in probes:
            setattr(pr.path.obs, pr.which, pr.reply or Reply("none"))

    # -- listening ------------------------------------------------------------------------------

    def _listen(self, seconds: float, done: Callable[[], bool]) -> None:
        socks = {s.fileno(): s for link in self.links.values() for s in link.sockets}
        if not socks:
            return
        poller = select.poll()
        for fd in socks:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in poller.poll(min(left, SELECT_STEP) * 1000):
                self._drain(socks[fd])

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                frame, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            if addr[1] == ETHERTYPE_ARP:
                self._arp_frame(frame)
            else:
                self._ip_frame(frame)

    def _arp_frame(self, frame: bytes) -> None:
        parsed = frames.parse_arp(frame)
        if parsed is None or parsed[1] in self.own_macs:
            return
        op, sha, spa, tpa = parsed
        for p in self.paths:
            if p.link is None:
                continue
            if op == arp.OP_REPLY and spa == p.hop and tpa == p.src:
                p.hop_mac = sha
            if p.obs.onlink and spa == socket.inet_aton(p.target.vip):
                seen = p.obs.vip_arp if op == arp.OP_REPLY else p.obs.vip_announced
                if _mac_text(sha) not in seen:
                    seen.append(_mac_text(sha))

    def _ip_frame(self, frame: bytes) -> None:
        for src in {p.src for p in self.paths if p.link is not None}:
            answer = frames.parse_ipv4(frame, src)
            if answer is not None:
                break
        else:
            return
        probe = self.probes.get(answer.key)
        if probe is None or probe.path.src != src:
            return
        t = probe.path.target
        if answer.kind == "icmp" and answer.quoted_dst not in (socket.inet_aton(t.vip), socket.inet_aton(t.rip)):
            return  # an error about another packet of this host that happens to carry the same IP ID
        if answer.kind == "synack":
            self._send(probe.path.link, probe.rst(answer.key, answer.sport, answer.ack))
        if probe.reply is None:
            probe.reply = Reply(answer.kind, socket.inet_ntoa(answer.src), answer.mss, answer.icmp_type,
                                answer.icmp_code, answer.icmp_mtu, answer.about_outer)
