"""SIP persistence on the wire (--pe sip with one-packet scheduling): SIP datagrams from one client
socket, several calls; every datagram of a call reaches the same real server, the calls spread, and
a datagram without a Call-ID goes nowhere. The real servers' logs say what arrived where; the
Call-IDs are read back from the logged payloads with a regex of the test's own."""

from __future__ import annotations

import re
import sys

from pylvs.lab.servers import udp_log
from pylvs.lab.topology import CLIENT, VIP, settle

CALL_ID = re.compile(rb"\r\nCall-ID: ([^\r\n]+)\r\n")


def sip(method: str, call: str) -> str:
    return (f"{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {CLIENT}:5060\r\n"
            f"Call-ID: {call}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")


def send_all(lab, payloads: list[str]) -> None:
    """All from one socket bound to port 5060, as SIP phones send (replies are not awaited: with
    one-packet scheduling IPVS does not translate a NAT real server's answers either)."""
    script = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.bind(('{CLIENT}', 5060))\n"
        "for p in sys.argv[1:]:\n"
        f"    s.sendto(p.encode(), ('{VIP}', 5060)); time.sleep(0.01)\n"
    )
    lab.net.exec("client", sys.executable, "-c", script, *payloads, timeout=30)


def test_each_call_sticks_to_one_real_server_and_calls_spread(lab):
    lab.lvsadm("-A", "-u", f"{VIP}:5060", "-s", "rr", "-p", "60", "--pe", "sip", "-o")
    for addr in lab.rips:
        lab.lvsadm("-a", "-u", f"{VIP}:5060", "-r", f"{addr}:{lab.udp_port}", "-m")
    before = {name: len(udp_log(lab.net, name)) for name in lab.rs_names}
    calls = [f"call-{n}@{CLIENT}" for n in range(6)]
    send_all(lab, [sip(m, c) for m in ("INVITE", "ACK", "BYE") for c in calls] + ["no SIP in here"])
    settle(0.5)
    where: dict[bytes, set[str]] = {}
    for name in lab.rs_names:
        for peer, payload in udp_log(lab.net, name)[before[name]:]:
            assert peer == f"{CLIENT}:5060"
            m = CALL_ID.search(payload)
            assert m, payload  # the datagram without a Call-ID was dropped
            where.setdefault(m.group(1), set()).add(name)
    assert sorted(where) == sorted(c.encode() for c in calls)
    assert all(len(servers) == 1 for servers in where.values()), where  # 3 datagrams per call, one server
    assert {s for servers in where.values() for s in servers} == set(lab.rs_names)  # rr over the calls
    listing = lab.lvsadm("-L", "-n", "-c", "--persistent-conn").stdout
    for call in calls:
        assert re.search(rf"UDP .* {CLIENT}:0 +{VIP}:5060 +\S+ +sip +{re.escape(call)}$", listing, re.M), listing
    drops = lab.lvsadm("--drops").stdout
    assert re.search(r"pe_no_callid\D+1\b", drops), drops
