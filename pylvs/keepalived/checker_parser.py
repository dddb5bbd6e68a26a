"""Checker blocks inside real_server: TCP_CHECK, HTTP_GET, SSL_GET, SMTP_CHECK, DNS_CHECK,
UDP_CHECK, PING_CHECK, MISC_CHECK, FILE_CHECK, BFD_CHECK (reference §2)."""

from __future__ import annotations

import copy
import re
from typing import Any

from pylvs.keepalived.blocks import Ctx, Kw, accept, at, flag, setter, switch, text
from pylvs.keepalived.extensions import later_keyword
from pylvs.keepalived.lexer import Node
from pylvs.keepalived.model import (
    BfdCheck,
    Checker,
    DnsCheck,
    FileCheck,
    HttpCheck,
    MiscCheck,
    PingCheck,
    RealServer,
    Script,
    SmtpCheck,
    TcpCheck,
    UdpCheck,
    Url,
)
from pylvs.keepalived.values import (
    UINT_MAX,
    BadValue,
    need,
    read_command,
    read_file_weight,
    read_hex,
    read_ip,
    read_timer,
    read_unsigned,
)

DNS_TYPES = ("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA")
_HEX_PATTERN = re.compile(r"^([0-9a-fA-FxX]{2})*$")


def _nb_get_retry(node: Node, chk: Checker, ctx: Ctx) -> None:
    ctx.diags.warn("nb_get_retry is deprecated - please use 'retry'", node)
    need(node, 1)
    try:
        chk.retry = accept(lambda: read_unsigned(node.args[0]), node, ctx)
    except BadValue as exc:
        raise exc.then(f"Invalid nb_get_retry value '{node.args[0]}'") from None


# keepalived's install_checker_common_keywords, with its words for bad values
TIMING = {
    "retry": setter("retry", read_unsigned, invalid="Invalid retry connection value '{}'"),
    "delay_before_retry": setter("delay_before_retry", read_timer,
                                 invalid="Invalid delay_before_retry connection value '{}'"),
    "delay_loop": setter("delay_loop", lambda s: read_timer(s, 1), invalid="delay_loop '{}' is invalid - ignoring"),
    "warmup": setter("warmup", read_timer, invalid="Invalid warmup connection value '{}'"),
    "alpha": flag("alpha"),
    "log_all_failures": flag("log_all_failures"),
}

CONNECT = {
    "connect_ip": setter("connect_ip", lambda s: read_ip(s, "connect_ip")),
    "connect_port": setter("connect_port", lambda s: read_unsigned(s, 1, 65535),
                           invalid="Invalid checker connect_port '{}'"),
    "bindto": setter("bindto", lambda s: read_ip(s, "bindto address")),
    "bind_port": setter("bind_port", lambda s: read_unsigned(s, 1, 65535), invalid="Invalid checker bind_port '{}'"),
    "bind_if": setter("bind_if", text),
    "fwmark": setter("fwmark", read_unsigned, invalid="Invalid fwmark connection value '{}'"),
    "connect_timeout": setter("connect_timeout", lambda s: read_timer(s, 1, UINT_MAX),
                              invalid="connect_timeout {} invalid - ignoring"),
    **TIMING,
}


# -- HTTP_GET / SSL_GET ----------------------------------------------------------------------------

def _status_code(node: Node, url: Url, ctx: Ctx) -> None:
    """`status_code N|N-M ...`: each bad one is logged and skipped, the others kept."""
    for word in node.args:
        match = re.fullmatch(r"([0-9]*)(?:-([0-9]*))?", word)
        lo = int(match.group(1) or 0) if match else 0
        hi = int(match.group(2) or 0) if match and match.group(2) is not None else lo
        if not match or not (100 <= lo <= hi <= 599):
            ctx.diags.error(f"Invalid HTTP_GET status code '{word}'", node)
            continue
        url.status_codes.append((lo, hi))


def _digest(node: Node, url: Url, ctx: Ctx) -> None:
    need(node, 1)
    digest = node.args[0]
    if url.digest is not None:
        raise BadValue(f"Digest '{digest}' is a duplicate")
    if len(digest) != 32:
        raise BadValue(f"digest '{digest}' character length should be 32 rather than {len(digest)}")
    for i in range(15, -1, -1):  # keepalived reads it from the end, two digits at a time
        if not re.fullmatch(r"[0-9a-fA-F]{2}", digest[2 * i:2 * i + 2]):
            raise BadValue(f"Unable to interpret hex digit in '{digest[:2 * i + 2]}' at offset {2 * i}/{2 * i + 1}")
    url.digest = digest.lower()


def _regex(node: Node, url: Url, ctx: Ctx) -> None:
    need(node, 1)
    try:
        re.compile(node.args[0].encode())
    except re.error as exc:
        raise BadValue(f"Regex '{node.args[0]}' failed to compile: {exc} - ignoring") from None
    url.regex = node.args[0]


def _regex_options(node: Node, url: Url, ctx: Ctx) -> None:
    url.regex_options.extend(node.args)


def _regex_stack(node: Node, url: Url, ctx: Ctx) -> None:
    """PCRE2 JIT stack sizes: nothing to size with Python's re."""


URL = {
    "path": setter("path", text),
    "digest": Kw(_digest, max_args=1),
    "status_code": Kw(_status_code),
    "virtualhost": setter("virtualhost", text),
    "regex": Kw(_regex, max_args=1),
    "regex_no_match": switch("regex_no_match"),
    "regex_options": Kw(_regex_options),
    "regex_min_offset": setter("regex_min_offset", read_unsigned),
    "regex_max_offset": setter("regex_max_offset", read_unsigned),
    "regex_stack": Kw(_regex_stack),
    "tls_compliant": later_keyword(switch("tls_compliant"), "2.2.8"),
}


def _url(node: Node, chk: HttpCheck, ctx: Ctx) -> Url:
    return Url(at=at(node))


def _url_end(node: Node, chk: HttpCheck, url: Url, ctx: Ctx) -> None:
    if not url.path:
        raise BadValue("HTTP/SSL_GET checker url has no path - ignoring")
    if url.tls_compliant and not chk.ssl:
        ctx.diags.warn("tls_compliant is only valid for SSL_GET - ignoring", node)
        url.tls_compliant = False
    chk.urls.append(url)


def _http_protocol(node: Node, chk: HttpCheck, ctx: Ctx) -> None:
    need(node, 1)
    if node.args[0] not in ("1.0", "1.0C", "1.1"):
        raise BadValue(f"Invalid http_protocol {node.args[0]}")
    chk.http_protocol = node.args[0]


HTTP = {
    "url": Kw(_url, sub=URL, close=_url_end, max_args=0),
    "virtualhost": setter("virtualhost", text),
    "http_protocol": Kw(_http_protocol, max_args=1),
    "fast_recovery": flag("fast_recovery"),
    "nb_get_retry": Kw(_nb_get_retry, max_args=1),
    **CONNECT,
}

SSL_ONLY = {
    "enable_sni": flag("enable_sni"),
    "sni_name": later_keyword(setter("sni_name", text), "2.2.8"),
    "tls_compliant": later_keyword(flag("tls_compliant"), "2.2.8"),
}


# -- the others ------------------------------------------------------------------------------------

def _dns_type(node: Node, chk: DnsCheck, ctx: Ctx) -> None:
    need(node, 1)
    kind = node.args[0].upper()
    if kind not in DNS_TYPES:
        raise BadValue(f"Unknown DNS check type {node.args[0]} - ignoring")
    chk.type = kind


def _payload(node: Node, chk: UdpCheck, ctx: Ctx) -> None:
    if not node.args:
        raise BadValue("UDP_CHECK payload requires a payload")
    try:
        chk.payload = read_hex(node.args[0])
    except BadValue:
        raise BadValue("Invalid hex string for UDP_CHECK payload") from None


def _require_reply(node: Node, chk: UdpCheck, ctx: Ctx) -> None:
    chk.require_reply = True
    if node.args:
        pattern = node.args[0]
        if not _HEX_PATTERN.match(pattern):
            raise BadValue("Invalid hex string for UDP_CHECK reply")
        chk.reply_pattern = pattern


def _misc_path(node: Node, chk: MiscCheck, ctx: Ctx) -> None:
    command = read_command(node, "misc_path is empty")
    user = chk.script.user if chk.script else None
    group = chk.script.group if chk.script else None
    chk.script = Script(command, user, group)


def _misc_user(node: Node, chk: MiscCheck, ctx: Ctx) -> None:
    """`user USER [GROUP]` or `user USER:GROUP`."""
    need(node, 1)
    user, _, group = node.args[0].partition(":")
    group = group or (node.args[1] if len(node.args) > 1 else "")
    script = chk.script or Script([])
    script.user, script.group = user, group or None
    chk.script = script


def _file_weight(node: Node, chk: FileCheck, ctx: Ctx) -> None:
    chk.weight, reverse = read_file_weight(node, "FILE_CHECK")
    chk.reverse = chk.reverse or reverse


# The connection options of a checker (keepalived's conn_opts_t).
CONNECTION = ("connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "fwmark", "connect_timeout")


class _SmtpHost:
    """A deprecated SMTP_CHECK `host { ... }` block. As in keepalived 2.2.7, its connection options
    are its own (unset ones default to the real server, not to the SMTP_CHECK's), while the other
    keywords it accepts (retry, delay_loop...) set the SMTP_CHECK's, shared by all its hosts."""

    def __init__(self, chk: SmtpCheck, node: Node):
        object.__setattr__(self, "checker", chk)
        object.__setattr__(self, "options", {"at": at(node)})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in CONNECTION:
            self.options[name] = value
        else:
            setattr(self.checker, name, value)


def _smtp_host(node: Node, chk: SmtpCheck, ctx: Ctx) -> _SmtpHost:
    return _SmtpHost(chk, node)


def _smtp_host_end(node: Node, chk: SmtpCheck, host: _SmtpHost, ctx: Ctx) -> None:
    chk.__dict__.setdefault("_hosts", []).append(host.options)


def _smtp_checkers(chk: SmtpCheck, ctx: Ctx) -> list[Checker]:
    """The checkers an SMTP_CHECK stands for: itself, unless it has host blocks and no connection
    option of its own, and one copy per host block with that block's connection options.

    keepalived 2.2.7 leaves a host's connect timeout at 0 when the block sets none; pylvs lets
    it inherit the real server's or virtual server's, as every other checker does."""
    hosts = chk.__dict__.pop("_hosts", [])
    if not hosts:
        return [chk]
    ctx.diags.warn("The SMTP_CHECK host block is deprecated. Please define additional checkers.")
    own = any(getattr(chk, name) is not None for name in CONNECTION)
    checkers: list[Checker] = [chk] if own else []
    for options in hosts:
        host = copy.copy(chk)
        for name in CONNECTION:
            setattr(host, name, None)
        for name, value in options.items():
            setattr(host, name, value)
        checkers.append(host)
    return checkers


TABLES: dict[str, tuple[type[Checker], dict[str, Kw]]] = {
    "TCP_CHECK": (TcpCheck, CONNECT),
    "HTTP_GET": (HttpCheck, HTTP),
    "SSL_GET": (HttpCheck, {**HTTP, **SSL_ONLY}),
    "SMTP_CHECK": (SmtpCheck, {"helo_name": setter("helo_name", text),
                               "host": Kw(_smtp_host, sub=CONNECT, close=_smtp_host_end), **CONNECT}),
    "DNS_CHECK": (DnsCheck, {"type": Kw(_dns_type, max_args=1), "name": setter("name", text), **CONNECT}),
    "UDP_CHECK": (UdpCheck, {"payload": Kw(_payload, max_args=1), "require_reply": Kw(_require_reply, max_args=1),
                             "min_reply_length": setter("min_reply_length",
                                                        lambda s: read_unsigned(s, 0, 65535, strict=True),
                                                        invalid="UDP_CHECK min length {} not valid - must be "
                                                                "between 0 & 65535"),
                             "max_reply_length": setter("max_reply_length",
                                                        lambda s: read_unsigned(s, 0, 65535, strict=True),
                                                        invalid="UDP_CHECK max length {} not valid - must be "
                                                                "between 0 & 65535"),
                             **CONNECT}),
    "PING_CHECK": (PingCheck, CONNECT),
    "MISC_CHECK": (MiscCheck, {"misc_path": Kw(_misc_path, max_args=1),
                               # whole seconds in keepalived 2.2.7; pylvs also takes fractions
                               "misc_timeout": setter("misc_timeout", lambda s: read_timer(s, 0, UINT_MAX),
                                                      invalid="Invalid misc_timeout value '{}'"),
                               "misc_dynamic": flag("misc_dynamic"), "user": Kw(_misc_user, max_args=2),
                               **TIMING}),
    "FILE_CHECK": (FileCheck, {"track_file": setter("track_file", text), "weight": Kw(_file_weight, max_args=2)}),
    "BFD_CHECK": (BfdCheck, {"name": setter("name", text), "alpha": flag("alpha")}),
}


def _finish(chk: Checker, node: Node, ctx: Ctx) -> list[Checker]:
    """Block-end checks; returns the checkers to keep (none, one, or the SMTP hosts)."""
    if isinstance(chk, HttpCheck) and not chk.urls:
        raise BadValue("HTTP/SSL_GET checker has no urls specified - ignoring")
    if isinstance(chk, UdpCheck) and chk.min_reply_length > chk.max_reply_length:
        ctx.diags.error(f"UDP_CHECK min_reply length {chk.min_reply_length} > max_reply_length "
                        f"{chk.max_reply_length} - will always fail", node)  # and keepalived keeps it
    if isinstance(chk, MiscCheck) and (chk.script is None or not chk.script.command):
        raise BadValue("No script path has been specified for MISC_CHECKER - skipping")
    if isinstance(chk, FileCheck) and not chk.track_file:
        raise BadValue("FILE_CHECK has no track_file specified - ignoring")
    if isinstance(chk, BfdCheck) and not chk.name:
        raise BadValue("BFD_CHECK has no name specified - ignoring")
    if isinstance(chk, SmtpCheck):
        return _smtp_checkers(chk, ctx)
    return [chk]


def _checker_end(node: Node, rs: RealServer, chk: Checker, ctx: Ctx) -> None:
    rs.checkers.extend(_finish(chk, node, ctx))


def _checker_handler(name: str) -> Kw:
    cls, table = TABLES[name]

    def fn(node: Node, rs: RealServer, ctx: Ctx) -> Checker:
        return cls(kind=name, at=at(node))
    return Kw(fn, sub=table, close=_checker_end, max_args=0)


# The checker keywords a real_server block accepts.
KEYWORDS: dict[str, Kw] = {name: _checker_handler(name) for name in TABLES}
