"""The VRRP speaker: raw sockets (IP protocol 112, group 224.0.0.18, TTL 255), timers, tracked
interfaces and scripts, notify scripts, in a thread of its own with an asyncio loop.

Adverts leave from this thread, so a busy packet loop never delays them. What a transition means
for the director (addresses, standing by, sync daemons) is handed to `on_transition`, which lvsd
queues into its packet loop (pylvs.vrrp.roles). `stop()` steps down as keepalived does at exit:
a master sends a priority-0 advert so that the backup takes over after its skew time.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pylvs.health.scripts import ScriptRunner
from pylvs.keepalived.model import GlobalDefs
from pylvs.packet import arp
from pylvs.vrrp import packet
from pylvs.vrrp.plan import Plan
from pylvs.vrrp.state import Action, Garp, SendAdvert, Transition

log = logging.getLogger("pylvs.vrrp")

IFF_UP, IFF_RUNNING = 0x1, 0x40
SIOCGIFFLAGS = 0x8913
LINK_POLL = 0.2  # seconds between looks at the tracked interfaces
RECEIVE_BATCH = 64
NOTIFY_AT_EXIT = 1.0  # seconds the notify scripts of a stop may take before lvsd goes on exiting


def link_up(ifname: str) -> bool:
    """Up and running (carrier), as the kernel says to this network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("256s", ifname.encode())), 16)[0]
        except OSError:
            return False
    return bool(flags & IFF_UP and flags & IFF_RUNNING)


class _Arp:
    """Gratuitous ARP from one interface's MAC (keepalived's default: no virtual MAC)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((ifname, 0))
        self.mac = self.sock.getsockname()[4]

    def garp(self, addr: str) -> None:
        try:
            self.sock.send(arp.gratuitous(self.mac, socket.inet_aton(addr)))
        except OSError as exc:
            log.warning("VRRP: gratuitous ARP on %s failed: %s", self.ifname, exc)


class _Link:
    """One interface's sockets: a receiver joined to the group, a sender bound to the primary address."""

    def __init__(self, ifname: str, group: str, source: str) -> None:
        self.ifname, self.group, self.source = ifname, group, source
        ifindex = socket.if_nametoindex(ifname)
        mreqn = struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton("0.0.0.0"), ifindex)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, packet.IPPROTO_VRRP)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, packet.IPPROTO_VRRP)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.tx.bind((source, 0))
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, packet.VRRP_TTL)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)  # IPTOS_PREC_INTERNETCONTROL, as keepalived
        self.tx.setblocking(False)

    def send(self, payload: bytes) -> None:
        try:
            self.tx.sendto(payload, (self.group, 0))
        except OSError as exc:
            log.warning("VRRP: send on %s failed: %s", self.ifname, exc)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class Speaker:
    def __init__(self, plan: Plan, on_transition: Callable[[str, Transition], None],
                 global_defs: GlobalDefs | None = None) -> None:
        self.plan = plan
        self.router = plan.router
        self.on_transition = on_transition
        self.scripts = ScriptRunner(global_defs or GlobalDefs())
        self.links: dict[str, _Link] = {}
        self.arps: dict[str, _Arp] = {}
        for name, inst in self.router.instances.items():
            ifname = plan.instances[name].interface
            if ifname not in self.links:
                self.links[ifname] = _Link(ifname, plan.mcast_group, inst.config.primary_ip)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._notifying: set[asyncio.Task] = set()

    # -- from lvsd's thread ----------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="pylvs-vrrp", daemon=True)
        self._thread.start()
        ready.wait(5)

    def status(self) -> list[dict[str, Any]]:
        """The instances as they are now (read from lvsd's thread: the values are copied)."""
        now = self.loop.time() if self.loop else 0.0
        out = []
        for name, inst in list(self.router.instances.items()):
            desc = inst.describe(now)
            desc["interface"] = self.plan.instances[name].interface
            desc["sync_group"] = self.plan.instances[name].group
            out.append(desc)
        return out

    def stop(self, timeout: float = 2.0) -> None:
        """Step down (priority-0 adverts from masters, notify STOP) and end the thread."""
        if self.loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout)
        for link in self.links.values():
            link.close()
        for sender in self.arps.values():
            sender.sock.close()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        self.loop = loop = asyncio.new_event_loop()
        try:
            for link in self.links.values():
                loop.add_reader(link.rx.fileno(), self._readable, link)
            now = loop.time()
            for ifname in {t.name for ts in self.router.tracking.values() for t in ts if t.kind == "interface"}:
                self.router.links[ifname] = link_up(ifname)
            self._act(self.router.start(now))
            self._poll_links()
            for name, (script, interval, timeout) in self.plan.scripts.items():
                self._spawn(self._run_script(name, script, interval, timeout))
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _shutdown(self) -> None:
        self._act(self.router.shutdown(self.loop.time()))
        self._spawn(self._stop_after_notify())

    async def _stop_after_notify(self) -> None:
        """The STOP notify scripts get a second to finish (later they are killed with the thread)."""
        if self._notifying:
            await asyncio.wait(list(self._notifying), timeout=NOTIFY_AT_EXIT)
        self.loop.stop()

    def _readable(self, link: _Link) -> None:
        now = self.loop.time()
        for _ in range(RECEIVE_BATCH):
            try:
                datagram = link.rx.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("VRRP: receive on %s failed: %s", link.ifname, exc)
                break
            self._act(self._receive(link, datagram, now))

    def _receive(self, link: _Link, datagram: bytes, now: float) -> list[tuple[str, Action]]:
        try:
            src, dst, ttl, payload = packet.split_ipv4(datagram)
            if ttl != packet.VRRP_TTL:
                raise packet.BadAdvert(f"invalid TTL/HL. Received {ttl} and expect {packet.VRRP_TTL}")
            advert = packet.decode(payload, src, dst)
        except packet.BadAdvert as exc:
            log.debug("VRRP: packet dropped on %s: %s", link.ifname, exc)
            return []
        for name, inst in self.router.instances.items():
            if inst.config.vrid == advert.vrid and self.plan.instances[name].interface == link.ifname:
                why = inst.accepts(advert)
                if why is not None:
                    inst.stats["dropped"] += 1
                    log.info("%s", why)
                    return []
                return self.router.receive(name, advert, src, now)
        return []

    def _wake(self) -> None:
        self._timer = None
        self._act(self.router.expire(self.loop.time()))

    def _poll_links(self) -> None:
        now = self.loop.time()
        for ifname in list(self.router.links):
            self._act(self.router.link(ifname, link_up(ifname), now))
        self.loop.call_later(LINK_POLL, self._poll_links)

    async def _run_script(self, name: str, script: Any, interval: float, timeout: float | None) -> None:
        while True:
            result = await self.scripts.run(script, timeout or interval)
            ok = result.status == 0
            state = self.router.scripts.get(name)
            before = state.good if state else None
            self._act(self.router.script_result(name, ok, self.loop.time()))
            if state is not None and state.good != before:
                log.info("VRRP_Script(%s) %s", name, "succeeded" if state.good else "failed")
            await asyncio.sleep(interval)

    # -- actions ---------------------------------------------------------------------------------

    def _act(self, actions: list[tuple[str, Action]]) -> None:
        for name, action in actions:
            inst = self.router.instances[name]
            plan = self.plan.instances[name]
            link = self.links[plan.interface]
            if isinstance(action, SendAdvert):
                cfg = inst.config
                advert = packet.Advert(cfg.version, cfg.vrid, action.priority, cfg.addresses, cfg.advert_int,
                                       cfg.auth_type, cfg.auth_data)
                link.send(packet.encode(advert, link.source, self.plan.mcast_group))
            elif isinstance(action, Garp):
                for addr, options in plan.addresses.items():
                    sender = self._arp(options.dev or plan.interface)
                    for _ in range(action.repeat if sender else 0):
                        sender.garp(addr)
                log.info("(%s) Sending/queueing gratuitous ARPs on %s for %s", name, plan.interface,
                         ", ".join(plan.addresses))
            elif isinstance(action, Transition):
                self.on_transition(name, action)
                self._notify(name, action)
        self._schedule()

    def _arp(self, ifname: str) -> _Arp | None:
        if ifname not in self.arps:
            try:
                self.arps[ifname] = _Arp(ifname)
            except OSError as exc:
                log.warning("VRRP: no gratuitous ARP on %s: %s", ifname, exc)
                return None
        return self.arps[ifname]

    def _notify(self, name: str, t: Transition) -> None:
        plan = self.plan.instances[name]
        scripts = [(plan.notify.get(t.new), []), (plan.notify.get(""), ["INSTANCE", name, t.new, str(t.priority)])]
        if plan.group:
            scripts += [(plan.group_notify.get(t.new), []),
                        (plan.group_notify.get(""), ["GROUP", plan.group, t.new, str(t.priority)])]
        for script, args in scripts:
            if script is not None:
                full = replace(script, command=[*script.command, *args])
                task = self._spawn(self._notify_one(full, name, t.new))
                self._notifying.add(task)
                task.add_done_callback(self._notifying.discard)

    async def _notify_one(self, script: Any, name: str, state: str) -> None:
        result = await self.scripts.run(script, None)
        if result.status != 0:
            log.warning("(%s) notify script %s for %s %s", name, script.text, state, result.describe())

    def _schedule(self) -> None:
        deadline = self.router.deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._wake)
