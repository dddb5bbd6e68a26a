"""The service table: add, edit and delete virtual services and real servers with IPVS's rules.

Errors carry the errno ipvsadm would have received from the kernel (ipvs.md §1.4), so the
control side can print the same messages.

The table calls nobody: every change bumps `generation`, which the engine turns into one
ServicesChanged event per batch. What the packet path reads is kept up to date incrementally, so a
change costs O(1) however large the table: `index[proto][addr + port]` (non-fwmark services, as
ip_vs_service_find looks them up) and `addresses`, every VIP and FULLNAT local address in use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from pylvs.engine.services import (
    PROTO_TCP,
    PROTO_UDP,
    SVC_F_PERSISTENT,
    ConfigError,
    LocalAddress,
    Method,
    RealServer,
    VirtualService,
)
from pylvs.ipvs_uapi import PROTO_SCTP
from pylvs.sched import UnknownScheduler, scheduler_class

MAX_WEIGHT = 2**31 - 1
TRASH_PERIOD = 120.0  # IP_VS_DEST_TRASH_PERIOD: how long a deleted real server without connections is kept
EINVAL_TEXT = "Invalid operation.  Possibly wrong module version, address not unicast, ..."


def _identity(svc: VirtualService) -> tuple[int, bytes, int, int]:
    return (svc.protocol, svc.addr, svc.port, svc.fwmark)


def usable_unicast(addr: bytes, loopback: bool = False) -> bool:
    """Not unspecified or multicast (IPv4 class E too), nor loopback unless `loopback`, in either family."""
    if len(addr) == 4:
        return addr[0] != 0 and addr[0] < 224 and (loopback or addr[0] != 127)
    return addr[0] != 0xFF and addr != bytes(16) and (loopback or addr != bytes(15) + b"\x01")


class ServiceTable:
    """Services by (protocol, VIP, port); fwmark services by mark. Creation order is kept."""

    def __init__(self, methods: set[Method] | None = None) -> None:
        self.methods = methods  # forwarding methods the engine implements (None: any)
        self.services: dict[tuple[int, bytes, int], VirtualService] = {}
        self.by_fwmark: dict[int, VirtualService] = {}
        self.by_fwmark6: dict[int, VirtualService] = {}  # IPv6 fwmark services: the kernel keys them by (af, mark)
        self.generation = 0
        self.index: dict[int, dict[bytes, VirtualService]] = {PROTO_TCP: {}, PROTO_UDP: {}, PROTO_SCTP: {}}
        self.addresses: set[bytes] = set()
        self._address_refs: Counter[bytes] = Counter()
        # Deleted real servers, by (service identity, address, port), with when they were first seen idle:
        # as the kernel's dest_trash, one added again to the same service comes back with its connection
        # counts and statistics (a -d/-a, a -C and a reload do not reset what lc, wlc or sed see).
        self.trash: dict[tuple[tuple[int, bytes, int, int], bytes, int], list] = {}

    def _changed(self) -> None:
        self.generation += 1

    def _ref(self, addr: bytes) -> None:
        self._address_refs[addr] += 1
        self.addresses.add(addr)

    def _unref(self, addr: bytes) -> None:
        self._address_refs[addr] -= 1
        if not self._address_refs[addr]:
            del self._address_refs[addr]
            self.addresses.discard(addr)

    def __iter__(self) -> Iterator[VirtualService]:
        return iter(list(self.services.values()) + list(self.by_fwmark.values()) + list(self.by_fwmark6.values()))

    def __len__(self) -> int:
        return len(self.services) + len(self.by_fwmark) + len(self.by_fwmark6)

    def fwmarks(self, addr: bytes) -> dict[int, VirtualService]:
        """The fwmark services of the family of `addr` (4 or 16 bytes)."""
        return self.by_fwmark6 if len(addr) == 16 else self.by_fwmark

    def find(self, protocol: int, addr: bytes, port: int, fwmark: int = 0) -> VirtualService | None:
        if fwmark:
            return self.fwmarks(addr).get(fwmark)
        return self.services.get((protocol, addr, port))

    def get(self, protocol: int, addr: bytes, port: int, fwmark: int = 0) -> VirtualService:
        svc = self.find(protocol, addr, port, fwmark)
        if svc is None:
            raise ConfigError("ESRCH", "No such service")
        return svc

    # -- services ---------------------------------------------------------------------------

    def add_service(self, svc: VirtualService) -> VirtualService:
        if self.find(svc.protocol, svc.addr, svc.port, svc.fwmark) is not None:
            raise ConfigError("EEXIST", "Service already exists")
        self._check_service(svc)
        svc.sched = self._new_scheduler(svc, svc.scheduler)
        if svc.fwmark:
            self.fwmarks(svc.addr)[svc.fwmark] = svc
        else:
            self.services[svc.key] = svc
            self.index.setdefault(svc.protocol, {})[svc.addr + svc.port.to_bytes(2, "big")] = svc
            self._ref(svc.addr)
        self._changed()
        return svc

    def edit_service(self, new: VirtualService) -> VirtualService:
        svc = self.get(new.protocol, new.addr, new.port, new.fwmark)
        self._check_service(new)
        if new.scheduler != svc.scheduler:
            svc.sched = self._new_scheduler(svc, new.scheduler)
            svc.scheduler = new.scheduler
        svc.flags, svc.timeout, svc.netmask = new.flags, new.timeout, new.netmask
        svc.proxy_protocol, svc.pe = new.proxy_protocol, new.pe
        svc.synproxy = new.synproxy
        svc.sched.update(svc)
        self._changed()
        return svc

    def del_service(self, protocol: int, addr: bytes, port: int, fwmark: int = 0) -> VirtualService:
        svc = self.get(protocol, addr, port, fwmark)
        if fwmark:
            del self.fwmarks(addr)[fwmark]
        else:
            del self.services[svc.key]
            del self.index[svc.protocol][svc.addr + svc.port.to_bytes(2, "big")]
            self._unref(svc.addr)
        for laddr in svc.laddrs:
            self._unref(laddr.addr)
        for dest in svc.dests:
            dest.available = False  # existing connections see a dest that is gone (ipvs.md §3.7)
            self.trash[(_identity(svc), dest.addr, dest.port)] = [dest, None]
        self._changed()
        return svc

    def flush(self) -> None:
        for svc in list(self):
            self.del_service(svc.protocol, svc.addr, svc.port, svc.fwmark)

    # -- real servers -----------------------------------------------------------------------

    def add_dest(self, svc: VirtualService, dest: RealServer) -> RealServer:
        if svc.find_dest(dest.addr, dest.port) is not None:
            raise ConfigError("EEXIST", "Destination already exists")
        self._check_dest(dest, svc)
        trashed = self.trash.pop((_identity(svc), dest.addr, dest.port), None)
        if trashed is not None:  # ip_vs_trash_get_dest: the same server again, counters and all
            old = trashed[0]
            self._configure(old, dest)
            old.available = True
            dest = old
        svc.dests.insert(0, dest)  # the kernel adds at the head: newest first
        svc.sched.update(svc)
        self._changed()
        return dest

    def edit_dest(self, svc: VirtualService, new: RealServer) -> RealServer:
        dest = svc.find_dest(new.addr, new.port)
        if dest is None:
            raise ConfigError("ENOENT", "No such destination")
        self._check_dest(new, svc)
        self._configure(dest, new)
        svc.sched.update(svc)
        self._changed()
        return dest

    def del_dest(self, svc: VirtualService, addr: bytes, port: int) -> RealServer:
        dest = svc.find_dest(addr, port)
        if dest is None:
            raise ConfigError("ENOENT", "No such destination")
        svc.dests.remove(dest)
        dest.available = False
        self.trash[(_identity(svc), addr, port)] = [dest, None]
        svc.sched.update(svc)
        self._changed()
        return dest

    @staticmethod
    def _configure(dest: RealServer, new: RealServer) -> None:
        """The configuration of `new` on `dest`, whose counters stay (__ip_vs_update_dest)."""
        dest.weight, dest.method = new.weight, new.method
        if new.weight:
            dest.last_weight = new.weight
        dest.u_threshold, dest.l_threshold = new.u_threshold, new.l_threshold
        dest.tun_type, dest.tun_port, dest.tun_flags = new.tun_type, new.tun_port, new.tun_flags
        dest.update_overload()

    def prune_trash(self, now: float) -> None:
        """Forget deleted real servers that have had no connection for TRASH_PERIOD (ip_vs_dest_trash_expire)."""
        for key, entry in list(self.trash.items()):
            dest = entry[0]
            if dest.activeconns or dest.inactconns or dest.persistconns:
                entry[1] = None
            elif entry[1] is None:
                entry[1] = now
            elif now - entry[1] >= TRASH_PERIOD:
                del self.trash[key]

    # -- FULLNAT local addresses ------------------------------------------------------------

    def add_laddr(self, svc: VirtualService, addr: bytes) -> LocalAddress:
        if any(la.addr == addr for la in svc.laddrs):
            raise ConfigError("EEXIST", "Local address already exists")
        if not usable_unicast(addr):
            raise ConfigError("EINVAL", EINVAL_TEXT)
        laddr = LocalAddress(addr)
        svc.laddrs.append(laddr)
        self._ref(addr)
        self._changed()
        return laddr

    def del_laddr(self, svc: VirtualService, addr: bytes) -> LocalAddress:
        for laddr in svc.laddrs:
            if laddr.addr == addr:
                svc.laddrs.remove(laddr)
                self._unref(addr)
                self._changed()
                return laddr
        raise ConfigError("ENOENT", "No such local address")

    # -- checks -----------------------------------------------------------------------------

    @staticmethod
    def _new_scheduler(svc: VirtualService, name: str):
        try:
            return scheduler_class(name)(svc)
        except UnknownScheduler:
            raise ConfigError("ENOENT", "Scheduler or persistence engine not found") from None

    @staticmethod
    def _check_service(svc: VirtualService) -> None:
        if svc.protocol not in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
            raise ConfigError("ENOPROTOOPT", "Protocol not available")
        if svc.flags & SVC_F_PERSISTENT and svc.timeout <= 0:
            raise ConfigError("EINVAL", EINVAL_TEXT)

    def _check_dest(self, dest: RealServer, svc: VirtualService) -> None:
        if self.methods is not None and dest.method not in self.methods:
            raise ConfigError("EOPNOTSUPP", f"Forwarding method {dest.method.label} is not supported yet")
        if dest.weight < 0 or dest.weight > MAX_WEIGHT:
            raise ConfigError("ERANGE", "Numerical result out of range")
        if dest.l_threshold > dest.u_threshold and dest.u_threshold:
            raise ConfigError("ERANGE", "Numerical result out of range")
        if not usable_unicast(dest.addr, loopback=True):  # 127/8 is local (RTN_LOCAL): the kernel takes it
            raise ConfigError("EINVAL", EINVAL_TEXT)
        if len(dest.addr) == 16 and dest.addr[0] == 0xFE and dest.addr[1] & 0xC0 == 0x80:
            raise ConfigError("EINVAL", EINVAL_TEXT)  # link-local: not a unicast the kernel forwards to
        if len(dest.addr) != len(svc.addr):
            if dest.method == Method.FULLNAT:
                return  # NAT64 and NAT46: real servers of the other family, from local addresses of theirs
            if dest.method != Method.TUNNEL:
                raise ConfigError("EINVAL", EINVAL_TEXT)  # mixed families only for tunnels (ip_vs_genl_set_cmd)
            # The kernel tunnels IPv4 in IPv6 and back; pylvs' tunnels keep the family of the service.
            raise ConfigError("EAFNOSUPPORT", "Operation not supported with specified address family")
        if dest.tun_type == "gue" and not dest.tun_port:
            raise ConfigError("EINVAL", EINVAL_TEXT)
