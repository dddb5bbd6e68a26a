"""lvsd's HTTP listeners on loopback: the Prometheus exporter (/metrics, read back with prometheus_client's
parser) and the status page (its assets, its JSON, its headers, read-only)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import types
from importlib import resources

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import TCP

from pylvs.cli import lvsd
from pylvs.engine.services import RealServer, VirtualService, pack_ip
from pylvs.ipvs_uapi import PROTO_TCP, Method
from pylvs.metrics import snapshot
from pylvs.metrics.exporter import Exporter
from pylvs.metrics.publisher import Publisher
from pylvs.web.server import MAX_SERVICES, StatusPage, status_json
from tests.unit.director import RIPS, VIP, frame, from_client, make_engine


@pytest.fixture
def publisher():
    """A publisher with one snapshot of a three-server NAT service already published."""
    engine = make_engine()
    pub = Publisher(lambda: snapshot.build(snapshot.Sources(engine)))
    pub.current(wait=0)  # a reader asked: the loop's next step copies
    pub.step(time.monotonic())
    return pub


def get(address, path, method="GET"):
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request(method, path)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def test_exporter_serves_the_snapshot_on_metrics(publisher):
    exporter = Exporter(publisher, "127.0.0.1", 0)
    try:
        status, headers, body = get(exporter.address, "/metrics")
    finally:
        exporter.close()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    weights = {s.labels["remote_address"]: s.value for s in fams["node_ipvs_backend_weight"].samples}
    assert weights == dict.fromkeys(RIPS, 1.0)
    assert "process_cpu_seconds" in fams  # the process's own metrics come along


def test_exporter_on_a_taken_port_is_an_oserror(publisher):
    first = Exporter(publisher, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            Exporter(publisher, "127.0.0.1", first.address[1])
    finally:
        first.close()


@pytest.fixture
def page(publisher):
    page = StatusPage(publisher, "127.0.0.1", 0)
    yield page
    page.close()


def test_status_page_serves_its_own_assets_with_a_strict_policy(page):
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = get(page.address, path)
        assert status == 200 and headers["Content-Type"].startswith(ctype), path
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    html = get(page.address, "/")[2].decode()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere


def test_status_json_is_the_snapshot(page):
    status, headers, body = get(page.address, "/api/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    (svc,) = data["services"]
    assert (svc["proto"], svc["addr"], svc["port"], svc["scheduler"]) == ("TCP", VIP, 80, "rr")
    assert sorted(d["addr"] for d in svc["dests"]) == sorted(RIPS)
    assert {d["method"] for d in svc["dests"]} == {"Masq"}
    assert data["health"] is None and data["datapath"] == "python"
    assert {d["reason"] for d in data["drops"]} >= {"runt", "no_service"}
    assert all(d["meaning"] for d in data["drops"])


def test_status_page_is_read_only(page):
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = get(page.address, "/api/status", method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert get(page.address, "/nothing-here")[0] == 404
    status, _, body = get(page.address, "/", "HEAD")
    assert status == 200 and body == b""


def test_status_page_without_a_snapshot_says_so():
    pub = Publisher(lambda: iter(()), interval=1.0)  # a loop that never publishes
    page = StatusPage(pub, "127.0.0.1", 0)
    try:
        pub.current(wait=0)
        start = time.monotonic()
        status, _, _ = get(page.address, "/api/status")
    finally:
        page.close()
    assert status == 503 and time.monotonic() - start < 4


def test_the_page_script_never_writes_markup():
    # Every value from lvsd (service names, checker messages, keepalived names) goes in as text.
    script = (resources.files("pylvs.web") / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script


def test_status_json_draws_a_bounded_number_of_services_but_counts_all():
    engine = make_engine()
    for port in range(1000, 1000 + MAX_SERVICES):
        svc = engine.table.add_service(VirtualService(PROTO_TCP, pack_ip(VIP), port))
        engine.table.add_dest(svc, RealServer(pack_ip(RIPS[0]), port, method=Method.ROUTE))
    engine.process(frame(from_client(TCP(sport=40001, dport=80, flags="S"))), 1, 0.0)
    data = status_json(snapshot.take(snapshot.Sources(engine)), "director")
    assert len(data["services"]) == MAX_SERVICES and data["services_total"] == MAX_SERVICES + 1
    assert (data["active"], data["inactive"]) == (1, 0)  # SYN_RECV counts as active, as in the kernel
    json.dumps(data)


def test_lvsd_names_the_option_whose_address_is_taken(publisher):
    director = types.SimpleNamespace(metrics=publisher)
    with socket.socket() as free, socket.socket() as taken:
        free.bind(("127.0.0.1", 0))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free_port = free.getsockname()[1]
        free.close()  # the exporter gets this one; the page's is taken
        args = lvsd.parse_args(["-i", "eth0", "--metrics", f"127.0.0.1:{free_port}", "--web", f"127.0.0.1:{port}"])
        with pytest.raises(OSError, match=rf"^\[Errno 98\] --web 127\.0\.0\.1:{port}: Address already in use"):
            lvsd.start_observers(director, args)


def test_lvsd_refuses_a_listen_address_that_is_not_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        lvsd.parse_args(["-i", "eth0", "--web", "localhost:8080"])
    assert exit_.value.code == 2
    assert "argument --web: 'localhost:8080': 'localhost' is not an IP address" in capsys.readouterr().err


def test_both_listen_on_ipv6(publisher):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    exporter, page = Exporter(publisher, "::1", 0), StatusPage(publisher, "::1", 0)
    try:
        assert get(exporter.address, "/metrics")[0] == 200
        assert json.loads(get(page.address, "/api/status")[2])["services_total"] == 1
    finally:
        exporter.close()
        page.close()
