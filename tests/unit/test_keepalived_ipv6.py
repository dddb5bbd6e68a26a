"""keepalived with IPv6: virtual servers, real servers, fwmark and group entries become lvsd services
(applied to a real engine through the control API), and the checkers run over IPv6 (on ::1)."""

from __future__ import annotations

import asyncio
import os

from pylvs.engine.services import pack_ip
from pylvs.health.checks import ProbeEnv, make_probe
from pylvs.health.pool import Runtime
from pylvs.health.scripts import ScriptRunner
from pylvs.keepalived import Diagnostics, load, loads
from pylvs.keepalived.translate import build
from tests.unit.test_keepalived_translate import apply_all

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived", "samples")


def test_the_ipv6_sample_builds_an_ipv6_service():
    config = load(os.path.join(DATA, "keepalived.conf.IPv6"), echo=False)
    diags = Diagnostics(echo=False)
    engine = apply_all(build(config, diags))
    assert diags.items == []
    svc = engine.table.find(6, pack_ip("2001:470:1f09:e72::15"), 80)
    assert sorted(d.addr for d in svc.dests) == [pack_ip("2001:470:1f09:e72::40"), pack_ip("2001:470:1f09:e72::41")]


def test_persistence_granularity_fwmark_and_group_ranges():
    config = loads(
        "virtual_server_group g6 {\n 2001:db8::10-12 443\n fwmark 5 inet6\n}\n"
        "virtual_server group g6 {\n lb_algo sh\n lb_kind DR\n protocol TCP\n persistence_timeout 60\n"
        " persistence_granularity 64\n real_server 2001:db8:1::1 443 {\n weight 2\n }\n}\n"
        "virtual_server 2001:db8::20 80 {\n lb_algo rr\n lb_kind NAT\n protocol UDP\n"
        " real_server 2001:db8:1::2 8080 {\n }\n}\n", echo=False)
    diags = Diagnostics(echo=False)
    requests = build(config, diags)
    engine = apply_all(requests)
    assert diags.items == []
    for last in (0x10, 0x11, 0x12):
        svc = engine.table.find(6, pack_ip(f"2001:db8::{last:x}"), 443)
        assert svc is not None and svc.scheduler == "sh" and svc.netmask == b"\xff" * 8 + bytes(8)
        assert [(d.addr, d.port, d.weight) for d in svc.dests] == [(pack_ip("2001:db8:1::1"), 443, 2)]
    fwm = engine.table.by_fwmark6[5]
    assert fwm.netmask == b"\xff" * 8 + bytes(8) and 5 not in engine.table.by_fwmark
    udp = engine.table.find(17, pack_ip("2001:db8::20"), 80)
    assert [(d.addr, d.port) for d in udp.dests] == [(pack_ip("2001:db8:1::2"), 8080)]


def probe(checker: str, port: int):
    config = loads(f"virtual_server 2001:db8::1 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
                   f" real_server ::1 {port} {{\n{checker}\n }}\n}}\n", echo=False)
    (chk,) = Runtime(config).checkers()
    return make_probe(chk, ProbeEnv(config, ScriptRunner(config.global_defs), sleep=lambda s: asyncio.sleep(0)))


def test_tcp_and_http_checks_over_ipv6():
    requests: list[bytes] = []

    async def web(reader, writer):
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(web, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        tcp = await probe("TCP_CHECK {\nconnect_timeout 1\n}", port).run(False)
        http = await probe("HTTP_GET {\nurl {\npath /\nstatus_code 200\n}\nconnect_timeout 1\n}", port).run(False)
        server.close()
        refused = await probe("TCP_CHECK {\nconnect_timeout 1\n}", port).run(False)
        return tcp, http, refused, port

    tcp, http, refused, port = asyncio.run(asyncio.wait_for(main(), 10))
    assert tcp.ok and http.ok, (tcp, http)
    assert requests[-1].endswith(f"Host: [::1]:{port}\r\n\r\n".encode())
    assert not refused.ok and f"[::1]:tcp:{port}" in refused.detail
