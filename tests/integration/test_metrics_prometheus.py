"""lvsd --metrics scraped by a real Prometheus server (Debian's) in the lab, asked in PromQL over its HTTP
API while curl sends traffic through the VIP: the numbers it stored are the connections that were made."""

from __future__ import annotations

import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylvs.lab.topology import VIP, NatLab
from tests.integration import labs
from tests.integration.prometheus import Prometheus

METRICS = "127.0.0.1:9100"  # the director namespace's own loopback: Prometheus runs there too


@pytest.fixture(scope="module")
def lab():
    lab = NatLab()
    try:
        lab.up()
        lab.start_lvsd("--metrics", METRICS)
        lab.nat_service()
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


@pytest.fixture(scope="module")
def prom(lab):
    server = Prometheus(lab.net, "director", METRICS)
    yield server
    server.stop()


def test_prometheus_stores_the_connections_curl_made(lab, prom):
    start = prom.scraped_after(time.time())  # a scrape of the service as it is before the traffic
    requests = 24
    labs.http_get_all(lab, requests, f"http://{VIP}/")
    time.sleep(2.2)  # established flows forwarded by the kernel fast path are read back every 2 s
    end = prom.scraped_after(time.time())
    since = f"@ {start:.3f}"
    assert prom.scalar(f"node_ipvs_connections_total - node_ipvs_connections_total {since}", end) == requests
    per_server = prom.query(f"pylvs_backend_connections_total - pylvs_backend_connections_total {since}", end)
    assert sorted((r["metric"]["remote_address"], float(r["value"][1])) for r in per_server) == \
        [(rip, requests / 3) for rip in lab.rips]  # rr
    # Each HTTP exchange is at least SYN, ACK, request, ACK of the answer, FIN, ACK from the client.
    packets = prom.scalar(f"node_ipvs_incoming_packets_total - node_ipvs_incoming_packets_total {since}", end)
    assert packets >= 5 * requests
    assert prom.scalar(f"node_ipvs_incoming_bytes_total - node_ipvs_incoming_bytes_total {since}", end) >= 52 * packets
    assert prom.scalar(f"node_ipvs_outgoing_packets_total - node_ipvs_outgoing_packets_total {since}", end) >= \
        4 * requests
    assert prom.scalar(f'sum(pylvs_service_connections_total{{local_address="{VIP}",local_port="80",proto="TCP"}}'
                       f' - pylvs_service_connections_total {since})', end) == requests
    assert prom.scalar('pylvs_control_requests_total{op="add-dest",result="ok"}', end) == 3


def test_prometheus_sees_the_open_connections_per_real_server(lab, prom):
    downloads = [lab.net.popen("client", "curl", "-s", "-o", "/dev/null", "--limit-rate", "200k",
                               f"http://{VIP}/big", log="slow-curl.log") for _ in lab.rips]
    try:
        def by_server(result):
            return {r["metric"]["remote_address"]: float(r["value"][1]) for r in result}

        found = prom.eventually("node_ipvs_backend_connections_active",
                                lambda result: by_server(result) == dict.fromkeys(lab.rips, 1.0))
        assert by_server(found) == dict.fromkeys(lab.rips, 1.0)  # rr: one download each, established
        labels = found[0]["metric"]  # an empty label (local_mark of a non-fwmark service) is no label in PromQL
        assert {k: v for k, v in labels.items() if k not in ("__name__", "instance", "job", "remote_address")} == \
            {"local_address": VIP, "local_port": "80", "remote_port": "8080", "proto": "TCP"}
        weight = prom.query('node_ipvs_backend_weight{remote_address="192.0.2.11"}')
        assert float(weight[0]["value"][1]) == 1
        flowing = prom.eventually("rate(node_ipvs_outgoing_bytes_total[5s]) > 300e3", bool)
        assert flowing, "three downloads at 200 kB/s each"
    finally:
        for proc in downloads:
            lab.net.kill(proc, signal.SIGINT)


def test_prometheus_follows_the_sync_daemon(lab, prom):
    assert prom.eventually('pylvs_sync_daemon_running{daemon="master"} == 0', bool)
    lab.lvsadm("--start-daemon", "master", "--mcast-interface", "dip0")
    try:
        labs.http_get_all(lab, 6, f"http://{VIP}/")
        running = prom.eventually('pylvs_sync_daemon_running{daemon="master"} == 1', bool)
        sent = prom.eventually('pylvs_sync_messages_total{daemon="master"} > 0', bool)
        conns = prom.eventually('pylvs_sync_connections_total{daemon="master"} >= 6', bool)
        assert running and sent and conns, (running, sent, conns)
    finally:
        lab.lvsadm("--stop-daemon", "master")
    assert prom.eventually('pylvs_sync_daemon_running{daemon="master"} == 0', bool)


def test_lvsadm_metrics_prints_the_same_families(lab, prom):
    printed = {f.name for f in text_string_to_metric_families(lab.lvsadm("--metrics").stdout)}
    stored = {r["metric"]["__name__"] for r in prom.query('{job="lvsd",__name__=~"node_ipvs_.*|pylvs_.*"}')}
    # Prometheus stores counters under their _total name; families without samples are not stored.
    assert {name.removesuffix("_total") for name in stored} <= printed
    assert {"node_ipvs_connections", "node_ipvs_backend_connections_active", "pylvs_drops"} <= printed
