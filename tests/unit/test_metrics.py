"""The metrics surface: declarations, snapshots of a real engine carrying traffic, the Prometheus text
(read back with prometheus_client's own parser), the publisher's threading contract, lvsadm --metrics."""

from __future__ import annotations

import dataclasses
import io
import json
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP, UDP

from pylvs.cli import lvsadm
from pylvs.control import api
from pylvs.engine.drops import REASONS
from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.health.pool import Result, Runtime
from pylvs.ipvs_uapi import PROTO_TCP, PROTO_UDP, Method
from pylvs.keepalived import loads
from pylvs.metrics import declared, snapshot
from pylvs.metrics.address import parse_listen
from pylvs.metrics.exporter import text
from pylvs.metrics.families import families, from_json, to_json
from pylvs.metrics.publisher import Publisher
from tests.unit.director import RIPS, VIP, frame, from_client, from_rs, make_engine


def parsed(exposition: str) -> dict[str, list]:
    """{exposed sample name: [(labels, value)]}, through prometheus_client's parser (not ours)."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(exposition):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def types(exposition: str) -> dict[str, str]:
    return {fam.name: fam.type for fam in text_string_to_metric_families(exposition)}


def backend(rip: str, port: int = 8080, vip: str = VIP, vport: int = 80, proto: str = "TCP") -> dict[str, str]:
    return {"local_address": vip, "local_port": str(vport), "remote_address": rip, "remote_port": str(port),
            "proto": proto, "local_mark": ""}


def value(samples: dict[str, list], name: str, labels: dict[str, str] | None = None) -> float:
    found = [v for lab, v in samples[name] if labels is None or lab == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def exposition(engine, **sources) -> str:
    return text(families(snapshot.take(snapshot.Sources(engine, **sources))))


# -- declarations and exposition -------------------------------------------------------------------


def test_every_declared_metric_is_exposed_with_its_type_help_and_label_names():
    engine = make_engine()
    engine.table.add_service(VirtualService(PROTO_UDP, pack_ip(VIP), 53))
    out = exposition(engine)
    fams = {fam.name: fam for fam in text_string_to_metric_families(out)}
    for metric in declared.METRICS.values():
        base = metric.name.removesuffix("_total") if metric.kind == declared.COUNTER else metric.name
        fam = fams[base]
        assert fam.type == metric.kind and fam.documentation == metric.help
        for sample in fam.samples:
            assert set(sample.labels) == set(metric.labels), (metric.name, sample.labels)


def test_node_exporter_names_types_and_labels():
    out = exposition(make_engine())
    assert types(out)["node_ipvs_connections"] == "counter"  # exposed as node_ipvs_connections_total
    for name in ("incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes"):
        assert types(out)[f"node_ipvs_{name}"] == "counter"
    for name in ("backend_connections_active", "backend_connections_inactive", "backend_weight"):
        assert types(out)[f"node_ipvs_{name}"] == "gauge"
    samples = parsed(out)
    assert "node_ipvs_connections_total" in samples
    assert sorted(lab["remote_address"] for lab, _ in samples["node_ipvs_backend_weight"]) == sorted(RIPS)
    assert value(samples, "node_ipvs_backend_weight", backend(RIPS[0])) == 1


def test_numbers_follow_the_traffic_the_engine_forwarded():
    engine = make_engine()
    sent = []
    for port in (40001, 40002, 40003):  # rr from the newest: 40001 -> rs3, 40002 -> rs2, 40003 -> rs1
        sent.append(from_client(TCP(sport=port, dport=80, flags="S")))
    sent.append(from_client(TCP(sport=40001, dport=80, flags="A")))
    sent.append(from_client(TCP(sport=40002, dport=80, flags="FA")))  # client closes: FIN_WAIT, inactive
    reply = from_rs(RIPS[2], TCP(sport=8080, dport=40001, flags="SA"))
    for pkt in sent[:3]:
        assert engine.process(frame(pkt), 1, 0.0)
    assert engine.process(frame(reply), 2, 0.1)
    for pkt in sent[3:]:
        assert engine.process(frame(pkt), 1, 0.2)
    samples = parsed(exposition(engine))
    assert value(samples, "node_ipvs_connections_total") == 3
    assert value(samples, "node_ipvs_incoming_packets_total") == 5
    assert value(samples, "node_ipvs_incoming_bytes_total") == sum(len(p[IP]) for p in sent)
    assert value(samples, "node_ipvs_outgoing_packets_total") == 1
    assert value(samples, "node_ipvs_outgoing_bytes_total") == len(reply[IP])
    active = {rip: value(samples, "node_ipvs_backend_connections_active", backend(rip)) for rip in RIPS}
    inactive = {rip: value(samples, "node_ipvs_backend_connections_inactive", backend(rip)) for rip in RIPS}
    assert active == {RIPS[0]: 1, RIPS[1]: 0, RIPS[2]: 1}  # SYN_RECV and ESTABLISHED are active
    assert inactive == {RIPS[0]: 0, RIPS[1]: 1, RIPS[2]: 0}
    assert value(samples, "pylvs_backend_incoming_packets_total", backend(RIPS[2])) == 2
    assert value(samples, "pylvs_backend_outgoing_bytes_total", backend(RIPS[2])) == len(reply[IP])
    for rip in RIPS:
        assert value(samples, "pylvs_backend_connections_total", backend(rip)) == 1
    service = {"local_address": VIP, "local_port": "80", "proto": "TCP", "local_mark": ""}
    assert value(samples, "pylvs_service_connections_total", service) == 3
    assert value(samples, "pylvs_service_incoming_packets_total", service) == 5
    assert value(samples, "pylvs_service_info", {**service, "scheduler": "rr"}) == 1
    assert value(samples, "pylvs_backend_info", {**backend(RIPS[0]), "method": "Masq"}) == 1
    assert value(samples, "pylvs_connection_table_entries") == 3


def test_totals_keep_the_traffic_of_deleted_services_as_the_kernels_tot_stats():
    engine = make_engine()
    engine.process(frame(from_client(TCP(sport=40001, dport=80, flags="S"))), 1, 0.0)
    engine.table.flush()
    samples = parsed(exposition(engine))
    assert value(samples, "node_ipvs_connections_total") == 1
    assert value(samples, "node_ipvs_incoming_packets_total") == 1
    assert "node_ipvs_backend_weight" not in samples


def test_fwmark_services_are_labelled_as_proc_net_ip_vs_shows_them():
    engine = make_engine()
    svc = engine.table.add_service(VirtualService(PROTO_TCP, b"\0\0\0\0", 0, fwmark=0x1F))
    engine.table.add_dest(svc, RealServer(pack_ip(RIPS[0]), 0, weight=5, method=Method.ROUTE))
    labels = {"local_address": "", "local_port": "0", "remote_address": RIPS[0], "remote_port": "0",
              "proto": "FWM", "local_mark": "0000001F"}  # `FWM  %08X`
    assert value(parsed(exposition(engine)), "node_ipvs_backend_weight", labels) == 5


def test_drops_every_declared_reason_and_frame_errors():
    engine = make_engine()
    engine.process(bytearray(b"\0" * 14), 1, 0.0)  # a runt
    samples = parsed(exposition(engine, frame_errors=lambda: {"engine": 2, "send": 0}))
    drops = {lab["reason"]: v for lab, v in samples["pylvs_drops_total"]}
    assert set(drops) == set(REASONS)
    assert drops["runt"] == 1 and sum(drops.values()) == 1
    assert value(samples, "pylvs_frame_errors_total", {"stage": "engine"}) == 2


def test_rings_datapath_sync_and_control_requests():
    daemon = {"state": "master", "mcast_ifn": "eth1", "syncid": 7, "mcast_group": "224.0.0.81", "mcast_port": 8848,
              "stats": {"messages": 12, "conns": 30, "skipped_fullnat": 2, "send_errors": 1}}
    samples = parsed(exposition(
        make_engine(),
        rings=lambda: [("vip0", "ip", {"packets": 10, "drops": 1, "truncated": 0, "resyncs": 2}),
                       ("vip0", "arp", {"packets": 3}), ("vip0", "fwmark:5", {"packets": 4}),
                       ("vip0", "ip6", {"packets": 7})],
        datapath=lambda: {"datapath": "bpf", "reason": "", "offloaded_conns": 4, "counters": {"hit": 9, "miss": 1}},
        sync=lambda: [daemon],
        requests={("list", "ok"): 3, ("add-service", "error"): 1}))
    assert value(samples, "pylvs_ring_packets_total", {"interface": "vip0", "ring": "ip"}) == 10
    assert value(samples, "pylvs_ring_drops_total", {"interface": "vip0", "ring": "ip"}) == 1
    assert value(samples, "pylvs_ring_resyncs_total", {"interface": "vip0", "ring": "ip"}) == 2
    assert value(samples, "pylvs_ring_packets_total", {"interface": "vip0", "ring": "arp"}) == 3
    assert value(samples, "pylvs_ring_packets_total", {"interface": "vip0", "ring": "fwmark:5"}) == 4
    assert value(samples, "pylvs_ring_packets_total", {"interface": "vip0", "ring": "ip6"}) == 7
    assert value(samples, "pylvs_datapath_info", {"datapath": "bpf"}) == 1
    assert value(samples, "pylvs_fastpath_connections") == 4
    assert value(samples, "pylvs_fastpath_packets_total", {"outcome": "hit"}) == 9
    assert value(samples, "pylvs_sync_daemon_running", {"daemon": "master"}) == 1
    assert value(samples, "pylvs_sync_daemon_running", {"daemon": "backup"}) == 0
    assert value(samples, "pylvs_sync_messages_total", {"daemon": "master"}) == 12
    assert value(samples, "pylvs_sync_connections_total", {"daemon": "master"}) == 30
    assert value(samples, "pylvs_sync_problems_total", {"daemon": "master", "reason": "skipped_fullnat"}) == 2
    assert value(samples, "pylvs_control_requests_total", {"op": "list", "result": "ok"}) == 3
    assert value(samples, "pylvs_control_requests_total", {"op": "add-service", "result": "error"}) == 1


def test_same_labels_are_added_up_as_node_exporter_does():
    # /proc/net/ip_vs can list two services under one label set (an IPv4 and an IPv6 service of one
    # fwmark); node_exporter adds them up, and so do we rather than expose duplicate series.
    snap = snapshot.take(snapshot.Sources(make_engine()))
    doubled = dataclasses.replace(snap, services=snap.services * 2)
    samples = parsed(text(families(doubled)))
    assert [v for _, v in samples["node_ipvs_backend_weight"]] == [2, 2, 2]


# -- health checks -------------------------------------------------------------------------------

KEEPALIVED = """virtual_server 10.0.0.1 80 {
 lb_algo rr
 lb_kind NAT
 protocol TCP
 real_server 10.0.1.1 8080 {
  TCP_CHECK {
  }
 }
 real_server 10.0.1.2 8080 {
  inhibit_on_failure
  TCP_CHECK {
  }
 }
}
"""


def test_health_state_transitions_and_last_result_per_real_server():
    rt = Runtime(loads(KEEPALIVED, echo=False))
    rt.start()
    (vstate,) = rt.vss.values()
    chk = vstate.rss[("10.0.1.1", 8080)].checkers[0]
    rt.on_result(chk, Result(False, "TCP connection to [10.0.1.1]:tcp:8080 failed."))
    rt.on_result(chk, Result(True))
    for _ in range(2):  # back up, the retry counter is full again: one retry, then down
        rt.on_result(chk, Result(False, "TCP connection to [10.0.1.1]:tcp:8080 timed out."))
    views = {v.real_server: v for v in snapshot.health_views({"virtual_servers": [vs.snapshot()
                                                                                  for vs in rt.vss.values()]})}
    down, up = views["[10.0.1.1]:tcp:8080"], views["[10.0.1.2]:tcp:8080"]
    assert down.labels == ("10.0.0.1", "80", "10.0.1.1", "8080", "TCP", "")
    assert (down.alive, down.transitions, up.alive, up.transitions) == (False, 3, True, 0)
    assert down.checks[0].last_ok is False and "timed out" in down.checks[0].detail
    snap = snapshot.take(snapshot.Sources(make_engine()))
    samples = parsed(text(families(dataclasses.replace(snap, health=tuple(views.values())))))
    labels = {"local_address": "10.0.0.1", "local_port": "80", "remote_address": "10.0.1.1",
              "remote_port": "8080", "proto": "TCP", "local_mark": ""}
    assert value(samples, "pylvs_health_up", labels) == 0  # removed from lvsd, still reported
    assert value(samples, "pylvs_health_transitions_total", labels) == 3
    assert value(samples, "pylvs_health_up", {**labels, "remote_address": "10.0.1.2"}) == 1


def test_transitions_survive_a_reload():
    old = Runtime(loads(KEEPALIVED, echo=False))
    old.start()
    (vstate,) = old.vss.values()
    old.on_result(vstate.rss[("10.0.1.1", 8080)].checkers[0], Result(False))
    new = Runtime(loads(KEEPALIVED.replace("lb_algo rr", "lb_algo wrr"), echo=False), previous=old)
    (vstate,) = new.vss.values()
    assert vstate.rss[("10.0.1.1", 8080)].transitions == 1


# -- the publisher ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_loop_copies_only_while_someone_reads_and_at_most_once_an_interval():
    engine = make_engine()
    builds, wakes = [], []
    clock = Clock()

    def build():
        builds.append(clock.now)
        return snapshot.build(snapshot.Sources(engine))

    pub = Publisher(build, wake=lambda: wakes.append(1), clock=clock)
    pub.step(clock.now)
    assert builds == []  # nobody asked
    assert pub.current(wait=0) is None and wakes  # the first reader wakes the loop
    pub.step(clock.now)
    snap = pub.current(wait=0)
    assert snap is not None and len(snap.services) == 1
    pub.step(clock.now + 0.5)
    assert len(builds) == 1  # not again within the interval
    clock.now += 1.0
    pub.step(clock.now)
    assert len(builds) == 2 and pub.current(wait=0) is not snap
    clock.now += 31  # readers gone: no more copies
    pub.step(clock.now)
    assert len(builds) == 2


def test_a_large_table_is_copied_in_pieces(monkeypatch):
    monkeypatch.setattr(snapshot, "PIECE", 10)
    engine = make_engine(rips=[])
    for i in range(30):
        svc = engine.table.add_service(VirtualService(PROTO_TCP, pack_ip(VIP), 1000 + i))
        for rip in RIPS:
            engine.table.add_dest(svc, RealServer(pack_ip(rip), 80, method=Method.MASQ))
    wakes = []
    clock = Clock()
    pub = Publisher(lambda: snapshot.build(snapshot.Sources(engine)), wake=lambda: wakes.append(1), clock=clock)
    pub.current(wait=0)
    steps = 0
    while steps == 0 or pub.building:
        pub.step(clock.now)
        steps += 1
    assert steps == 11  # 31 services of 1 + 3 entries: three fill a piece of 10, so 10 pieces and the rest
    assert len(wakes) >= 11  # the loop is woken for every piece left
    assert len(pub.current(wait=0).services) == 31


def test_a_reader_waits_for_a_fresh_snapshot_from_the_loop_thread():
    engine = make_engine()
    pub = Publisher(lambda: snapshot.build(snapshot.Sources(engine)))
    stop = threading.Event()

    def loop():
        import time
        while not stop.is_set():
            pub.step(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        snap = pub.current(wait=2.0)
    finally:
        stop.set()
        thread.join()
    assert snap is not None and snap.services[0].dests[0].addr in RIPS


def test_health_is_asked_of_its_source_once_an_interval_and_failures_are_no_health():
    calls = []
    clock = Clock()

    def health():
        calls.append(clock.now)
        if len(calls) > 1:
            raise TimeoutError("checker thread busy")
        return {"virtual_servers": []}

    pub = Publisher(lambda: snapshot.build(snapshot.Sources(make_engine())), health=health, clock=clock)
    pub.current(wait=0)
    pub.step(clock.now)
    assert pub.current(wait=0).health == () and pub.current(wait=0).health == ()
    assert len(calls) == 1
    clock.now += 1.5
    pub.step(clock.now)
    assert pub.current(wait=0).health is None and len(calls) == 2


# -- lvsadm --metrics ----------------------------------------------------------------------------------


class EngineTransport:
    """The control API over a real engine, with get-metrics as lvsd registers it."""

    def __init__(self, engine) -> None:
        self.control = api.Control(engine)
        self.control.register("get-metrics", lambda req: to_json(families(snapshot.take(snapshot.Sources(engine)))))

    def request(self, obj):
        return json.loads(json.dumps(self.control.handle(json.loads(json.dumps(obj)))))


def run_lvsadm(engine, *argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert lvsadm.run(list(argv), transport=EngineTransport(engine), stdout=out, stderr=err) == 0, err.getvalue()
    return out.getvalue()


def test_lvsadm_metrics_prints_the_exporters_text_and_json():
    engine = make_engine()
    engine.process(frame(from_client(UDP(sport=5000, dport=80))), 1, 0.0)  # no UDP service: no_service
    exported = exposition(engine)
    printed = run_lvsadm(engine, "--metrics")
    assert printed == exported
    assert value(parsed(printed), "pylvs_drops_total", {"reason": "no_service"}) == 1
    data = json.loads(run_lvsadm(engine, "--metrics", "--json"))
    assert text(from_json(data)) == exported
    assert {f["name"] for f in data} == set(declared.METRICS)


# -- ADDR:PORT -----------------------------------------------------------------------------------------


def test_listen_addresses():
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen(":9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("9100", "localhost:9100", "::1:9100", "1.2.3.4:0", "1.2.3.4:70000", "1.2.3.4:x", "[1.2.3.4]:80"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_readers_get_the_same_object_while_nothing_changed():
    clock = Clock()
    pub = Publisher(lambda: snapshot.build(snapshot.Sources(make_engine())), health=lambda: {"virtual_servers": []},
                    clock=clock)
    pub.current(wait=0)
    pub.step(clock.now)
    first = pub.current(wait=0)
    assert pub.current(wait=0) is first  # the exporter and the page encode a snapshot once
    clock.now += 1.0
    pub.step(clock.now)
    assert pub.current(wait=0) is not first


def test_a_failing_copy_never_reaches_the_loop(caplog):
    clock = Clock()

    def rings():
        raise OSError("ring gone")

    pub = Publisher(lambda: snapshot.build(snapshot.Sources(make_engine(), rings=rings)), clock=clock)
    pub.current(wait=0)
    pub.step(clock.now)  # logged, not raised
    assert "metrics snapshot failed" in caplog.text and not pub.building
    assert pub.current(wait=0) is None


def test_each_ring_of_an_interface_has_a_name_of_its_own():
    # (an interface's IPv4 and IPv6 rings both have mark 0: one label set each, or Prometheus sees twins)
    names = [snapshot.ring_name(0), snapshot.ring_name(0, ipv6=True), snapshot.ring_name(None),
             snapshot.ring_name(5), snapshot.ring_name(5, ipv6=True)]
    assert names == ["ip", "ip6", "arp", "fwmark:5", "fwmark6:5"]
