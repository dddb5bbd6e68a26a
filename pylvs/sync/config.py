"""What a sync daemon is started with (`--start-daemon`), and the daemon-wide sync knobs (the sysctls).

Defaults and clamps are the kernel's start_sync_thread (ipvs.md §5): group 224.0.0.81, port 8848,
TTL 1; sync_maxlen from a 1500-byte MTU for a master and from the interface MTU for a backup, less the
IP and UDP headers of the group's family (an IPv6 group, `ff02::...`, leaves out 48 bytes, not 28).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pylvs.sync.proto import SYNC_GROUP, SYNC_PORT, SYNC_VERSION

MASTER, BACKUP = "master", "backup"
UDP_IP_HEADERS = 28  # IPv4 + UDP: what sync_maxlen leaves out of the MTU
UDP_IP6_HEADERS = 48  # IPv6 + UDP, for an IPv6 group


@dataclass
class SyncSettings:
    """The sysctls that shape synchronisation, with the kernel's defaults (ipvs.md §7)."""

    version: int = SYNC_VERSION   # sync_version: what the master sends (the backup reads both)
    threshold: int = 3            # sync_threshold "3 50": sync when in_pkts % period == threshold
    period: int = 50
    backup_only: bool = False     # backup_only: no director function while a backup daemon runs


@dataclass
class DaemonConfig:
    state: str
    mcast_ifn: str
    syncid: int = 0
    sync_maxlen: int = 0  # 0: derived from the MTU when the daemon starts
    mcast_group: str = SYNC_GROUP
    mcast_port: int = SYNC_PORT
    mcast_ttl: int = 1

    @property
    def ipv6(self) -> bool:
        """Whether the group is an IPv6 one (the sockets are AF_INET6 then)."""
        return ":" in self.mcast_group

    def resolve(self, mtu: int) -> DaemonConfig:
        """With sync_maxlen set: the master's message size limit, the backup's receive buffer."""
        headers = UDP_IP6_HEADERS if self.ipv6 else UDP_IP_HEADERS
        if self.sync_maxlen:
            low = 1024 if self.state == BACKUP else 1
            maxlen = min(max(self.sync_maxlen, low), 65535 - headers)
        else:
            link = min(max(mtu, 1500), 65535) if self.state == BACKUP else 1500
            maxlen = link - headers
        return replace(self, sync_maxlen=maxlen)

    def describe(self) -> dict[str, object]:
        """As get-daemon reports it (ipvsadm -L --daemon)."""
        return {"state": self.state, "mcast_ifn": self.mcast_ifn, "syncid": self.syncid,
                "sync_maxlen": self.sync_maxlen, "mcast_group": self.mcast_group,
                "mcast_port": self.mcast_port, "mcast_ttl": self.mcast_ttl}
