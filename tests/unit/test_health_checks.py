"""Checker implementations against real servers on 127.0.0.1 started by the tests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
import time

import pytest

from pylvs.health.checks import ProbeEnv, make_probe
from pylvs.health.checks.dns import check_reply, encode_name, query
from pylvs.health.checks.file import judge, read_value
from pylvs.health.checks.ping import checksum, echo_request, parse_reply
from pylvs.health.checks.udp import matches
from pylvs.health.pool import Runtime
from pylvs.health.scripts import ScriptRunner
from pylvs.keepalived import loads

SSL_DIR = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived", "ssl")
ROOT = os.geteuid() == 0


def probe(checker: str, port: int, top: str = "", rs_body: str = "", addr: str = "127.0.0.1"):
    config = loads(f"{top}virtual_server 10.0.0.1 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
                   f" real_server {addr} {port} {{\n{rs_body}\n{checker}\n }}\n}}\n", echo=False)
    assert not [w for w in config.warnings if "Unknown" in w or "extra" in w], config.warnings
    (chk,) = Runtime(config).checkers()
    return make_probe(chk, ProbeEnv(config, ScriptRunner(config.global_defs), sleep=lambda s: asyncio.sleep(0)))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- TCP_CHECK -------------------------------------------------------------------------------------

def test_tcp_check_success_refused_and_timeout():
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ok = await probe("TCP_CHECK {\nconnect_timeout 0.5\n}", port).run(False)
        server.close()
        refused = await probe("TCP_CHECK {\nconnect_timeout 0.5\n}", free_port()).run(False)
        # a listener whose accept queue is full drops SYNs: the connect times out
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fport = full.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", fport))
        timed = await probe("TCP_CHECK {\nconnect_timeout 0.2\n}", fport).run(False)
        filler.close()
        full.close()
        return ok, refused, timed, port

    ok, refused, timed, port = run(main())
    assert ok.ok
    assert not refused.ok and refused.detail.endswith("failed.")
    assert not timed.ok and timed.detail.startswith("TCP connection to [127.0.0.1]:tcp:") and "timeout." in timed.detail


def test_tcp_check_connect_ip_port_and_bindto():
    async def main():
        seen = []

        def handle(reader, writer):
            seen.append(writer.get_extra_info("peername"))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        src = free_port()
        res = await probe(f"TCP_CHECK {{\nconnect_ip 127.0.0.1\nconnect_port {port}\nbindto 127.0.0.3\n"
                          f"bind_port {src}\nconnect_timeout 0.5\n}}", 9, addr="127.0.0.9").run(False)
        await asyncio.sleep(0.05)
        server.close()
        return res, seen, src

    res, seen, src = run(main())
    assert res.ok and seen == [("127.0.0.3", src)]


# -- HTTP_GET / SSL_GET ----------------------------------------------------------------------------

class Web:
    """A small HTTP server: path -> (status, body); records requests."""

    def __init__(self, routes: dict[str, tuple[int, bytes]], mode: str = "normal") -> None:
        self.routes = routes
        self.mode = mode
        self.requests: list[bytes] = []
        self.sni: list[str | None] = []

    async def handle(self, reader, writer):
        try:
            data = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(data)
            if self.mode == "silent":
                await asyncio.sleep(5)
            if self.mode == "close":
                return
            path = data.split(b" ")[1].decode()
            status, body = self.routes.get(path, (404, b"not found"))
            writer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, tls: bool = False) -> int:
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(SSL_DIR, "server.crt"), os.path.join(SSL_DIR, "server.key"))
            ctx.sni_callback = lambda sock, name, c: self.sni.append(name)
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=ctx)
        return self.server.sockets[0].getsockname()[1]

    def close(self):
        self.server.close()


BODY = b"<html>OK 42 service healthy</html>"
DIGEST = hashlib.md5(BODY).hexdigest()


def http_check(urls: str, extra: str = "connect_timeout 0.5", kind: str = "HTTP_GET") -> str:
    return f"{kind} {{\n{urls}\n{extra}\n}}"


def url(path: str, *lines: str) -> str:
    return "url {\npath " + path + "\n" + "\n".join(lines) + "\n}\n"


def check_web(checker: str, routes=None, mode="normal", tls=False, rs_body="", top="", recovering=False):
    async def main():
        web = Web(routes if routes is not None else {"/ok": (200, BODY)}, mode)
        port = await web.start(tls)
        result = await probe(checker, port, rs_body=rs_body, top=top).run(recovering)
        web.close()
        return result, web, port

    return run(main())


def test_http_get_status_digest_and_request_format():
    res, web, port = check_web(http_check(url("/ok", f"digest {DIGEST}")))
    assert res.ok
    assert web.requests == [f"GET /ok HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                            .encode()]
    res, _, _ = check_web(http_check(url("/ok", "digest 00000000000000000000000000000000")))
    assert not res.ok and res.detail.startswith("MD5 digest error to [127.0.0.1]:tcp:") and DIGEST in res.detail
    res, _, _ = check_web(http_check(url("/missing")))
    assert not res.ok and "HTTP status code error" in res.detail and "[404]" in res.detail


def test_http_get_status_code_sets():
    routes = {"/a": (503, b"busy"), "/b": (404, b"no")}
    res, _, _ = check_web(http_check(url("/a", "status_code 200-299 503")), routes)
    assert res.ok
    res, _, _ = check_web(http_check(url("/b", "status_code 200-299 503")), routes)
    assert not res.ok


def test_http_get_regex():
    res, _, _ = check_web(http_check(url("/ok", 'regex "OK [0-9]+"')))
    assert res.ok
    res, _, _ = check_web(http_check(url("/ok", 'regex "FAIL"')))
    assert not res.ok and "Regex match failed" in res.detail
    res, _, _ = check_web(http_check(url("/ok", 'regex "FAIL"', "regex_no_match")))
    assert res.ok
    res, _, _ = check_web(http_check(url("/ok", 'regex "ok [0-9]+"', "regex_options caseless")))
    assert res.ok
    res, _, _ = check_web(http_check(url("/ok", 'regex "OK"', "regex_max_offset 3")))
    assert not res.ok


def test_http_get_virtualhost_and_protocol():
    res, web, _ = check_web(http_check(url("/ok"), "virtualhost www.example\nhttp_protocol 1.1"))
    assert res.ok
    assert web.requests[0] == (b"GET /ok HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\n"
                               b"Host: www.example\r\n\r\n")
    _, web, _ = check_web(http_check(url("/ok", "virtualhost url.example"), "http_protocol 1.0C"),
                          rs_body="virtualhost rs.example")
    assert web.requests[0] == (b"GET /ok HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\n"
                               b"Host: url.example\r\n\r\n")


def test_http_get_no_data_and_read_timeout():
    res, _, _ = check_web(http_check(url("/ok")), mode="close")
    assert not res.ok and res.detail.startswith("Read, no data received from [127.0.0.1]:tcp:")
    res, _, _ = check_web(http_check(url("/ok"), "connect_timeout 0.2"), mode="silent")
    assert not res.ok and "timeout" in res.detail


def test_http_get_all_urls_must_pass_and_the_failed_one_is_retried_first():
    async def main():
        web = Web({"/a": (200, b"a"), "/b": (500, b"b")})
        port = await web.start()
        p = probe(http_check(url("/a") + url("/b")), port)
        first = await p.run(False)
        web.requests.clear()
        web.routes["/b"] = (200, b"b")
        second = await p.run(True)
        web.close()
        return first, second, [r.split(b" ")[1] for r in web.requests]

    first, second, order = run(main())
    assert not first.ok and "url(/b)" in first.detail
    assert second.ok and order == [b"/b", b"/a"]


def test_http_get_recovery_spaces_urls_unless_fast_recovery():
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main(extra: str):
        web = Web({"/a": (200, b"a"), "/b": (200, b"b")})
        port = await web.start()
        p = probe(http_check(url("/a") + url("/b"), "delay_loop 4\n" + extra), port)
        p.env.sleep = fake_sleep
        res = await p.run(True)
        web.close()
        return res

    assert run(main("")).ok and slept == [4]
    slept.clear()
    assert run(main("fast_recovery")).ok and slept == []


def test_ssl_get_without_verification_and_with_sni():
    res, web, _ = check_web(http_check(url("/ok", f"digest {DIGEST}"), kind="SSL_GET"), tls=True)
    assert res.ok and web.sni == [None]
    res, web, _ = check_web(http_check(url("/ok"), "enable_sni\nsni_name api.example", kind="SSL_GET"), tls=True)
    assert res.ok and web.sni == ["api.example"]
    # plain HTTP server, SSL_GET: the handshake fails
    res, _, _ = check_web(http_check(url("/ok"), "connect_timeout 0.5", kind="SSL_GET"))
    assert not res.ok


def test_ssl_get_with_a_client_certificate_block():
    top = (f"SSL {{\ncertificate {os.path.join(SSL_DIR, 'server.crt')}\nkey {os.path.join(SSL_DIR, 'server.key')}\n"
           f"ca {os.path.join(SSL_DIR, 'server.crt')}\n}}\n")
    res, _, _ = check_web(http_check(url("/ok"), kind="SSL_GET"), tls=True, top=top)
    assert res.ok


# -- SMTP_CHECK ------------------------------------------------------------------------------------

def test_smtp_check_dialogue():
    async def main(greeting: bytes):
        lines = []

        async def handle(reader, writer):
            writer.write(greeting)
            while True:
                line = await reader.readline()
                if not line:
                    break
                lines.append(line)
                writer.write(b"250 ok\r\n" if line.startswith(b"HELO") else b"221 bye\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        res = await probe("SMTP_CHECK {\nhelo_name me.example\nconnect_timeout 0.5\n}",
                          server.sockets[0].getsockname()[1]).run(False)
        await asyncio.sleep(0.05)
        server.close()
        return res, lines

    res, lines = run(main(b"220-smtp.example\r\n220 ready\r\n"))
    assert res.ok and lines == [b"HELO me.example\r\n", b"QUIT\r\n"]
    res, _ = run(main(b"554 go away\r\n"))
    assert not res.ok and "expected 220, got 554" in res.detail


# -- UDP_CHECK -------------------------------------------------------------------------------------

class Responder(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.got: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append(data)
        if self.reply is not None:
            self.transport.sendto(self.reply, addr)


async def udp_server(protocol: asyncio.DatagramProtocol) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


def check_udp(checker: str, reply: bytes | None):
    async def main():
        responder = Responder(reply)
        transport, port = await udp_server(responder)
        res = await probe(checker, port).run(False)
        transport.close()
        return res, responder.got

    return run(main())


def test_udp_check_silence_is_success_and_icmp_error_is_failure():
    res, got = check_udp("UDP_CHECK {\nconnect_timeout 0.2\npayload cafe\n}", None)
    assert res.ok and got == [b"\xca\xfe"]
    closed = run(probe("UDP_CHECK {\nconnect_timeout 0.5\n}", free_port(socket.SOCK_DGRAM)).run(False))
    assert not closed.ok and "UDP_CHECK on service [127.0.0.1]:udp:" in closed.detail


def test_udp_check_require_reply():
    checker = "UDP_CHECK {\nconnect_timeout 0.3\nrequire_reply 01XX03\nmin_reply_length 3\nmax_reply_length 8\n}"
    assert check_udp(checker, b"\x01\x99\x03\x04")[0].ok
    assert not check_udp(checker, b"\x02\x99\x03\x04")[0].ok
    assert not check_udp(checker, b"\x01\x99")[0].ok
    res, _ = check_udp(checker, None)
    assert not res.ok and "no reply" in res.detail
    assert matches(b"\xab\xcd", "aXcd") and not matches(b"\xab", "abcd")


# -- DNS_CHECK -------------------------------------------------------------------------------------

class Dns(asyncio.DatagramProtocol):
    """Answers every query with the given RCODE (and optionally a wrong id first)."""

    def __init__(self, rcode: int = 0, wrong_id_first: bool = False, silent: bool = False) -> None:
        self.rcode, self.wrong, self.silent = rcode, wrong_id_first, silent
        self.questions: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        qid, _flags, qd = struct.unpack("!HHH", data[:6])
        self.questions.append(data[12:])
        if self.silent:
            return
        if self.wrong:
            self.transport.sendto(struct.pack("!HHHHHH", qid ^ 1, 0x8180, 1, 0, 0, 0) + data[12:], addr)
        self.transport.sendto(struct.pack("!HHHHHH", qid, 0x8180 | self.rcode, qd, 0, 0, 0) + data[12:], addr)


def check_dns(checker: str, server: Dns):
    async def main():
        transport, port = await udp_server(server)
        res = await probe(checker, port).run(False)
        transport.close()
        return res

    return run(main())


def test_dns_check():
    server = Dns(wrong_id_first=True)
    assert check_dns("DNS_CHECK {\ntype A\nname www.example.com\nconnect_timeout 0.5\n}", server).ok
    assert server.questions == [encode_name("www.example.com") + struct.pack("!HH", 1, 1)]
    default = Dns()
    assert check_dns("DNS_CHECK {\nconnect_timeout 0.5\n}", default).ok
    assert default.questions == [b"\0" + struct.pack("!HH", 6, 1)]  # SOA for the root by default
    res = check_dns("DNS_CHECK {\nconnect_timeout 0.5\n}", Dns(rcode=3))
    assert not res.ok and "NXDOMAIN" in res.detail
    res = check_dns("DNS_CHECK {\nconnect_timeout 0.2\n}", Dns(silent=True))
    assert not res.ok and "timeout" in res.detail


def test_dns_wire_format():
    q = query(0x1234, "example.org.", "MX")
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x07example\x03org\x00" + struct.pack("!HH", 15, 1)
    assert check_reply(struct.pack("!HHHHHH", 7, 0x8180, 1, 0, 0, 0), 7) == (True, "")
    assert check_reply(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0), 7) is None  # not a response
    assert check_reply(struct.pack("!HHHHHH", 7, 0x8182, 1, 0, 0, 0), 7) == (False, "RCODE SERVFAIL")


# -- MISC_CHECK ------------------------------------------------------------------------------------

def script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_misc_check_exit_codes(tmp_path):
    ok = script(tmp_path, "ok.sh", "exit 0")
    fail = script(tmp_path, "fail.sh", "exit 1")
    assert run(probe(f"MISC_CHECK {{\nmisc_path {ok}\n}}", 80).run(False)).ok
    res = run(probe(f"MISC_CHECK {{\nmisc_path {fail}\n}}", 80).run(False))
    assert not res.ok and res.detail == "exited with status 1"
    args = script(tmp_path, "args.sh", '[ "$1" = "a b" ] && [ "$2" = c ]')
    assert run(probe(f"MISC_CHECK {{\nmisc_path \"{args} 'a b' c\"\n}}", 80).run(False)).ok
    missing = run(probe(f"MISC_CHECK {{\nmisc_path {tmp_path}/nope.sh\n}}", 80).run(False))
    assert not missing.ok and "not found" in missing.detail


def test_misc_dynamic_weights(tmp_path):
    def result(code: int):
        path = script(tmp_path, f"e{code}.sh", f"exit {code}")
        return run(probe(f"MISC_CHECK {{\nmisc_path {path}\nmisc_dynamic\n}}", 80, rs_body="weight 3").run(False))

    assert (result(0).ok, result(0).weight) == (True, 0)
    assert (result(1).ok, result(1).weight) == (False, None)
    assert (result(10).ok, result(10).weight) == (True, 10 - 2 - 3)  # weight becomes 8
    assert (result(2).ok, result(2).weight) == (True, -3)  # weight becomes 0
    res = run(probe(f"MISC_CHECK {{\nmisc_path {script(tmp_path, 'x.sh', 'exit 10')}\n}}", 80).run(False))
    assert not res.ok  # without misc_dynamic any non-zero exit fails


def test_misc_check_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    slow = script(tmp_path, "slow.sh", f"sleep 30 &\necho $! > {marker}\nwait")

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        res = await probe(f"MISC_CHECK {{\nmisc_path {slow}\nmisc_timeout 0.3\n}}", 80).run(False)
        return res, loop.time() - t0

    res, took = run(main())
    assert not res.ok and res.detail == "timed out" and took < 2.5
    assert not alive(int(marker.read_text()))


def alive(pid: int) -> bool:
    """Running (a zombie left to a non-reaping init does not count)."""
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in "ZX":
            return False
        time.sleep(0.02)
    return True


@pytest.mark.skipif(not ROOT, reason="dropping privileges needs root")
def test_misc_check_runs_as_the_configured_user():
    checker = "MISC_CHECK {\nmisc_path \"/bin/sh -c 'test $(id -u) = 65534'\"\nuser nobody\n}"
    assert run(probe(checker, 80).run(False)).ok
    assert not run(probe("MISC_CHECK {\nmisc_path \"/bin/sh -c 'test $(id -u) = 65534'\"\n}", 80,
                         top="global_defs {\n script_user root\n}\n").run(False)).ok
    assert run(probe("MISC_CHECK {\nmisc_path \"/bin/sh -c 'test $(id -u) = 65534'\"\n}", 80,
                     top="global_defs {\n script_user nobody\n}\n").run(False)).ok


@pytest.mark.skipif(not ROOT, reason="script security only applies to scripts run as root")
def test_enable_script_security_refuses_unsafe_scripts(tmp_path):
    unsafe = script(tmp_path, "unsafe.sh", "exit 0")
    os.chmod(unsafe, 0o777)
    top = "global_defs {\n enable_script_security\n script_user root\n}\n"
    res = run(probe(f"MISC_CHECK {{\nmisc_path {unsafe}\n}}", 80, top=top).run(False))
    assert not res.ok and "unsafe permissions" in res.detail
    safe = script(tmp_path, "safe.sh", "exit 0")
    assert run(probe(f"MISC_CHECK {{\nmisc_path {safe}\n}}", 80, top=top).run(False)).ok
    # without enable_script_security the unsafe script still runs (keepalived only warns)
    assert run(probe(f"MISC_CHECK {{\nmisc_path {unsafe}\n}}", 80,
                     top="global_defs {\n script_user root\n}\n").run(False)).ok


# -- PING_CHECK ------------------------------------------------------------------------------------

def _icmp_allowed() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not _icmp_allowed(), reason="no ICMP socket: needs root or net.ipv4.ping_group_range")
def test_ping_check_loopback():
    res = run(probe("PING_CHECK {\nconnect_timeout 1\n}", 80).run(False))
    assert res.ok, res.detail


def test_icmp_packets():
    pkt = echo_request(4, 0x1234, 7, b"abcd")
    assert pkt[0] == 8 and struct.unpack("!HH", pkt[4:8]) == (0x1234, 7) and checksum(pkt) == 0
    ip_header = bytes([0x45]) + bytes(19)
    reply = bytes([0, 0]) + pkt[2:]
    assert parse_reply(ip_header + reply, 4, raw=True) == (0, 0x1234, 7)
    assert parse_reply(reply, 4, raw=False) == (0, 0x1234, 7)
    assert echo_request(6, 1, 2, b"")[0] == 128


# -- FILE_CHECK ------------------------------------------------------------------------------------

def test_file_check_semantics():
    assert judge(0, 0, False) == (True, 0)
    assert judge(5, 0, False) == (False, 0)
    assert judge(0, 0, True) == (False, 0)
    assert judge(3, 10, False) == (True, 30)
    assert judge(3, 10, True) == (True, -30)
    assert judge(2**31, -1, False) == (False, -(2**31))


def test_file_check_reads_the_tracked_file(tmp_path):
    path = tmp_path / "state"
    top = f"track_file st {{\nfile {path}\nweight 2\ninit_file 4\n}}\n"
    p = probe("FILE_CHECK {\ntrack_file st\n}", 80, top=top)
    assert path.read_text() == "4\n"  # init_file created it
    assert (run(p.run(False)).ok, run(p.run(False)).weight) == (True, 8)
    path.write_text("junk")
    assert read_value(str(path)) == 0
    p0 = probe("FILE_CHECK {\ntrack_file st\nweight 0\n}", 80, top=top)
    path.write_text("1\n")
    assert not run(p0.run(False)).ok
    assert p0.next_delay(60) == p0.env.file_poll_interval
