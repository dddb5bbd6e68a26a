"""The master's policy (ipvs.md §5): which connections are sent, when, and how messages fill and leave."""

from __future__ import annotations

import socket

from scapy.layers.inet import TCP, UDP

from pylvs.engine import tcpstate
from pylvs.engine.services import SVC_F_PERSISTENT, Method, VirtualService, pack_ip
from pylvs.ipvs_uapi import CONN_F_FWD_MASK, CONN_F_INACTIVE, CONN_F_MASQ, CONN_F_NOOUTPUT, CONN_F_TEMPLATE
from pylvs.sync import proto
from pylvs.sync.config import SyncSettings
from pylvs.sync.master import SyncMaster
from tests.unit.director import CLIENT, RIPS, VIP, frame, from_client, from_rs, make_engine


class Lab:
    """An engine with a master hooked in; `sent` collects the messages it hands to the network."""

    def __init__(self, maxlen: int = 1472, settings: SyncSettings | None = None, **engine_kw) -> None:
        self.engine = make_engine(**engine_kw)
        self.sent: list[bytes] = []
        self.master = SyncMaster(self.sent.append, syncid=4, maxlen=maxlen, settings=settings)
        self.events = self.engine.subscribe(services=False, conns=True, packets=True)
        self.t = 0.0

    def client(self, flags="A", sport=40000, payload=b"", udp=False):
        self.t += 0.01
        l4 = UDP(sport=sport, dport=80) if udp else TCP(sport=sport, dport=80, flags=flags)
        out = self.engine.process(frame(from_client(l4 / payload)), 1, self.t)
        self.master.follow(self.events)
        return out

    def server(self, flags="A", sport=40000):
        conn = self.engine.conns.lookup(6, pack_ip(CLIENT) + pack_ip(VIP) + sport.to_bytes(2, "big") + b"\0\x50")[0]
        self.t += 0.01
        rip = socket.inet_ntoa(conn.daddr)
        out = self.engine.process(frame(from_rs(rip, TCP(sport=8080, dport=sport, flags=flags))), 2, self.t)
        self.master.follow(self.events)
        return out

    def established(self, sport=40000):
        self.client("S", sport)
        self.server("SA", sport)
        self.client("A", sport)  # packet 2: ESTABLISHED, not yet due

    def sent_at(self, packets: range) -> list[int]:
        """The client packet numbers after which the connection went out."""
        out = []
        for n in packets:
            self.client("A")
            if self.synced():
                out.append(n)
        return out

    def synced(self) -> list[proto.SyncConn]:
        """Flush, then everything sent so far, decoded."""
        self.master.flush()
        out = []
        for message in self.sent:
            decoded = proto.decode(message)
            assert isinstance(decoded, proto.Message) and decoded.syncid == 4
            out.extend(decoded.conns)
        self.sent.clear()
        return out


def test_an_established_connection_is_sent_on_its_third_client_packet():
    lab = Lab()
    lab.established()
    assert lab.synced() == []
    lab.client("PA", payload=b"GET / HTTP/1.0\r\n\r\n")
    (c,) = lab.synced()
    assert (c.protocol, c.state, c.timeout, c.fwmark) == (6, tcpstate.ESTABLISHED, 900, 0)
    assert c.flags == CONN_F_MASQ  # active, and NAT sees replies: no NOOUTPUT
    assert (c.caddr, c.cport, c.vaddr, c.vport) == (pack_ip(CLIENT), b"\x9c\x40", pack_ip(VIP), b"\0\x50")
    assert (c.daddr, c.dport) == (pack_ip(RIPS[2]), b"\x1f\x90")


def test_it_is_sent_again_every_50_packets():
    lab = Lab()
    lab.established()
    assert lab.sent_at(range(3, 110)) == [3, 53, 103]


def test_syn_states_are_never_sent():
    lab = Lab()
    for _ in range(5):  # the SYN and its retransmissions: SYN_RECV
        lab.client("S")
    assert lab.synced() == []


def test_closing_states_are_sent_at_once_from_either_direction():
    lab = Lab()
    lab.established()
    lab.client("A")
    lab.client("A")  # packet 4: nothing due
    lab.synced()
    lab.client("FA")  # client closes: CLOSE_WAIT
    (c,) = lab.synced()
    assert (c.state, c.timeout, c.flags & CONN_F_INACTIVE) == (tcpstate.CLOSE_WAIT, 60, CONN_F_INACTIVE)
    lab.server("FA")  # the server's FIN, seen on the reply: TIME_WAIT
    (c,) = lab.synced()
    assert (c.state, c.timeout) == (tcpstate.TIME_WAIT, 120)


def test_a_connection_already_waiting_is_rewritten_not_repeated():
    lab = Lab()
    lab.established()
    lab.client("A")  # due: ESTABLISHED waits in the message
    lab.client("FA")  # and now CLOSE_WAIT
    (c,) = lab.synced()
    assert c.state == tcpstate.CLOSE_WAIT


def test_udp_is_sent_on_its_third_packet_whatever_its_state():
    lab = Lab(proto=17)
    lab.client(udp=True)
    lab.client(udp=True)
    assert lab.synced() == []
    lab.client(udp=True)
    (c,) = lab.synced()
    assert (c.protocol, c.state, c.timeout, c.flags) == (17, 0, 300, CONN_F_INACTIVE)


def test_dr_connections_carry_their_method_and_nooutput():
    lab = Lab(method=Method.ROUTE)
    lab.client("S")
    lab.client("A")
    lab.client("A")
    (c,) = lab.synced()
    assert c.flags == 3 | CONN_F_NOOUTPUT and c.dport == b"\0\x50"


def persistent(lab: Lab) -> None:
    lab.engine.table.edit_service(VirtualService(6, pack_ip(VIP), 80, "rr", flags=SVC_F_PERSISTENT, timeout=360))


def test_the_template_of_a_persistent_connection_rides_along_each_counted_packet():
    lab = Lab()
    persistent(lab)
    lab.client("S")
    (t,) = lab.synced()  # the SYN is not due, its template is
    assert t.flags & CONN_F_TEMPLATE and t.state == proto.TEMPLATE_NONE
    assert (t.protocol, t.cport, t.vport, t.dport, t.timeout) == (6, b"\0\0", b"\0\x50", b"\x1f\x90", 360)
    assert t.flags & (CONN_F_FWD_MASK | CONN_F_INACTIVE) == CONN_F_INACTIVE  # MASQ
    lab.server("SA")
    lab.client("A")  # ESTABLISHED assures the template
    (t,) = lab.synced()
    assert t.state == proto.TEMPLATE_ASSURED
    lab.client("A")
    conns = lab.synced()
    assert sorted(bool(c.flags & CONN_F_TEMPLATE) for c in conns) == [False, True]


def test_a_full_message_leaves_at_once_and_holds_at_most_maxlen_bytes():
    lab = Lab(maxlen=8 + 2 * 36, proto=17)
    for sport in (1001, 1002, 1003):
        for _ in range(3):
            lab.client(sport=sport, udp=True)
    assert len(lab.sent) == 1 and len(lab.sent[0]) == 8 + 2 * 36
    assert len(lab.synced()) == 3


def test_at_most_255_connections_per_message():
    lab = Lab(maxlen=65000, proto=17)
    for sport in range(2000, 2300):
        for _ in range(3):
            lab.client(sport=sport, udp=True)
    assert [len(proto.decode(m).conns) for m in lab.sent] == [255]
    assert len(lab.synced()) == 300


def test_an_unsent_message_leaves_after_two_seconds():
    lab = Lab()
    lab.established()
    lab.client("A")
    lab.master.tick(10.0)
    lab.master.tick(11.0)
    assert lab.sent == []
    lab.master.tick(12.0)
    assert len(lab.sent) == 1
    lab.master.tick(14.0)
    assert len(lab.sent) == 1


def test_version_0_messages():
    lab = Lab(settings=SyncSettings(version=0))
    lab.established()
    lab.client("A")
    lab.master.flush()
    msg = proto.decode(lab.sent[0])
    assert msg.version == 0 and len(lab.sent[0]) == 4 + 24
    assert (msg.conns[0].state, msg.conns[0].timeout) == (tcpstate.ESTABLISHED, 0)


def test_sync_threshold_and_period_are_settings():
    lab = Lab(settings=SyncSettings(threshold=5, period=0))  # period 0: only once, at the threshold
    lab.established()
    assert lab.sent_at(range(3, 120)) == [5]


def test_fullnat_connections_are_not_synced():
    lab = Lab(method=Method.FULLNAT)
    svc = next(iter(lab.engine.table))
    lab.engine.table.add_laddr(svc, pack_ip("10.1.0.200"))
    lab.client("S")
    lab.client("A")
    lab.client("A")
    assert lab.synced() == [] and lab.master.stats["skipped_fullnat"] == 1
