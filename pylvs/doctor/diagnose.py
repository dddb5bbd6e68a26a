"""From what the probes saw to what is wrong, in words (sans-I/O: observations in, verdicts out).

Every verdict rests on a packet that came back or on one that did not although a control probe was
answered; where the evidence cannot separate two causes the verdict says so ("could not tell").
"""

from __future__ import annotations

from pylvs.doctor.model import (
    CERTAIN,
    CHECKS,
    LIKELY,
    NA,
    OK,
    OVERHEAD,
    POSSIBLE,
    PROBLEM,
    UNKNOWN,
    Observation,
    Reply,
    Target,
    Verdict,
)

ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED = 3, 11
CODE_PROTO_UNREACH, CODE_PORT_UNREACH, CODE_FRAG_NEEDED = 2, 3, 4
TCP_IP_HEADERS = 40  # what a packet carries beyond its MSS: IPv4 and TCP headers


def answered(reply: Reply | None) -> bool:
    return reply is not None and reply.kind in ("synack", "rst")


def lvs_rs_up(t: Target) -> str:
    tun = f" --tun-type {t.tun_type}" + (f" --tun-port {t.tun_port}" if t.tun_type == "gue" else "")
    return f"on {t.rip}: lvs-rs up --vip {t.vip} --method {t.method}{tun if t.method == 'tun' else ''}"


def client_packet_size(mss: int, client_mtu: int) -> int:
    """The largest packet a client sends: its link's MTU, or less when the real server's MSS says so."""
    return min(client_mtu, mss + TCP_IP_HEADERS) if mss else client_mtu


def tunnel_size(t: Target, mss: int, client_mtu: int) -> int:
    """What the largest client packet weighs inside the tunnel."""
    return client_packet_size(mss, client_mtu) + OVERHEAD[t.tun_type]


def diagnose(t: Target, o: Observation) -> list[Verdict]:
    found = _Diagnosis(t, o).run()
    return [found[name] for name in CHECKS]


class _Diagnosis:
    def __init__(self, t: Target, o: Observation) -> None:
        self.t, self.o = t, o
        self.v: dict[str, Verdict] = {}

    def say(self, check: str, status: str, text: str, certainty: str = CERTAIN, fix: str = "") -> None:
        self.v.setdefault(check, Verdict(check, status, text, certainty if status in (OK, PROBLEM) else "", fix))

    def rest(self, status: str, text: str) -> dict[str, Verdict]:
        for name in CHECKS:
            self.say(name, status, text)
        return self.v

    def run(self) -> dict[str, Verdict]:
        t, o = self.t, self.o
        if t.method == "dr":
            for name in ("decap", "rp_filter", "mtu"):
                self.say(name, NA, "direct routing: no tunnel")
        if o.error:
            self.say("reachable", UNKNOWN, f"could not tell: {o.error}")
            return self.rest(UNKNOWN, "could not tell: not probed")
        if t.method == "dr" and not o.onlink:
            self.say("reachable", PROBLEM, f"{t.rip} is not on a segment of the director (routed via "
                     f"{o.next_hop}): direct routing needs the real server on the director's link",
                     fix="put the real server on a segment of the director, or use -i (tunneling)")
            return self.rest(UNKNOWN, "could not tell: the real server cannot be reached by direct routing")
        if o.next_hop_mac is None:
            who = "the real server" if o.onlink else f"the next hop {o.next_hop}"
            self.say("reachable", PROBLEM, f"{who} does not answer ARP for {o.next_hop}: down, or not on this "
                     f"segment", LIKELY)
            return self.rest(UNKNOWN, "could not tell: no link-layer address to send to")
        self._arp()
        if not (answered(o.method) or answered(o.rip) or answered(o.plain_vip)
                or (o.method is not None and o.method.kind == "icmp")):
            if o.rip is not None and o.rip.kind == "icmp":
                self.say("reachable", PROBLEM, f"{t.rip}:{t.port}: {o.rip.describe()}", LIKELY)
            else:
                self.say("reachable", PROBLEM, f"nothing answers: neither {t.rip}:{t.port} directly nor the VIP "
                         f"through {'the tunnel' if t.method == 'tun' else 'direct routing'} (host down, or a "
                         f"firewall drops the director's packets)", LIKELY)
            return self.rest(UNKNOWN, "could not tell: the real server answers nothing")
        self.say("reachable", OK, "answers" + (f" ({t.rip}:{t.port}: {o.rip.describe()})" if o.rip else ""))
        if t.method == "tun":
            self._tunnel()
        else:
            self._delivered(o.method, "direct routing")
        self._mtu()
        return self.rest(UNKNOWN, "could not tell")

    # -- ARP ----------------------------------------------------------------------------------

    def _arp(self) -> None:
        t, o = self.t, self.o
        if not o.onlink:
            self.say("arp", NA, "not on a segment of the director: its ARP cannot take the VIP from it")
            return
        fix = (f"on {t.rip}: sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 "
               f"(or {lvs_rs_up(t).split(': ', 1)[1]})")
        if o.rs_mac and o.rs_mac in o.vip_arp:
            self.say("arp", PROBLEM, f"{t.rip} ({o.rs_mac}) answers ARP for the VIP {t.vip}: clients' packets "
                     f"go to it instead of the director (arp_ignore/arp_announce not set)", fix=fix)
        elif o.rs_mac and o.rs_mac in o.vip_announced:
            self.say("arp", PROBLEM, f"{t.rip} ({o.rs_mac}) sends ARP requests from the VIP {t.vip}, which "
                     f"teaches its neighbours the VIP's MAC (arp_announce is not 2)", fix=fix)
        elif o.vip_arp:
            self.say("arp", PROBLEM, f"another host on this segment ({', '.join(o.vip_arp)}) answers ARP for "
                     f"the VIP {t.vip}, not the director", fix="find that host (ip neigh, the switch's MAC table) "
                     "and keep it from answering for the VIP")
        else:
            self.say("arp", OK, f"only the director answers ARP for {t.vip} on this segment")

    # -- what came back for a packet to the VIP -------------------------------------------------

    def _delivered(self, reply: Reply | None, how: str) -> None:
        """Verdicts on the VIP, the listening server and the reply's source from one probe's answer."""
        t, o = self.t, self.o
        if reply is None:
            return
        if answered(reply):
            if reply.src == t.vip:
                self.say("vip", OK, f"accepts packets for {t.vip} sent by {how}")
                self.say("reply_source", OK, f"answers from the VIP {t.vip}")
            else:
                self.say("vip", UNKNOWN, f"could not tell: it answered, but from {reply.src} (see reply_source)")
                self.say("reply_source", PROBLEM, f"the answer to a packet for {t.vip}:{t.port} comes from "
                         f"{reply.src}, not from the VIP: clients drop it (the VIP is missing on {t.rip} and "
                         f"something rewrites the destination to {reply.src}, or the server binds {reply.src})",
                         fix=f"{lvs_rs_up(t)}; remove the rewrite, let the server listen on the VIP or 0.0.0.0")
            if not t.tcp_service:
                self.say("listening", NA, "not a TCP service: the probe shows delivery only")
            elif reply.kind == "synack":
                self.say("listening", OK, f"a server listens on port {t.port}")
            else:
                self.say("listening", PROBLEM, f"nothing listens on {t.vip}:{t.port} on {t.rip} (it answered "
                         f"with a RST)", fix=f"on {t.rip}: start the service on port {t.port} (0.0.0.0 or the VIP)")
            return
        if reply.kind == "icmp" and reply.icmp_type == ICMP_TIME_EXCEEDED and not reply.about_outer:
            self.say("vip", PROBLEM, f"{t.rip} forwarded the packet for {t.vip} instead of taking it "
                     f"({reply.describe()}): the VIP is not one of its addresses", fix=lvs_rs_up(t))
        elif reply.kind == "icmp":
            self.say("vip", UNKNOWN, f"could not tell: {reply.describe()}")
        elif answered(o.rip):
            self.say("vip", PROBLEM, f"{t.rip} answers at its own address but not for {t.vip} sent by {how}: the "
                     f"VIP is not on it (or its firewall drops packets for the VIP)", LIKELY, fix=lvs_rs_up(t))
            self.rest(UNKNOWN, "could not tell: nothing answers for the VIP")
        else:
            self.say("vip", UNKNOWN, f"could not tell: no answer for {t.vip}, and none at {t.rip}:{t.port}")

    # -- TUN ----------------------------------------------------------------------------------

    def _tunnel(self) -> None:
        t, o = self.t, self.o
        m = o.method
        dev = {"ipip": "tunl0", "gue": "tunl0", "gre": "gre0"}[t.tun_type]
        rp_fix = (f"on {t.rip}: sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{dev}.rp_filter=0 "
                  f"(the tunnel device; lvs-rs's own: lvsrs0; loose mode, 2, drops too on a device without an "
                  f"IPv4 address)")
        if m is None:
            return
        if answered(m) or (m.kind == "icmp" and not m.about_outer and m.icmp_type == ICMP_TIME_EXCEEDED):
            self.say("decap", OK, f"decapsulates {t.tun_type}")
            self.say("rp_filter", OK, f"accepts the decapsulated packet (source {o.source})", LIKELY)
            self._delivered(m, f"the {t.tun_type} tunnel")
            return
        if m.kind == "icmp" and m.about_outer and m.icmp_type == ICMP_DEST_UNREACH and \
                m.icmp_code in (CODE_PROTO_UNREACH, CODE_PORT_UNREACH):
            self.say("decap", PROBLEM, f"{t.rip} does not decapsulate {t.tun_type}: {m.describe()} for the tunnel "
                     f"packet (no tunnel device, module or decapsulator for it)", fix=lvs_rs_up(t))
            self.rest(UNKNOWN, "could not tell: the packet never got out of the tunnel")
            return
        if m.kind == "icmp":
            self.say("decap", UNKNOWN, f"could not tell: {m.describe()}")
            return
        # No answer at all to the tunnel packet.
        if not answered(o.rip):
            self.say("decap", UNKNOWN, f"could not tell: no answer through the tunnel, and none at {t.rip}:{t.port}")
            return
        self.say("decap", OK, f"takes the {t.tun_type} packets in: no 'unreachable' came back, which a host without "
                 f"a decapsulator for them sends", LIKELY)
        p = o.plain_vip
        if p is None:
            self.say("rp_filter", PROBLEM, f"the packet inside the tunnel gets no answer although {t.rip} answers "
                     f"directly: rp_filter on the tunnel device drops it (the usual cause), or the VIP {t.vip} is "
                     f"not on {t.rip}; from here the two look the same ({t.rip} is not on a segment of the director, "
                     f"so the VIP cannot be probed without the tunnel)", POSSIBLE,
                     fix=f"{rp_fix}; and check the VIP: {lvs_rs_up(t)}")
            self.say("vip", UNKNOWN, "could not tell: see rp_filter")
            self.rest(UNKNOWN, "could not tell: nothing answers through the tunnel")
            return
        self._delivered(p, "direct routing (no tunnel)")
        if answered(p) and p.src == t.vip:
            self.say("rp_filter", PROBLEM, f"{t.rip} answers for {t.vip} without the tunnel but not through it: "
                     f"the decapsulated packet is dropped, by rp_filter on the tunnel device (or a firewall rule "
                     f"on it)", LIKELY, fix=rp_fix)
        else:
            self.say("rp_filter", UNKNOWN, "could not tell: the VIP does not answer without the tunnel either")

    def _mtu(self) -> None:
        t, o = self.t, self.o
        if t.method != "tun":
            return
        if not answered(o.method):
            self.say("mtu", UNKNOWN, "could not tell: a small tunnel packet got no answer")
            return
        size = client_packet_size(o.method.mss, o.client_mtu)
        need = size + OVERHEAD[t.tun_type]
        b = o.big
        told = b is not None and b.kind == "icmp" and b.icmp_type == ICMP_DEST_UNREACH and \
            b.icmp_code == CODE_FRAG_NEEDED and b.icmp_mtu
        inner_mtu = min(o.egress_mtu, b.icmp_mtu if told else o.egress_mtu) - OVERHEAD[t.tun_type]
        fix = (f"raise the MTU of the path between director and {t.rip} to {need} or more, or make {t.rip} "
               f"advertise a smaller MSS: ip route change <its route to the clients> advmss "
               f"{min(inner_mtu, size) - TCP_IP_HEADERS}")
        why = (f"a full-size client packet ({size} bytes: client link {o.client_mtu}"
               f"{f', MSS {o.method.mss}' if o.method.mss else ''}) is {need} bytes in the {t.tun_type} tunnel")
        if need > o.egress_mtu:
            self.say("mtu", PROBLEM, f"{why}, but the director's link to {t.rip} carries {o.egress_mtu}: lvsd must "
                     f"answer such packets with 'fragmentation needed' (MTU {inner_mtu}), and clients behind "
                     f"filters that drop ICMP stall", fix=fix)
            return
        if b is None:
            self.say("mtu", UNKNOWN, "could not tell: the full-size probe was not sent")
        elif answered(b):
            self.say("mtu", OK, f"{why}; such a packet with DF reaches {t.rip}")
        elif told:
            self.say("mtu", PROBLEM, f"{why}, but {b.src} says the path carries only {b.icmp_mtu}: lvsd sends "
                     f"'fragmentation needed' to clients with DF, and the rest is fragmented", fix=fix)
        elif b.kind == "none":
            self.say("mtu", PROBLEM, f"{why}; such a packet with DF got no answer while a small one did: the path "
                     f"to {t.rip} carries less and says nothing (no 'fragmentation needed')", LIKELY, fix=fix)
        else:
            self.say("mtu", UNKNOWN, f"could not tell: the full-size probe got {b.describe()}")
