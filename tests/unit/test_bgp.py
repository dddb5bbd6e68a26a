"""BGP announcements (pylvs.bgp): which VIPs a table announces, the --bgp-* options, the BIRD
configuration they become (checked by BIRD's own parser where BIRD is installed), BIRD's control
replies, and `lvsadm --bgp`."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import pytest

from pylvs.bgp import birdctl
from pylvs.bgp.announce import healthy_vips
from pylvs.bgp.config import BgpConfigError, BgpSettings, Peer, bird_config, parse_peer, settings
from pylvs.cli import lvsadm, lvsd
from pylvs.control.api import Control
from pylvs.engine.engine import Engine


def table(*lines: tuple[str, str, list[int]]) -> Engine:
    """An engine whose services are (protocol, vip:port, [weight of each real server])."""
    engine = Engine(routes=None)
    control = Control(engine)
    for i, (proto, vip, weights) in enumerate(lines):
        addr, port = vip.split(":")
        svc = {"protocol": proto, "addr": addr, "port": int(port)}
        assert control.handle({"op": "add-service", "service": svc})["ok"]
        for j, weight in enumerate(weights):
            dest = {"addr": f"192.0.2.{10 * i + j + 1}", "port": int(port), "method": "route", "weight": weight}
            assert control.handle({"op": "add-dest", "svc": svc, "dest": dest})["ok"]
    return engine


def test_a_vip_is_announced_while_one_of_its_services_has_a_real_server_with_weight():
    engine = table(("tcp", "198.51.100.1:80", [0, 1]),   # one healthy real server is enough
                   ("tcp", "198.51.100.2:80", [0, 0]),   # all quiesced or failed (inhibit_on_failure)
                   ("tcp", "198.51.100.2:443", [2]),     # ... but another service on the same VIP serves
                   ("udp", "198.51.100.3:53", []),       # no real server at all
                   ("tcp", "198.51.100.4:80", [0]))
    assert healthy_vips(engine) == {"198.51.100.1", "198.51.100.2"}


def test_weights_and_removals_change_the_announcement():
    engine = table(("tcp", "198.51.100.1:80", [1]))
    control = Control(engine)
    svc = {"protocol": "tcp", "addr": "198.51.100.1", "port": 80}
    dest = {"addr": "192.0.2.1", "port": 80, "method": "route", "weight": 0}
    assert control.handle({"op": "edit-dest", "svc": svc, "dest": dest})["ok"]
    assert healthy_vips(engine) == frozenset()
    assert control.handle({"op": "edit-dest", "svc": svc, "dest": {**dest, "weight": 5}})["ok"]
    assert healthy_vips(engine) == {"198.51.100.1"}
    assert control.handle({"op": "del-dest", "svc": svc, "dest": dest})["ok"]
    assert healthy_vips(engine) == frozenset()


def test_a_standing_by_director_announces_nothing():
    engine = table(("tcp", "198.51.100.1:80", [1]))
    engine.set_standby(True)  # --backup-only with its backup sync daemon running
    assert healthy_vips(engine) == frozenset()
    engine.set_standby(False)
    assert healthy_vips(engine) == {"198.51.100.1"}


@pytest.mark.parametrize(("args", "message"), [
    (["x"], "bad peer 'x': ADDR:AS expected"),
    (["192.0.2.1:0"], "AS number 0 out of range (1-4294967295)"),
    (["192.0.2.1:4294967296"], "AS number 4294967296 out of range (1-4294967295)"),
    (["192.0.2.1:as1"], "bad AS number 'as1'"),
    (["192.0.2.300:65000"], "bad peer address '192.0.2.300': an IPv4 address is expected"),
    (["192.0.2.1:1", "192.0.2.1:2"], "a --bgp-peer address is given twice"),
    ([], "--bgp-local-as needs at least one --bgp-peer ADDR:AS"),
])
def test_bad_peers_are_refused_with_a_reason(args, message):
    with pytest.raises(BgpConfigError) as err:
        settings("65001", args)
    assert str(err.value) == message


def test_options_are_checked():
    assert parse_peer("192.0.2.254:4200000000") == Peer("192.0.2.254", 4200000000)
    with pytest.raises(BgpConfigError, match="bad hold time 2: 3 to 65535 seconds"):
        settings("65001", ["192.0.2.1:65000"], hold_time=2)
    with pytest.raises(BgpConfigError, match="bad router id 'r1'"):
        settings("65001", ["192.0.2.1:65000"], router_id="r1")
    with pytest.raises(BgpConfigError, match="bad next hop"):
        settings("65001", ["192.0.2.1:65000"], next_hop="::1")


@pytest.mark.parametrize(("argv", "message"), [
    (["--bgp-peer", "192.0.2.1:65000"], "lvsd: the --bgp-* options need --bgp-local-as AS\n"),
    (["--bgp-local-as", "65001"], "lvsd: --bgp-local-as needs at least one --bgp-peer ADDR:AS\n"),
    (["--bgp-local-as", "0", "--bgp-peer", "192.0.2.1:65000"], "lvsd: AS number 0 out of range (1-4294967295)\n"),
])
def test_lvsd_exits_2_on_bad_bgp_options(argv, message, capsys):
    assert lvsd.main(["-i", "lo", *argv]) == 2
    assert capsys.readouterr().err == message


CFG = BgpSettings(65001, (Peer("192.0.2.254", 65000), Peer("192.0.2.253", 65002)), hold_time=3)


def test_the_bird_config_exports_only_the_vips_with_this_director_as_next_hop():
    text = bird_config(CFG, "192.0.2.1", frozenset({"198.51.100.20", "198.51.100.3"}))
    assert "router id 192.0.2.1;" in text
    routes = [line.strip() for line in text.splitlines() if line.strip().startswith("route ")]
    assert routes == ["route 198.51.100.3/32 blackhole;", "route 198.51.100.20/32 blackhole;"]  # numeric order
    assert "protocol kernel" not in text  # nothing goes into the director's own routing table
    for name, addr, asn in (("peer_192_0_2_254", "192.0.2.254", 65000), ("peer_192_0_2_253", "192.0.2.253", 65002)):
        block = text.split(f"protocol bgp {name} {{")[1].split("\n}")[0]
        assert f"neighbor {addr} as {asn};" in block and "local as 65001;" in block
        assert "hold time 3; keepalive time 1;" in block
        assert "graceful restart off;" in block  # routers must not keep a dead director's routes
        assert "import none;" in block and 'export where proto = "vips";' in block and "next hop self;" in block
    fixed = bird_config(BgpSettings(65001, CFG.peers, next_hop="192.0.2.100"), "192.0.2.1", frozenset())
    assert "next hop address 192.0.2.100;" in fixed and "route " not in fixed
    # Only the static protocol depends on the VIPs: BIRD's configure keeps the sessions up.
    assert text.split("protocol bgp")[1:] == fixed.replace("next hop address 192.0.2.100;", "next hop self;") \
        .replace("hold time 9; keepalive time 3;", "hold time 3; keepalive time 1;").split("protocol bgp")[1:]


@pytest.mark.skipif(shutil.which("bird") is None and not os.path.exists("/usr/sbin/bird"), reason="BIRD 2 missing")
def test_bird_itself_accepts_the_config():
    bird = shutil.which("bird") or "/usr/sbin/bird"
    with tempfile.TemporaryDirectory() as tmp:
        for vips in (frozenset(), frozenset({"198.51.100.1", "198.51.100.2"})):
            path = os.path.join(tmp, "bird.conf")
            with open(path, "w") as f:
                f.write(bird_config(CFG, "192.0.2.1", vips))
            r = subprocess.run([bird, "-p", "-c", path], capture_output=True, text=True, timeout=10)
            assert r.returncode == 0, r.stderr


SHOW = (b"2002-Name       Proto      Table      State  Since         Info\n"
        b"1002-peer_192_0_2_254 BGP        ---        up     12:38:25.871  Established   \n"
        b"1006-  BGP state:          Established\n"
        b"     Neighbor address: 192.0.2.254\n"
        b"     Hold timer:       1.974/3\n"
        b"   Channel ipv4\n"
        b"     Routes:         0 imported, 1 exported, 0 preferred\n"
        b"0000 \n")


def test_bird_replies_are_read_as_birdc_reads_them():
    lines, done = birdctl.parse_reply(SHOW)
    assert done and lines[0] == (2002, "Name       Proto      Table      State  Since         Info")
    assert lines[-1] == (0, "")
    assert birdctl.protocol_rows(lines)["peer_192_0_2_254"] == {
        "proto": "BGP", "table": "---", "state": "up", "since": "12:38:25.871", "info": "Established"}
    details = birdctl.protocol_details(lines)
    assert details["BGP state"] == "Established" and details["Neighbor address"] == "192.0.2.254"
    assert details["Routes"] == "0 imported, 1 exported, 0 preferred"
    assert birdctl.parse_reply(SHOW[:-6]) == (birdctl.parse_reply(SHOW[:-6])[0], False)  # not finished yet
    assert birdctl.parse_reply(b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n") == (
        [(9001, "syntax error, unexpected CF_SYM_UNDEFINED")], True)


STATUS = {"speaker": "bird", "pid": 4242, "restarts": 0, "local_as": 65001, "router_id": "192.0.2.1",
          "hold_time": 3, "next_hop": "self", "wanted": ["198.51.100.100"], "announced": ["198.51.100.100"],
          "peers": [{"address": "192.0.2.254", "as": 65000, "state": "Established", "since": "12:38:25.871",
                     "info": "Established", "exported": 1}]}


class BgpLvsd:
    def __init__(self, answer: dict):
        self.answer = answer

    def request(self, obj: dict) -> dict:
        assert obj == {"op": "get-bgp"}
        return self.answer


def test_lvsadm_bgp_shows_the_announcements_and_sessions():
    out, err = io.StringIO(), io.StringIO()
    assert lvsadm.run(["--bgp"], transport=BgpLvsd({"ok": True, "result": STATUS}), stdout=out, stderr=err) == 0
    assert out.getvalue() == (
        "BGP speaker: BIRD pid 4242 (restarts 0), local AS 65001, router id 192.0.2.1, hold time 3 s, next hop self\n"
        "Announced: 198.51.100.100/32\n"
        "Peer                     AS  State        Since         Routes out\n"
        "192.0.2.254           65000  Established  12:38:25.871  1\n")
    pending = {**STATUS, "announced": [], "peers": []}
    out = io.StringIO()
    assert lvsadm.run(["--bgp"], transport=BgpLvsd({"ok": True, "result": pending}), stdout=out) == 0
    assert "Announced: none\nPending:   198.51.100.100/32\n" in out.getvalue()
    out = io.StringIO()
    assert lvsadm.run(["--bgp", "--json"], transport=BgpLvsd({"ok": True, "result": STATUS}), stdout=out) == 0
    assert '"announced": ["198.51.100.100"]' in out.getvalue()


def test_lvsadm_bgp_without_bgp_says_so():
    refusal = {"ok": False, "errno": "EOPNOTSUPP", "error": "lvsd was not started with --bgp-local-as"}
    err = io.StringIO()
    assert lvsadm.run(["--bgp"], transport=BgpLvsd(refusal), stdout=io.StringIO(), stderr=err) == 255
    assert "lvsd was not started with --bgp-local-as" in err.getvalue()
