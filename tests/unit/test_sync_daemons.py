"""start-daemon / stop-daemon / get-daemon through api and lvsadm, with lvsd's SyncDaemons on a real
selector; the multicast sockets are replaced by a datagram socketpair, so no root is needed."""

from __future__ import annotations

import io
import selectors
import socket

import pytest
from scapy.layers.inet import TCP

from pylvs.cli.lvsadm import run
from pylvs.control import api
from pylvs.engine.events import ServicesChanged
from pylvs.engine.services import pack_ip
from pylvs.io import sync_daemons, sync_socket
from pylvs.sync.config import BACKUP, MASTER, DaemonConfig, SyncSettings
from tests.unit.director import VIP, frame, from_client, make_engine


@pytest.fixture
def wire(monkeypatch):
    """What the master sends arrives on the backup's socket."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    monkeypatch.setattr(sync_socket, "link", lambda name: sync_socket.Link(name, 9, "192.0.2.1", 1500))
    monkeypatch.setattr(sync_socket, "sender", lambda iface, group, port, ttl: a)
    monkeypatch.setattr(sync_socket, "receiver", lambda iface, group, port: b)
    yield a, b
    a.close()
    b.close()


class Lvsd:
    """An engine, its sync daemons and the loop's selector: lvsd without the packet rings."""

    def __init__(self, selector, settings=None):
        self.engine = make_engine()
        self.daemons = sync_daemons.SyncDaemons(self.engine, selector, settings)
        self.control = api.Control(self.engine)
        api.register_daemons(self.control, self.daemons)

    def request(self, obj):
        return self.control.handle(obj, 0.0)

    def lvsadm(self, *args):
        out, err = io.StringIO(), io.StringIO()
        code = run(list(args), transport=self, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


def start(lvsd, state, **extra):
    return lvsd.request({"op": "start-daemon", "daemon": {"state": state, "mcast_ifn": "eth9", **extra}})


def test_start_stop_and_list_as_ipvsadm_shows_them(wire):
    lvsd = Lvsd(selectors.DefaultSelector())
    assert lvsd.lvsadm("--start-daemon", "master", "--mcast-interface", "eth9")[0] == 0
    assert lvsd.lvsadm("--start-daemon", "master", "--mcast-interface", "eth9")[1:] == (
        "", "Daemon has already run\n")
    assert lvsd.lvsadm("--start-daemon", "backup", "--mcast-interface", "eth9", "--syncid", "7",
                       "--mcast-port", "9000")[0] == 0
    code, out, _ = lvsd.lvsadm("-L", "--daemon")
    assert code == 0 and out == (
        "master sync daemon (mcast=eth9, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth9, syncid=7, maxlen=1472, group=224.0.0.81, port=9000, ttl=1)\n")
    assert lvsd.lvsadm("--stop-daemon", "master")[0] == 0
    assert lvsd.lvsadm("--stop-daemon", "master")[1:] == ("", "No daemon is running\n")
    assert lvsd.lvsadm("--stop-daemon", "backup")[0] == 0
    assert lvsd.lvsadm("-L", "--daemon")[1] == ""


def test_an_ipv6_group_is_listed_as_ipvsadm_prints_it_with_the_ipv6_headers_left_out(wire):
    lvsd = Lvsd(selectors.DefaultSelector())
    assert lvsd.lvsadm("--start-daemon", "master", "--mcast-interface", "eth9",
                       "--mcast-group", "FF02:0::0:81")[0] == 0
    assert lvsd.lvsadm("--start-daemon", "backup", "--mcast-interface", "eth9", "--mcast-group", "ff05::1:3",
                       "--sync-maxlen", "65507")[0] == 0
    assert lvsd.lvsadm("-L", "--daemon")[1] == (
        "master sync daemon (mcast=eth9, syncid=0, maxlen=1452, group=ff02::81, port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth9, syncid=0, maxlen=65487, group=ff05::1:3, port=8848, ttl=1)\n")
    assert lvsd.lvsadm("--start-daemon", "master", "--mcast-group", "2001:db8::1")[1:] == (
        "", "invalid IPv6 mcast-group `2001:db8::1'\n")


def test_refusals_carry_ipvsadms_errno_and_text(wire, monkeypatch):
    lvsd = Lvsd(selectors.DefaultSelector())
    for daemon, errno_name in ((
            {"state": "primary", "mcast_ifn": "eth9"}, "EINVAL"),
            ({"state": "master", "mcast_ifn": ""}, "EINVAL"),
            ({"state": "master", "mcast_ifn": "eth9", "mcast_group": "2001:db8::1"}, "EINVAL"),
            ({"state": "master", "mcast_ifn": "eth9", "mcast_group": "10.0.0.1"}, "EINVAL"),
            ({"state": "master", "mcast_ifn": "eth9", "syncid": 256}, "EINVAL")):
        assert lvsd.request({"op": "start-daemon", "daemon": daemon})["errno"] == errno_name, daemon
    monkeypatch.undo()  # the real interface lookup
    answer = start(lvsd, MASTER)
    assert (answer["errno"], answer["error"]) == ("ENODEV", "No such device")
    assert lvsd.request({"op": "batch", "ops": [{"op": "stop-daemon", "daemon": {"state": "master"}}]})[
        "errno"] == "EINVAL"


def test_without_daemon_control_the_ops_are_unsupported_and_none_runs():
    engine = make_engine()
    answer = api.handle(engine, {"op": "start-daemon", "daemon": {"state": "master", "mcast_ifn": "eth0"}})
    assert answer["errno"] == "EOPNOTSUPP"
    assert api.handle(engine, {"op": "get-daemon"}) == {"ok": True, "result": {"daemons": []}}


def test_connections_travel_from_master_to_backup_through_the_loop(wire):
    selector = selectors.DefaultSelector()
    master, backup = Lvsd(selector), Lvsd(selector)
    assert start(master, MASTER)["ok"] and start(backup, BACKUP)["ok"]
    for flags in ("S", "A", "PA"):  # the third client packet of an established connection is due
        master.engine.process(frame(from_client(TCP(sport=40000, dport=80, flags=flags))), 1, 1.0)
    master.daemons.tick(1.0)
    master.daemons.tick(3.0)  # two seconds later the message leaves
    for key, events in selector.select(1.0):
        key.data(key.fd, events)
    (conn,) = backup.engine.conns.conns()
    assert conn.state_name() == "ESTABLISHED"
    (listed,) = master.request({"op": "get-daemon"})["result"]["daemons"]
    assert listed["stats"]["conns"] == 1
    (listed,) = backup.request({"op": "get-daemon"})["result"]["daemons"]
    assert listed["stats"]["conns"] == 1 and listed["stats"]["messages"] == 1


def test_backup_only_leaves_the_vips_to_the_master_until_the_backup_stops(wire):
    lvsd = Lvsd(selectors.DefaultSelector(), SyncSettings(backup_only=True))
    assert lvsd.engine.owned == {pack_ip(VIP)}
    start(lvsd, BACKUP)
    assert lvsd.engine.owned == set() and lvsd.engine.announce() == []
    svc = next(iter(lvsd.engine.table))
    lvsd.engine.table.add_laddr(svc, pack_ip("10.1.0.200"))  # a table change while standing by
    assert lvsd.engine.owned == set()
    assert lvsd.engine.process(frame(from_client(TCP(sport=40000, dport=80, flags="S"))), 1, 1.0) == []
    events = lvsd.engine.subscribe()
    assert isinstance(events.next_event(), ServicesChanged) and events.next_event() is None
    assert lvsd.request({"op": "stop-daemon", "daemon": {"state": BACKUP}})["ok"]
    assert isinstance(events.next_event(), ServicesChanged)  # the director reconciles and announces
    assert lvsd.engine.owned == {pack_ip(VIP), pack_ip("10.1.0.200")} and lvsd.engine.announce()


@pytest.mark.parametrize(("state", "asked", "mtu", "maxlen"), [
    (MASTER, 0, 9000, 1472),   # a master assumes 1500 whatever the MTU
    (BACKUP, 0, 9000, 8972),   # a backup takes the interface MTU
    (BACKUP, 0, 1280, 1472),   # ... but at least 1500
    (BACKUP, 100, 1500, 1024),
    (MASTER, 1, 1500, 1),
    (MASTER, 65535, 1500, 65507),
])
def test_sync_maxlen_is_derived_and_clamped_as_the_kernel_does(state, asked, mtu, maxlen):
    assert DaemonConfig(state, "eth0", sync_maxlen=asked).resolve(mtu).sync_maxlen == maxlen


@pytest.mark.parametrize(("state", "asked", "mtu", "maxlen"), [
    (MASTER, 0, 9000, 1452),   # IPv6 + UDP headers are 48 bytes
    (BACKUP, 0, 9000, 8952),
    (BACKUP, 100, 1500, 1024),
    (MASTER, 65535, 1500, 65487),
])
def test_an_ipv6_group_leaves_the_ipv6_headers_out_of_sync_maxlen(state, asked, mtu, maxlen):
    config = DaemonConfig(state, "eth0", sync_maxlen=asked, mcast_group="ff02::81")
    assert config.resolve(mtu).sync_maxlen == maxlen


def test_keepalived_lvs_sync_daemon_with_an_ipv6_group_starts_ipv6_daemons(wire):
    from pylvs import keepalived
    from pylvs.keepalived import Diagnostics
    from pylvs.vrrp import plan as vrrp_plan
    from pylvs.vrrp.roles import DirectorRoles

    config = keepalived.loads("global_defs {\n    lvs_sync_daemon eth9 id 3 group ff02::8:81 port 8850\n}\n",
                              echo=False)
    plan = vrrp_plan.build(config, lambda ifname: "192.0.2.2", Diagnostics(echo=False))
    lvsd = Lvsd(selectors.DefaultSelector())
    DirectorRoles(lvsd.engine, lvsd.daemons, plan).start()  # no instance: master and backup, as keepalived
    assert lvsd.lvsadm("-L", "--daemon")[1] == (
        "master sync daemon (mcast=eth9, syncid=3, maxlen=1452, group=ff02::8:81, port=8850, ttl=1)\n"
        "backup sync daemon (mcast=eth9, syncid=3, maxlen=1452, group=ff02::8:81, port=8850, ttl=1)\n")
