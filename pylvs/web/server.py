"""`lvsd --web ADDR:PORT`: the live status page, read-only, in a thread of its own.

It serves the page and its two assets (shipped in pylvs/web/static, nothing from elsewhere) and
`/api/status`, the latest snapshot as JSON, which the page polls every second. Like the exporter it
never touches the engine: it reads what the packet loop published (Publisher.current). Only GET and
HEAD are answered; the page builds its DOM with textContent, and the Content-Security-Policy allows
nothing but this server's own script and style.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from dataclasses import asdict, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from pylvs.engine.drops import REASONS
from pylvs.metrics.publisher import Publisher
from pylvs.metrics.snapshot import Snapshot

log = logging.getLogger(__name__)

ASSETS = {  # path -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


MAX_SERVICES = 250  # services the page draws; the JSON of thousands would cost the loop's GIL every second


def status_json(snap: Snapshot, host: str) -> dict[str, Any]:
    """The page's data: the snapshot as it is (its first MAX_SERVICES services), with the totals of all
    services' connections and the drop reasons' meanings."""
    data = asdict(replace(snap, services=snap.services[:MAX_SERVICES]))
    data["host"] = host
    data["services_total"] = len(snap.services)
    data["active"] = sum(d.active for svc in snap.services for d in svc.dests)
    data["inactive"] = sum(d.inactive for svc in snap.services for d in svc.dests)
    data["drops"] = [{"reason": r, "count": n, "meaning": REASONS.get(r, "")} for r, n in snap.drops]
    return data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # HTTPServer would look up the address's FQDN here: a DNS query from inside a lab namespace.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class StatusPage:
    def __init__(self, publisher: Publisher, host: str, port: int) -> None:
        self.publisher = publisher
        self.hostname = socket.gethostname()
        static = resources.files("pylvs.web") / "static"
        self.assets = {path: (static.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in ASSETS.items()}
        self._cache: tuple[Snapshot | None, bytes] = (None, b"")
        self._cache_lock = threading.Lock()
        page = self

        class Handler(_Handler):
            status_page = page

        server_class = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in host
                                                    else socket.AF_INET})
        self.server = server_class((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="pylvs-web", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def status_body(self) -> bytes | None:
        """The JSON of the latest snapshot, encoded once however many browsers ask."""
        snap = self.publisher.current()
        if snap is None:
            return None
        with self._cache_lock:
            cached, body = self._cache
            if cached is not snap:
                body = json.dumps(status_json(snap, self.hostname), separators=(",", ":")).encode()
                self._cache = (snap, body)
            return body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    status_page: StatusPage
    server_version = "lvsd"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            body = self.status_page.status_body()
            if body is None:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b'{"error":"no snapshot yet"}\n',
                           "application/json", send_body)
            else:
                self._send(HTTPStatus.OK, body, "application/json", send_body)
            return
        asset = self.status_page.assets.get(path)
        if asset is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body)
        else:
            self._send(HTTPStatus.OK, asset[0], asset[1], send_body)

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # read-only

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("web: %s %s", self.address_string(), format % args)
