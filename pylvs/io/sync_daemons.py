"""lvsd's sync daemons: start, stop and list them (what api routes start-daemon, stop-daemon and
get-daemon to), with their sockets in the packet loop's selector.

A master and a backup may run at once, one of each, as in the kernel. The master follows the
engine's connection events through its own subscription, drained by `drain()` after each round of
the loop; its messages leave when full or, via `tick`, when 2 s old. The backup reads at most a
batch of datagrams per wakeup, so packets never wait long.

`backup_only` (the sysctl's name): while a backup daemon runs, lvsd does not act as the director:
the engine stands by (`Engine.set_standby`), leaving the VIPs and local addresses unclaimed (no ARP
answers, no gratuitous ARP, no new connections) so that the master keeps them; packets of
connections it knows are still forwarded should they arrive. Stopping the backup daemon (what a
failover does) claims them again.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
from typing import Any

from pylvs.engine.engine import Engine
from pylvs.engine.events import Subscription
from pylvs.engine.services import ConfigError
from pylvs.io import sync_socket
from pylvs.sync.backup import SyncBackup
from pylvs.sync.config import BACKUP, MASTER, DaemonConfig, SyncSettings
from pylvs.sync.master import SyncMaster

log = logging.getLogger(__name__)

RECEIVE_BATCH = 64  # datagrams per wakeup


class _Master:
    def __init__(self, config: DaemonConfig, sender: sync_socket.Sender, sync: SyncMaster,
                 events: Subscription) -> None:
        self.config, self.sender, self.sync, self.events = config, sender, sync, events

    def stats(self) -> dict[str, int]:
        return {**self.sync.stats, "send_errors": self.sender.errors, "send_dropped": self.sender.dropped}

    def close(self) -> None:
        self.sync.flush()  # what is waiting still goes out (the kernel drops it)
        self.sender.close()


class _Backup:
    def __init__(self, config: DaemonConfig, sock: socket.socket, sync: SyncBackup) -> None:
        self.config, self.sock, self.sync = config, sock, sync

    def stats(self) -> dict[str, int]:
        return dict(self.sync.stats)

    def close(self) -> None:
        self.sock.close()


class SyncDaemons:
    def __init__(self, engine: Engine, selector: selectors.BaseSelector, settings: SyncSettings | None = None) -> None:
        self.engine = engine
        self.selector = selector
        self.settings = settings or SyncSettings()
        self.master: _Master | None = None
        self.backup: _Backup | None = None

    # -- control (pylvs.control.api) ------------------------------------------------------------

    def _running(self, state: str) -> _Master | _Backup | None:
        return self.master if state == MASTER else self.backup

    def start(self, config: DaemonConfig) -> None:
        if self._running(config.state) is not None:
            raise ConfigError("EEXIST", "Daemon has already run")
        try:
            iface = sync_socket.link(config.mcast_ifn)
            config = config.resolve(iface.mtu)
            if config.state == MASTER:
                self._start_master(config, iface)
            else:
                self._start_backup(config, iface)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
            raise ConfigError(errno.errorcode.get(code, "EINVAL"), os.strerror(code)) from None
        log.info("sync daemon started: %s, mcast_ifn=%s, syncid=%d", config.state, config.mcast_ifn, config.syncid)

    def _start_master(self, config: DaemonConfig, iface: sync_socket.Link) -> None:
        sender = sync_socket.Sender(sync_socket.sender(iface, config.mcast_group, config.mcast_port,
                                                       config.mcast_ttl), self.selector)
        sync = SyncMaster(sender.send, config.syncid, config.sync_maxlen, self.settings)
        self.master = _Master(config, sender, sync, self.engine.subscribe(services=False, conns=True, packets=True))

    def _start_backup(self, config: DaemonConfig, iface: sync_socket.Link) -> None:
        sock = sync_socket.receiver(iface, config.mcast_group, config.mcast_port)
        sync = SyncBackup(self.engine, config.syncid, config.sync_maxlen, self.settings.threshold)
        self.backup = _Backup(config, sock, sync)
        self.selector.register(sock, selectors.EVENT_READ, self._readable)
        if self.settings.backup_only:
            self.engine.set_standby(True)

    def stop(self, state: str) -> None:
        if self._running(state) is None:
            raise ConfigError("ESRCH", "No daemon is running")
        self._close(state)
        if state == BACKUP:
            self.engine.set_standby(False)  # claim the VIPs (the director announces them)
        log.info("sync daemon stopped: %s", state)

    def _close(self, state: str) -> None:
        if state == MASTER:
            self.master.sync.follow(self.master.events)  # what happened before the stop still counts
            self.engine.unsubscribe(self.master.events)
            self.master.close()
            self.master = None
        else:
            self.selector.unregister(self.backup.sock)
            self.backup.close()
            self.backup = None

    def list(self) -> list[dict[str, Any]]:
        return [{**d.config.describe(), "stats": d.stats()} for d in (self.master, self.backup) if d is not None]

    # -- the loop -------------------------------------------------------------------------------

    def drain(self) -> None:
        """Read the engine's connection events (call after every round of the loop)."""
        if self.master is not None:
            self.master.sync.follow(self.master.events)

    def tick(self, now: float) -> None:
        if self.master is not None:
            self.drain()
            self.master.sync.tick(now)

    def _readable(self, fd: int, events: int) -> None:
        backup = self.backup
        if backup is None:
            return
        now = time.monotonic()
        for _ in range(RECEIVE_BATCH):
            try:
                data = backup.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                backup.sync.stats["receive_errors"] += 1
                log.debug("sync: receive failed: %s", exc)
                return
            backup.sync.receive(data, now)

    def close(self) -> None:
        """At lvsd's exit: unlike a stop, claim nothing on the way out."""
        for state in (MASTER, BACKUP):
            if self._running(state) is not None:
                self._close(state)
