"""The typed model of the LVS part of a keepalived configuration.

Fields that keepalived inherits (VS -> RS -> checker) are `None` until `validate` resolves them;
after `validate` every field a runtime needs holds a concrete value. `at` (the file and line) is
left out of equality so that a reload compares configurations, not their positions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DELAY_LOOP = 60.0  # KEEPALIVED_DEFAULT_DELAY
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PERSISTENCE_TIMEOUT = 360  # IPVS_SVC_PERSISTENT_TIMEOUT
DEFAULT_SCHEDULER = "wlc"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos")
METHODS = ("NAT", "DR", "TUN", "FNAT")  # FNAT (alias FULLNAT) is the alibaba/dpvs extension
MAX_WEIGHT = 2**31 - 1


@dataclass(frozen=True)
class At:
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.file else f"line {self.line}"


def _at() -> Any:
    return field(default_factory=At, compare=False, repr=False)


def family_of(addr: str) -> int:
    return ipaddress.ip_address(addr).version


@dataclass
class Script:
    """A notify or check script: the command words and who runs it."""

    command: list[str]
    user: str | None = None
    group: str | None = None

    @property
    def text(self) -> str:
        return " ".join(self.command)


@dataclass
class Forwarding:
    """`lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]` (and FNAT)."""

    method: str = "NAT"
    tun_type: str | None = None
    tun_port: int | None = None
    tun_csum: str | None = None


# -- global --------------------------------------------------------------------------------------

@dataclass
class SyncDaemon:
    interface: str
    instance: str | None = None
    syncid: int | None = None
    maxlen: int | None = None
    port: int | None = None
    ttl: int | None = None
    group: str | None = None


@dataclass
class GlobalDefs:
    router_id: str | None = None
    notification_email: list[str] = field(default_factory=list)
    notification_email_from: str | None = None
    smtp_server: str | None = None
    smtp_connect_timeout: float | None = None
    smtp_alert: bool | None = None
    smtp_alert_checker: bool | None = None
    no_checker_emails: bool = False
    checker_log_all_failures: bool = False
    rs_init_notifies: bool = False
    lvs_flush: bool = False
    lvs_flush_on_stop: str | None = None  # None, "ALL" or "VS"
    lvs_timeouts: dict[str, int] = field(default_factory=dict)  # tcp, tcpfin, udp
    lvs_sync_daemon: SyncDaemon | None = None
    notify_fifo: str | None = None
    lvs_notify_fifo: str | None = None
    enable_script_security: bool = False
    script_user: str | None = None
    script_group: str | None = None
    net_namespace_ipvs: str | None = None
    nftables_ipvs: bool = False
    vrrp_version: int = 2
    vrrp_mcast_group4: str = "224.0.0.18"
    vrrp_garp_master_delay: float = 5.0
    vrrp_garp_master_repeat: int = 5


@dataclass
class SSLConfig:
    password: str | None = None
    ca: str | None = None
    certificate: str | None = None
    key: str | None = None


@dataclass
class TrackFile:
    """Top-level `track_file NAME { file PATH; weight W [reverse]; init_file [V] [overwrite] }`."""

    name: str
    file: str | None = None
    weight: int = 1
    reverse: bool = False
    init_file: int | None = None
    overwrite: bool = False
    at: At = _at()


@dataclass
class LocalAddressGroup:
    """FULLNAT extension: `local_address_group NAME { IP [dev] ... }`."""

    name: str
    addresses: list[tuple[str, str | None]] = field(default_factory=list)
    at: At = _at()


@dataclass
class VipOptions:
    """What follows an address in virtual_ipaddress that pylvs uses: `/prefix` and `dev IF`."""

    prefix: int = 32
    dev: str | None = None


@dataclass
class VrrpTrack:
    """A track_interface or track_script entry: the object and its weight (None: FAULT when bad)."""

    name: str
    weight: int | None = None


@dataclass
class VrrpInstance:
    """A vrrp_instance, as keepalived's VRRP process reads it (pylvs.vrrp runs it)."""

    name: str
    state: str | None = None
    interface: str | None = None
    virtual_router_id: int | None = None
    priority: int | None = None
    virtual_ipaddress: list[str] = field(default_factory=list)
    vip_options: dict[str, VipOptions] = field(default_factory=dict)
    virtual_ipaddress_excluded: list[str] = field(default_factory=list)
    lvs_sync_daemon_interface: str | None = None
    advert_int: float | None = None
    version: int | None = None  # None: global vrrp_version
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None  # "PASS" or "AH"
    auth_pass: str | None = None
    use_vmac: bool = False
    mcast_src_ip: str | None = None
    track_interface: list[VrrpTrack] = field(default_factory=list)
    track_script: list[VrrpTrack] = field(default_factory=list)
    notify: Script | None = None
    notify_master: Script | None = None
    notify_backup: Script | None = None
    notify_fault: Script | None = None
    notify_stop: Script | None = None
    garp_master_delay: float | None = None
    garp_master_repeat: int | None = None
    at: At = _at()


@dataclass
class VrrpScript:
    """A vrrp_script block: the command run every `interval`, and how its results count."""

    name: str
    script: Script | None = None
    interval: float = 1.0
    timeout: float | None = None
    weight: int = 0
    rise: int = 1
    fall: int = 1
    at: At = _at()


@dataclass
class VrrpSyncGroup:
    name: str
    group: list[str] = field(default_factory=list)
    notify: Script | None = None
    notify_master: Script | None = None
    notify_backup: Script | None = None
    notify_fault: Script | None = None
    at: At = _at()


# -- virtual server groups ---------------------------------------------------------------------

@dataclass
class GroupEntry:
    """One line of a virtual_server_group: an address range with an optional port, or a fwmark."""

    first: str | None = None
    last: str | None = None  # == first for a single address
    port: int | None = None
    fwmark: int | None = None
    family: int | None = None  # for a fwmark entry: 4/6 when given
    at: At = _at()

    def addresses(self) -> list[str]:
        if self.first is None or self.last is None:
            return []
        lo, hi = ipaddress.ip_address(self.first), ipaddress.ip_address(self.last)
        return [str(ipaddress.ip_address(int(lo) + i)) for i in range(int(hi) - int(lo) + 1)]


@dataclass
class VirtualServerGroup:
    name: str
    entries: list[GroupEntry] = field(default_factory=list)
    at: At = _at()


# -- checkers ----------------------------------------------------------------------------------

@dataclass
class Checker:
    """Options every checker type has; None means inherited or the type's default."""

    kind: str = ""
    retry: int | None = None
    delay_before_retry: float | None = None
    delay_loop: float | None = None
    warmup: float | None = None
    alpha: bool | None = None
    log_all_failures: bool | None = None
    at: At = _at()

    connects = False  # has the connect_* options


@dataclass
class ConnectChecker(Checker):
    connect_ip: str | None = None
    connect_port: int | None = None
    bindto: str | None = None
    bind_port: int | None = None
    bind_if: str | None = None
    fwmark: int | None = None
    connect_timeout: float | None = None

    connects = True


@dataclass
class TcpCheck(ConnectChecker):
    kind: str = "TCP_CHECK"


@dataclass
class Url:
    path: str | None = None
    digest: str | None = None
    status_codes: list[tuple[int, int]] = field(default_factory=list)  # empty: 200-299
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False
    regex_options: list[str] = field(default_factory=list)
    regex_min_offset: int | None = None
    regex_max_offset: int | None = None
    tls_compliant: bool = False
    at: At = _at()


@dataclass
class HttpCheck(ConnectChecker):
    kind: str = "HTTP_GET"  # or SSL_GET
    urls: list[Url] = field(default_factory=list)
    virtualhost: str | None = None
    http_protocol: str = "1.0"  # 1.0, 1.0C, 1.1
    fast_recovery: bool = False
    enable_sni: bool = False
    sni_name: str | None = None
    tls_compliant: bool = False

    @property
    def ssl(self) -> bool:
        return self.kind == "SSL_GET"


@dataclass
class SmtpCheck(ConnectChecker):
    kind: str = "SMTP_CHECK"
    helo_name: str = "smtpchecker.keepalived.org"


@dataclass
class UdpCheck(ConnectChecker):
    kind: str = "UDP_CHECK"
    payload: bytes | None = None
    require_reply: bool = False
    reply_pattern: str | None = None  # hex with X wildcards
    min_reply_length: int = 0
    max_reply_length: int = 255


@dataclass
class DnsCheck(ConnectChecker):
    kind: str = "DNS_CHECK"
    type: str = "SOA"
    name: str = "."


@dataclass
class PingCheck(ConnectChecker):
    kind: str = "PING_CHECK"


@dataclass
class MiscCheck(Checker):
    kind: str = "MISC_CHECK"
    script: Script | None = None
    misc_timeout: float | None = None
    misc_dynamic: bool = False


@dataclass
class FileCheck(Checker):
    kind: str = "FILE_CHECK"
    track_file: str | None = None
    weight: int | None = None
    reverse: bool = False


@dataclass
class BfdCheck(Checker):
    kind: str = "BFD_CHECK"
    name: str | None = None


# -- servers -----------------------------------------------------------------------------------

@dataclass
class RealServer:
    addr: str
    port: int | None = None
    weight: int | None = None
    forwarding: Forwarding | None = None
    notify_up: Script | None = None
    notify_down: Script | None = None
    uthreshold: int = 0
    lthreshold: int = 0
    inhibit_on_failure: bool | None = None
    alpha: bool | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    delay_loop: float | None = None
    smtp_alert: bool | None = None
    virtualhost: str | None = None
    snmp_name: str | None = None
    checkers: list[Checker] = field(default_factory=list)
    at: At = _at()

    @property
    def key(self) -> tuple[str, int]:
        return (self.addr, self.port or 0)

    @property
    def family(self) -> int:
        return family_of(self.addr)


@dataclass
class SorryServer:
    addr: str
    port: int | None = None
    forwarding: Forwarding | None = None
    inhibit: bool = False
    weight: int = 1
    at: At = _at()

    @property
    def key(self) -> tuple[str, int]:
        return (self.addr, self.port or 0)


@dataclass
class VirtualServer:
    """`virtual_server IP [PORT]`, `virtual_server fwmark N` or `virtual_server group NAME`."""

    addr: str | None = None
    port: int | None = None
    fwmark: int | None = None
    group: str | None = None
    scheduler: str | None = None
    forwarding: Forwarding | None = None
    protocol: str | None = None  # TCP, UDP, SCTP
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None
    persistence_engine: str | None = None
    ops: bool = False
    sched_flags: list[str] = field(default_factory=list)  # flag-1 .. flag-3, sh-port, mh-fallback ...
    hashed: bool = False
    ha_suspend: bool = False
    virtualhost: str | None = None
    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    inhibit_on_failure: bool = False
    alpha: bool = False
    omega: bool = False
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: Script | None = None
    quorum_down: Script | None = None
    sorry_server: SorryServer | None = None
    smtp_alert: bool | None = None
    ip_family: int | None = None  # as written (`ip_family`)
    af: int | None = None  # keepalived's vs->af: the address's, ip_family's, or the first non-tunnelled server's
    weight: int = 1
    snmp_name: str | None = None
    laddr_group_name: str | None = None
    syn_proxy: bool = False
    establish_timeout: int | None = None
    real_servers: list[RealServer] = field(default_factory=list)
    at: At = _at()

    @property
    def key(self) -> tuple:
        """Identity across a reload (keepalived matches on group name, fwmark or address)."""
        if self.group is not None:
            return ("group", self.group, self.protocol)
        if self.fwmark is not None:
            return ("fwmark", self.fwmark, self.ip_family)
        return ("addr", self.addr, self.port or 0, self.protocol)

    @property
    def family(self) -> int:
        if self.addr is not None:
            return family_of(self.addr)
        return self.af or self.ip_family or 4


@dataclass
class Config:
    global_defs: GlobalDefs = field(default_factory=GlobalDefs)
    ssl: SSLConfig | None = None
    virtual_server_groups: dict[str, VirtualServerGroup] = field(default_factory=dict)
    virtual_servers: list[VirtualServer] = field(default_factory=list)
    local_address_groups: dict[str, LocalAddressGroup] = field(default_factory=dict)
    track_files: dict[str, TrackFile] = field(default_factory=dict)
    vrrp_instances: dict[str, VrrpInstance] = field(default_factory=dict)
    vrrp_scripts: dict[str, VrrpScript] = field(default_factory=dict)
    vrrp_sync_groups: dict[str, VrrpSyncGroup] = field(default_factory=dict)
    files: list[str] = field(default_factory=list, compare=False)
    diagnostics: list = field(default_factory=list, compare=False)

    @property
    def warnings(self) -> list[str]:
        return [str(d) for d in self.diagnostics]
