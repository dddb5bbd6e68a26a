"""ADDR:PORT for lvsd's HTTP listeners (--metrics, --web): `127.0.0.1:9100`, `[::1]:9100`, `:9100` (every
address), `0.0.0.0:9100`. Names are not resolved: the operator says exactly where lvsd listens."""

from __future__ import annotations

import ipaddress


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port); ValueError with a sentence saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, as [::1]:9100")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host or "0.0.0.0", int(port_text)
