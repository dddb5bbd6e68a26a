"""HTTP_GET / SSL_GET (reference §2.3-2.4).

Each url is fetched with keepalived's request; in order, a url fails on: no data at all, a status
outside its status_code set (default 200-299), an MD5 `digest` mismatch, a `regex` mismatch.
All urls must pass. A failed url is the one retried, and while the checker is down or starting
with alpha, urls are spaced by delay_loop unless `fast_recovery`. SSL_GET does not verify the
peer certificate (keepalived never calls SSL_CTX_set_verify).
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl

from pylvs.health.aio import within
from pylvs.health.checks.base import Probe
from pylvs.health.net import close_stream, describe, open_stream
from pylvs.health.pool import Result
from pylvs.keepalived.model import HttpCheck, SSLConfig, Url

log = logging.getLogger("pylvs.health")
MAX_BODY = 16 << 20  # stop reading a runaway body; keepalived reads it all
REGEX_OPTIONS = {"caseless": re.I, "multiline": re.M, "dotall": re.S, "extended": re.X}


def ssl_context(conf: SSLConfig | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if conf is not None:
        try:
            if conf.ca:
                ctx.load_verify_locations(conf.ca)  # loaded, never enforced, as keepalived
            if conf.certificate:
                ctx.load_cert_chain(conf.certificate, conf.key or None, conf.password or None)
        except (OSError, ssl.SSLError) as exc:
            log.warning("SSL context: %s - using an anonymous client context", exc)
    return ctx


def build_request(path: str, host: str, protocol: str) -> bytes:
    version = "1.1" if protocol == "1.1" else "1.0"
    close = "Connection: close\r\n" if protocol in ("1.0C", "1.1") else ""
    return (f"GET {path} HTTP/{version}\r\nUser-Agent: KeepAliveClient\r\n{close}Host: {host}\r\n\r\n").encode()


def split_response(data: bytes) -> tuple[int | None, bytes]:
    """(status code, body) of a raw response; the code is None when the status line is bad."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    status_line = head.split(b"\n", 1)[0].split()
    code = None
    if len(status_line) >= 2 and status_line[0].startswith(b"HTTP/") and status_line[1].isdigit():
        code = int(status_line[1])
    return code, body


def compile_regex(url: Url) -> re.Pattern[bytes] | None:
    if not url.regex:
        return None
    flags = 0
    for option in url.regex_options:
        flags |= REGEX_OPTIONS.get(option, 0)
    return re.compile(url.regex.encode(), flags)


class HttpProbe(Probe):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        assert isinstance(cfg, HttpCheck)
        self.http: HttpCheck = cfg
        self.failed: int | None = None  # index of the url that failed last
        self.regexes = [compile_regex(u) for u in cfg.urls]
        self.ssl: ssl.SSLContext | None = None
        if cfg.ssl:
            self.ssl = self.env.cache.get("ssl")
            if self.ssl is None:
                self.ssl = self.env.cache["ssl"] = ssl_context(self.env.config.ssl)

    def host(self, url: Url) -> str:
        vhost = url.virtualhost or self.http.virtualhost
        if vhost:
            return vhost
        t = self.target
        return f"[{t.ip}]:{t.port}" if ":" in t.ip else f"{t.ip}:{t.port}"

    async def run(self, recovering: bool) -> Result:
        urls = self.http.urls
        order = list(range(len(urls)))
        if self.failed is not None:
            order.remove(self.failed)
            order.insert(0, self.failed)
        for n, i in enumerate(order):
            if n and recovering and not self.http.fast_recovery:
                await self.env.sleep(self.http.delay_loop or 0.0)
            result = await self.fetch(i)
            if not result.ok:
                self.failed = i
                return result
        self.failed = None
        return Result(True)

    async def fetch(self, index: int) -> Result:
        url = self.http.urls[index]
        t, timeout = self.target, self.timeout
        sni = None
        if self.http.enable_sni:
            sni = self.http.sni_name or self.host(url).rsplit(":", 1)[0].strip("[]")
        try:
            reader, writer = await open_stream(t.ip, t.port, self.bind, timeout, self.ssl, sni)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            return Result(False, f"Error connecting server {t.label} ({describe(exc)}).")
        data = bytearray()
        try:
            writer.write(build_request(url.path or "/", self.host(url), self.http.http_protocol))
            await within(timeout, writer.drain())
            while len(data) < MAX_BODY:
                chunk = await within(timeout, reader.read(65536))
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            if not data:
                return Result(False, f"Read, no data received from {t.label} ({describe(exc)}).")
        finally:
            await close_stream(writer)
        return self.judge(index, bytes(data))

    def judge(self, index: int, data: bytes) -> Result:
        url, label = self.http.urls[index], self.target.label
        if not data:
            return Result(False, f"Read, no data received from {label}.")
        code, body = split_response(data)
        ranges = url.status_codes or [(200, 299)]
        if code is None or not any(lo <= code <= hi for lo, hi in ranges):
            return Result(False, f"HTTP status code error to {label} url({url.path}), status_code [{code}].")
        if url.digest:
            got = hashlib.md5(body).hexdigest()
            if got != url.digest:
                return Result(False, f"MD5 digest error to {label} url[{url.path}], MD5SUM [{got}].")
        regex = self.regexes[index]
        if regex is not None:
            m = regex.search(body, url.regex_min_offset or 0)
            if m is not None and url.regex_max_offset is not None and m.start() > url.regex_max_offset:
                m = None
            if (m is None) != url.regex_no_match:
                return Result(False, f"Regex match failed to {label} url({url.path}).")
        return Result(True)
