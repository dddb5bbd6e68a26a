"""lvsadm against the real control API and engine with IPv6 services: the public IPv6 command lines,
ipvsadm's listings of them, a mixed IPv4/IPv6 `-S`/`-R` round trip, and the kernel's refusals."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest

from pylvs.cli import lvsadm
from pylvs.control import api
from pylvs.engine.engine import Engine
from pylvs.engine.hops import StaticRoutes
from pylvs.engine.services import pack_ip
from pylvs.ipvsadm import args as ipvsadm_args

LINES = Path(__file__).parent.parent / "data" / "ipvsadm" / "ipv6_lines.txt"


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(ipvsadm_args, "_host_to_addr", lambda name: None)


class EngineTransport:
    """lvsadm's transport straight into api.handle of a real engine (every request through JSON)."""

    def __init__(self) -> None:
        self.engine = Engine(StaticRoutes({}))

    def request(self, obj):
        return json.loads(json.dumps(api.handle(self.engine, json.loads(json.dumps(obj)), 0.0)))


def run(transport: EngineTransport, line: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = lvsadm.run(shlex.split(line), transport=transport, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def public_lines() -> list[str]:
    return [line for line in LINES.read_text().splitlines() if line and not line.startswith("#")]


def test_the_public_ipv6_lines_are_accepted_one_by_one():
    t = EngineTransport()
    for line in public_lines():
        assert run(t, line) == (0, "", ""), line
    assert len(t.engine.table) == 9
    svc = t.engine.table.find(6, pack_ip("2001:db8::200"), 80)
    assert svc.netmask == b"\xff" * 8 + bytes(8)  # -M 64: a /64 prefix
    assert t.engine.table.by_fwmark6[7].netmask == b"\xff" * 7 + bytes(9)


def test_listing_of_ipv6_services_as_ipvsadm_prints_it():
    t = EngineTransport()
    assert run(t, "-R", "\n".join(public_lines()[:12]) + "\n")[0] == 0
    code, out, err = run(t, "-L -n")
    assert (code, err) == (0, "")
    # sorted as ipvsadm sorts (services by fwmark, family, protocol, then address words compared as the C
    # code's int difference, so fc00:: comes before 2001:db8::), real servers by address
    assert out == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  [fc00::1]:80 wlc\n"
        "  -> [fc00::2]:80                 Route   1      0          0         \n"
        "  -> [fc00::3]:80                 Route   1      0          0         \n"
        "TCP  [2001:db8::100]:443 rr\n"
        "  -> [2001:db8:1::11]:443         Masq    1      0          0         \n"
        "  -> [2001:db8:1::12]:443         Masq    2      0          0         \n"
        "TCP  [2001:db8::200]:80 wlc persistent 300 mask 64\n"
        "UDP  [2001:db8::100]:53 sh\n"
        "  -> [2001:db8:1::11]:53          Masq    1      0          0         \n"
        "  -> [2001:db8:1::12]:53          Masq    1      0          0         \n"
        "FWM  1 IPv6 wlc\n"
        "  -> [fc00::2]:80                 Masq    1      0          0         \n"
    )


def test_mixed_table_round_trips_through_save_and_restore():
    t = EngineTransport()
    v4 = ["-A -t 192.0.2.1:80 -s rr -p 60 -M 255.255.255.0", "-a -t 192.0.2.1:80 -r 10.1.0.11:8080 -m -w 3",
          "-A -f 1 -s wlc", "-a -f 1 -r 10.1.0.12:0 -g"]
    assert run(t, "-R", "\n".join(v4 + public_lines()) + "\n") == (0, "", "")
    saved = run(t, "-S -n")[1]
    assert "-A -f 1 -s wlc" in saved and "-A -f 1 -6 -s wlc" in saved  # both families' fwmark 1 exist
    assert "-A -t [2001:db8::200]:80 -s wlc -p 300 -M 64\n" in saved
    assert "-A -t 192.0.2.1:80 -s rr -p 60 -M 255.255.255.0\n" in saved
    again = EngineTransport()
    assert run(again, "-R", saved) == (0, "", "")
    assert run(again, "-S -n")[1] == saved
    listing = run(t, "-L -n --stats")[1]
    assert run(again, "-L -n --stats")[1] == listing
    def services(transport):  # what -S carries, as --json gives it
        return sorted((
            (svc.get("addr"), svc.get("port"), svc.get("fwmark"), svc.get("af"), svc["netmask"], svc["scheduler"],
             sorted((d["addr"], d["port"], d["method"], d["weight"]) for d in svc["dests"]))
            for svc in json.loads(run(transport, "-L -n --json")[1])["services"]), key=repr)

    assert services(again) == services(t)
    assert ("2001:db8::300", 0, None, None, 48, "wrr", [("2001:db8:2::31", 0, "route", 1)]) in services(t)
    assert (None, None, 7, "inet6", 56, "dh", [("2001:db8:1::71", 0, "route", 5)]) in services(t)


def test_ipv6_listing_forms():
    t = EngineTransport()
    assert run(t, "-R", "\n".join(public_lines()[5:8]) + "\n")[0] == 0
    stats = run(t, "-L -n --stats")[1].splitlines()
    assert stats[3].startswith("TCP  [2001:db8::100]:443") and stats[4].startswith("  -> [2001:db8:1::11]:443")
    rate = run(t, "-L -n --rate")[1].splitlines()
    assert rate[3].startswith("TCP  [2001:db8::100]:443") and rate[5].startswith("  -> [2001:db8:1::12]:443")
    one = run(t, "-L -n -t [2001:db8::100]:443")[1]
    assert one.splitlines()[2] == "TCP  [2001:db8::100]:443 rr"
    assert json.loads(run(t, "-L -n --json")[1])["services"][0]["addr"] == "2001:db8::100"


@pytest.mark.parametrize(("line", "message"), [
    # the kernel refuses a real server of the other family unless tunnelled (ip_vs_genl_set_cmd: EINVAL)
    ("-a -t [2001:db8::100]:443 -r 10.1.0.11 -i",
     "Operation not supported with specified address family"),
    ("-a -t [2001:db8::100]:443 -r [fe80::1]:443 -m",
     "Invalid operation.  Possibly wrong module version, address not unicast, ..."),
    ("-a -t [2001:db8::100]:443 -r [ff02::1]:443 -m",
     "Invalid operation.  Possibly wrong module version, address not unicast, ..."),
    ("-a -f 1 -r [2001:db8::9]:0 -m", "Different address family is allowed only for tunneling servers"),
    ("-a -f 9 -6 -r [2001:db8::9]:0 -m", "Service not defined"),
])
def test_refusals(line, message):
    t = EngineTransport()
    assert run(t, "-A -t [2001:db8::100]:443")[0] == 0
    assert run(t, "-A -f 1")[0] == 0
    code, out, err = run(t, line)
    assert code != 0 and out == "" and err.strip() == message, (code, err)
