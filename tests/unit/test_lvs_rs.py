"""lvs-rs without root: decapsulation parsing on scapy-built packets, and up/down/check against a fake host."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether

from pylvs.cli import lvs_rs
from pylvs.packet import vnet
from pylvs.rs import capture, decap
from pylvs.rs.host import Config, Host, SetupError
from pylvs.rs.state import State

VIP = "192.0.2.100"
VIPS = {socket.inet_aton(VIP)}
INNER = IP(src="203.0.113.10", dst=VIP) / TCP(sport=40000, dport=80, flags="S")
OUTER = IP(src="192.0.2.1", dst="198.51.100.11")
LOCAL = {socket.inet_aton("198.51.100.11")}
GUE_PORT = 6080


# -- decapsulation ----------------------------------------------------------------------------

def inner_for(kind: str, data: bytes, vips=VIPS):
    """Decapsulate what a tunnel carries as the link-level socket hands it over: an Ethernet frame
    with an empty virtio_net_hdr. `data` is the IP packet (ipip, gre) or the UDP payload (gue)."""
    if kind == "gue":
        data = bytes(OUTER / UDP(sport=40000, dport=GUE_PORT, chksum=0) / data)
    frame = memoryview(vnet.EMPTY + bytes(Ether(type=0x0800)) + data)
    header, inner, why = decap.from_link(kind, frame, capture.ARPHRD_ETHER, GUE_PORT, vips, LOCAL)
    assert header in (None, vnet.EMPTY)
    return inner, why


def test_ipip_as_the_link_delivers_it():
    got, why = inner_for("ipip", bytes(OUTER / INNER))
    assert why == "" and bytes(got) == bytes(INNER)


@pytest.mark.parametrize("gre", [GRE(proto=0x0800), GRE(proto=0x0800, chksum_present=1),
                                 GRE(proto=0x0800, key_present=1, key=7, seqnum_present=1, sequence_number=9)])
def test_gre_with_its_optional_fields(gre):
    got, why = inner_for("gre", bytes(OUTER / gre / INNER))
    assert why == "" and bytes(got) == bytes(INNER)


def test_gre_with_a_bad_checksum_is_dropped():
    raw = bytearray(bytes(OUTER / GRE(proto=0x0800, chksum_present=1) / INNER))
    raw[-1] ^= 0xFF
    assert inner_for("gre", bytes(raw)) == (None, "bad_checksum")


def test_gre_carrying_something_else_is_dropped():
    assert inner_for("gre", bytes(OUTER / GRE(proto=0x86DD) / INNER))[1] == "not_ipv4"


def test_gue_version_0_with_and_without_options_and_version_1():
    got, why = inner_for("gue", b"\x00\x04\x00\x00" + bytes(INNER))
    assert why == "" and bytes(got) == bytes(INNER)
    with_opts = b"\x02\x04\x00\x00" + bytes(8) + bytes(INNER)  # hlen 2: two option words
    assert bytes(inner_for("gue", with_opts)[0]) == bytes(INNER)
    assert bytes(inner_for("gue", bytes(INNER))[0]) == bytes(INNER)  # v1: 0x45 = 01|00...
    assert inner_for("gue", b"\x20\x00\x00\x00" + bytes(INNER))[1] == "gue_control"
    assert inner_for("gue", b"\x00\x29\x00\x00" + bytes(INNER))[1] == "not_ipv4"


def test_only_packets_for_our_vips_get_in():
    other = IP(src="203.0.113.10", dst="192.0.2.99") / TCP(dport=22)
    assert inner_for("ipip", bytes(OUTER / other)) == (None, "not_vip")


def test_trailing_bytes_are_cut_to_the_inner_total_length():
    outer = OUTER.copy()
    outer.len = 20 + len(INNER) + 6  # bytes the inner packet's length leaves out
    got, _ = inner_for("ipip", bytes(outer / INNER) + b"\0" * 6)
    assert bytes(got) == bytes(INNER)


@pytest.mark.parametrize("data", [b"", b"\x45", bytes(OUTER)[:10], bytes(OUTER) + bytes(INNER)[:19]])
def test_malformed_input_never_raises(data):
    for kind in decap.KINDS:
        got, why = inner_for(kind, data)
        assert got is None and why


def test_udp_through_gue_is_untouched():
    pkt = IP(src="203.0.113.10", dst=VIP) / UDP(sport=5, dport=53) / b"q"
    assert bytes(inner_for("gue", b"\x00\x04\x00\x00" + bytes(pkt))[0]) == bytes(pkt)


# -- up / down / check against a fake host -----------------------------------------------------

class FakeIp:
    """Answers the `ip` commands lvs-rs runs, keeping lo's addresses and the links in memory."""

    def __init__(self, kernel_tunnels: bool = False) -> None:
        self.lo = {"127.0.0.1"}
        self.links = {"lo": "up", "eth0": "up"}
        self.kernel_tunnels = kernel_tunnels
        self.calls: list[list[str]] = []

    def __call__(self, cmd):
        args = list(cmd[1:])
        self.calls.append(args)
        ok = subprocess.CompletedProcess(cmd, 0, "", "")
        if args[:4] == ["-j", "-4", "addr", "show"]:
            info = [{"local": a, "prefixlen": 32} for a in sorted(self.lo)]
            return subprocess.CompletedProcess(cmd, 0, json.dumps([{"ifname": "lo", "addr_info": info}]), "")
        if args[:2] == ["addr", "add"]:
            self.lo.add(args[2].split("/")[0])
            return ok
        if args[:2] == ["addr", "del"]:
            self.lo.discard(args[2].split("/")[0])
            return ok
        if args[:2] == ["-j", "link"]:
            dev = args[-1]
            if dev not in self.links:
                return subprocess.CompletedProcess(cmd, 1, "", "Device does not exist")
            flags = ["UP"] if self.links[dev] == "up" else []
            return subprocess.CompletedProcess(cmd, 0, json.dumps([{"ifname": dev, "flags": flags}]), "")
        if args[:2] == ["link", "add"]:
            if not self.kernel_tunnels:
                return subprocess.CompletedProcess(cmd, 2, "", "Error: Unknown device type.")
            for dev in ("tunl0", "gre0"):
                self.links.setdefault(dev, "down")
            return ok
        if args[:3] == ["link", "set", "dev"]:
            self.links[args[3]] = args[4]
            return ok
        return ok


@pytest.fixture
def host(tmp_path):
    root = tmp_path / "conf"
    for iface in ("all", "default", "lo", "eth0", "tunl0", "gre0"):
        (root / iface).mkdir(parents=True)
        for key, value in (("arp_ignore", 0), ("arp_announce", 0), ("rp_filter", 1 if iface == "all" else 0)):
            (root / iface / key).write_text(f"{value}\n")
    fake = FakeIp()
    h = Host(str(tmp_path / "state"), runner=fake, sysctl_root=str(root))
    h.fake, h.root_path = fake, root
    return h


def value(host, iface, key):
    return int((host.root_path / iface / key).read_text())


def test_dr_up_sets_vip_and_arp_then_down_restores_everything(host):
    assert host.check(Config(vips=[VIP], method="dr"))  # nothing done yet: problems
    host.up(Config(vips=[VIP], method="dr"))
    assert VIP in host.fake.lo
    assert [value(host, i, k) for i in ("all", "lo") for k in ("arp_ignore", "arp_announce")] == [1, 2, 1, 2]
    assert value(host, "all", "rp_filter") == 1  # DR does not need it relaxed
    assert host.check() == []
    host.down()
    assert VIP not in host.fake.lo
    assert [value(host, i, k) for i in ("all", "lo") for k in ("arp_ignore", "arp_announce")] == [0, 0, 0, 0]
    assert State.load(host.dir) is None


def test_up_twice_keeps_the_original_values_for_down(host):
    host.up(Config(vips=[VIP], method="dr"))
    host.up(Config(vips=[VIP, "192.0.2.101"], method="dr"))
    host.down()
    assert value(host, "all", "arp_ignore") == 0 and host.fake.lo == {"127.0.0.1"}


def test_a_vip_that_was_there_before_stays_after_down(host):
    host.fake.lo.add(VIP)
    host.up(Config(vips=[VIP], method="dr"))
    host.down()
    assert VIP in host.fake.lo


def test_check_says_what_is_missing_in_plain_words(host):
    host.up(Config(vips=[VIP], method="dr"))
    (host.root_path / "all" / "arp_ignore").write_text("0\n")
    (host.root_path / "lo" / "arp_ignore").write_text("0\n")
    host.fake.lo.discard(VIP)
    problems = host.check()
    assert any("VIP 192.0.2.100 is not on lo" in p for p in problems)
    assert any("arp_ignore on eth0 is 0" in p for p in problems)


def test_tun_uses_the_kernel_device_when_there_is_one(host):
    host.fake.kernel_tunnels = True
    host.up(Config(vips=[VIP], method="tun", tun_type="gue", tun_port=6080))
    st = State.load(host.dir)
    assert (st.decap, st.device, st.fou_port) == ("kernel", "tunl0", 6080)
    assert ["fou", "add", "port", "6080", "gue"] in host.fake.calls
    assert host.fake.links["tunl0"] == "up" and value(host, "tunl0", "rp_filter") == 0
    # tunl0 has no address: any rp_filter there, loose included, drops every decapsulated packet; the
    # other interfaces keep the strict check they had from `all`
    assert value(host, "all", "rp_filter") == 0
    assert [value(host, i, "rp_filter") for i in ("lo", "eth0", "gre0")] == [1, 1, 1]
    assert host.check() == []
    (host.root_path / "all" / "rp_filter").write_text("2\n")
    assert any("rp_filter is on for tunl0" in p for p in host.check())
    (host.root_path / "all" / "rp_filter").write_text("0\n")
    host.down()
    assert ["fou", "del", "port", "6080"] in host.fake.calls
    assert [value(host, i, "rp_filter") for i in ("all", "lo", "eth0", "gre0")] == [1, 0, 0, 0]


def test_tun_check_notices_a_missing_decapsulator(host):
    problems = host.check(Config(vips=[VIP], method="tun", tun_type="gre"))
    assert any("nothing decapsulates gre" in p for p in problems)


def test_kernel_decap_demanded_but_absent_is_an_error(host):
    with pytest.raises(SetupError, match="no ipip tunnel support"):
        host.up(Config(vips=[VIP], method="tun", decap="kernel"))


@pytest.mark.parametrize("cfg,message", [
    (Config(vips=[], method="dr"), "--vip"),
    (Config(vips=[VIP], method="nat"), "method"),
    (Config(vips=[VIP], method="tun", tun_type="gue"), "--tun-port"),
    (Config(vips=[VIP], method="tun", tun_type="vxlan"), "tunnel type"),
])
def test_config_is_validated(cfg, message):
    with pytest.raises(SetupError, match=message):
        cfg.validate()


def test_cli_needs_a_method_for_up(capsys, tmp_path):
    assert lvs_rs.main(["up", "--vip", VIP, "--state-dir", str(tmp_path)]) == 1
    assert "--method dr|tun is needed" in capsys.readouterr().err


def test_cli_check_with_nothing_set_up(capsys, tmp_path):
    assert lvs_rs.main(["check", "--state-dir", str(tmp_path / "none")]) == 1
    assert "nothing is set up here" in capsys.readouterr().out
