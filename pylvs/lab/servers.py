"""Real servers for labs: nginx for HTTP (fast, logs the peer address), a small UDP responder."""

from __future__ import annotations

import os
import shutil
import sys

from pylvs.lab.netns import LabError, Netns

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/{name}-nginx.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format peer "{log_peer} $request";
    access_log {tmp}/{name}-access.log peer;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 1000000;
    server {{
        listen {addr}:{port} reuseport{listen_opts};{listen6}
        location = /big {{ alias {tmp}/big.bin; }}
        location / {{ default_type text/plain; return 200 "{name}\\n"; }}
    }}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        raise LabError("nginx is not installed (apt-get install nginx-light)")
    return path


def start_nginx(net: Netns, role: str, addr: str, port: int, name: str, proxy_protocol: bool = False,
                addr6: str | None = None):
    """nginx answering its `name`; the access log's first field is the peer (or, behind the PROXY
    protocol, the client address the header carried). `addr6`: also listen on this IPv6 address."""
    conf = os.path.join(net.tmp, f"{name}-nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=net.tmp, name=name, addr=addr, port=port,
                                  listen_opts=" proxy_protocol" if proxy_protocol else "",
                                  listen6=(f"\n        listen [{addr6}]:{port} reuseport"
                                           f"{' proxy_protocol' if proxy_protocol else ''};") if addr6 else "",
                                  log_peer="$proxy_protocol_addr" if proxy_protocol else "$remote_addr"))
    return net.popen(role, nginx_binary(), "-c", conf, "-e", os.path.join(net.tmp, f"{name}-error.log"),
                     log=f"{name}-nginx.out")


def access_log(net: Netns, name: str) -> list[str]:
    """Client addresses nginx logged, one per request."""
    try:
        with open(os.path.join(net.tmp, f"{name}-access.log")) as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        return []


def udp_log(net: Netns, name: str) -> list[tuple[str, bytes]]:
    """(client ip:port, payload) of each datagram a lab UDP server received."""
    try:
        with open(os.path.join(net.tmp, f"{name}-udp.log")) as f:
            return [(peer, bytes.fromhex(data)) for peer, _, data in (line.rstrip("\n").partition(" ") for line in f)]
    except FileNotFoundError:
        return []


def start_udp(net: Netns, role: str, addr: str, port: int, name: str):
    log = os.path.join(net.tmp, f"{name}-udp.log")
    return net.popen(role, sys.executable, "-m", "pylvs.lab.udp_echo", "--bind", f"{addr}:{port}",
                     "--name", name, "--log", log, log=f"{name}-udp.out")


def make_big_file(net: Netns, size: int) -> str:
    path = os.path.join(net.tmp, "big.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20) * (size >> 20))
    return path
