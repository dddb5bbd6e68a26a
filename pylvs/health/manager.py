"""HealthManager: keepalived's checker process, as an asyncio loop in a thread of its own.

lvsd's packet loop is single-threaded and must never wait on a health check, so every check
runs here, one asyncio task per checker, and the only way out is the `apply` callback: it is
called from the manager's thread with a list of control requests (docs/control-protocol.md) to
apply in order. lvsd passes a callback that queues them for its own loop and returns at once.

    manager = HealthManager(config, apply=queue_requests)
    manager.start()              # applies the startup table, then checks
    manager.reload(new_config)   # SIGHUP: minimal changes, states of unchanged servers kept
    manager.status()             # a snapshot, safe from any thread
    manager.stop()               # omega notifies; removes its services unless release=False
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from typing import Any

from pylvs.health.checks import Probe, ProbeEnv, make_probe
from pylvs.health.pool import CheckerState, Effects, Result, Runtime, VSState
from pylvs.health.scripts import ScriptRunner
from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.model import Config

log = logging.getLogger("pylvs.health")
Apply = Callable[[list[dict[str, Any]]], None]
BOOTSTRAP_DELAY = 1.0  # keepalived's BOOTSTRAP_DELAY before the first check
OMEGA_SCRIPT_LIMIT = 1.0  # keepalived gives shutdown notify scripts 1 s


def vip_is_local(addr: str) -> bool:
    """Whether an address is configured on this host (ha_suspend), tested with a bind."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((addr, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def write_fifo(path: str, line: str) -> None:
    """One notify line; a FIFO without a reader, or a full one, drops it (never blocks)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.write(fd, (line + "\n").encode())
    except OSError:
        pass
    finally:
        os.close(fd)


class HealthManager:
    def __init__(self, config: Config, apply: Apply, *, bootstrap_delay: float = BOOTSTRAP_DELAY,
                 file_poll_interval: float = 1.0, rand: Callable[[], float] = random.random,
                 vip_probe: Callable[[str], bool] = vip_is_local) -> None:
        """`config` must be validated (`pylvs.keepalived.load`). `apply` must be thread-safe, must
        not block, and must not call back into the manager; exceptions it raises are logged."""
        self.config = config
        self._apply = apply
        self.bootstrap_delay = bootstrap_delay
        self.file_poll_interval = file_poll_interval
        self._rand = rand
        self._vip_probe = vip_probe
        self.vip_override: dict[str, bool] = {}
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[CheckerState, asyncio.Task] = {}
        self._generation = 0  # bumped on reload/stop: a checker of an older generation must not act
        self._scripts = ScriptRunner(config.global_defs)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- public API: any thread ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Start the loop thread, apply the startup requests, start every checker.
        Returns the startup requests (already handed to `apply`)."""
        with self._lock:
            if self.running:
                raise RuntimeError("HealthManager already started")
            ready = threading.Event()
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._serve, args=(ready,), name="pylvs-health", daemon=True)
            self._thread.start()
            ready.wait()
            return self._call(self._start(), timeout)

    def reload(self, config: Config, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Switch to a new validated configuration (SIGHUP). Returns the requests it applied."""
        with self._lock:
            if not self.running:
                self.config = config
                return []
            return self._call(self._reload(config), timeout)

    def stop(self, release: bool = True, timeout: float = 15.0) -> None:
        """Stop checking; with `release`, remove the services it installed (keepalived's default)."""
        with self._lock:
            if not self.running:
                return
            try:
                self._call(self._stop(release), timeout)
            finally:
                assert self._loop is not None and self._thread is not None
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
                if not self._thread.is_alive():
                    self._loop.close()
                self._thread = self._loop = None

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """A snapshot of every virtual server, real server and checker."""
        if not self.running:
            runtime = self._runtime
            return {"running": False, **(runtime.snapshot() if runtime else {"virtual_servers": []})}
        return self._call(self._status(), timeout)

    def set_vip(self, addr: str, present: bool | None) -> None:
        """Tell ha_suspend whether a VIP is local (None: find out by itself again)."""
        if present is None:
            self.vip_override.pop(addr, None)
        else:
            self.vip_override[addr] = present

    # -- loop thread -----------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def _call(self, coro, timeout: float):
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("HealthManager methods must not be called from its own thread (apply)")
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _env(self) -> ProbeEnv:
        return ProbeEnv(self.config, self._scripts, file_poll_interval=self.file_poll_interval, cache=self._cache)

    async def _start(self) -> list[dict[str, Any]]:
        old = self._runtime
        if old is not None and old.installed():
            # restarted after stop(release=False): lvsd still holds the old table, so diff against it
            new = Runtime(self.config, previous=old, diags=Diagnostics())
            eff = new.reload_effects(old)
        else:
            new = Runtime(self.config, diags=Diagnostics())
            eff = new.start()
        self._runtime = new
        self._execute(eff)
        self._spawn_all(new)
        return eff.requests

    async def _reload(self, config: Config) -> list[dict[str, Any]]:
        await self._cancel_all()
        old = self._runtime
        self.config = config
        self._scripts.configure(config.global_defs)
        self._cache.pop("ssl", None)
        new = Runtime(config, previous=old, diags=Diagnostics())
        eff = new.reload_effects(old) if old is not None else new.start()
        self._runtime = new
        self._execute(eff)
        self._spawn_all(new)
        return eff.requests

    async def _stop(self, release: bool) -> None:
        await self._cancel_all()
        if self._runtime is not None:
            self._execute(self._runtime.shutdown(release))
        await self._scripts.drain(OMEGA_SCRIPT_LIMIT)

    async def _status(self) -> dict[str, Any]:
        assert self._runtime is not None
        return {"running": True, **self._runtime.snapshot()}

    def _spawn_all(self, runtime: Runtime) -> None:
        env = self._env()
        loop = asyncio.get_running_loop()
        for chk in runtime.checkers():
            probe = make_probe(chk, env)
            delay = probe.first_delay(self.bootstrap_delay, self._rand)
            self._tasks[chk] = loop.create_task(self._check_loop(runtime, chk, probe, delay))

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._generation += 1
        while tasks:
            for task in tasks:
                task.cancel()
            _done, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)

    def _suspended(self, vs: VSState) -> bool:
        if not vs.cfg.ha_suspend:
            return False
        addrs = {spec.addr for spec in vs.specs if spec.addr}
        for addr in addrs:
            known = self.vip_override.get(addr)
            if known if known is not None else self._vip_probe(addr):
                return False
        return True

    async def _check_loop(self, runtime: Runtime, chk: CheckerState, probe: Probe, delay: float) -> None:
        """One checker, until cancelled: wait, check, feed the result, apply what follows."""
        generation = self._generation
        try:
            await asyncio.sleep(delay)
            while generation == self._generation:
                suspended = self._suspended(chk.rs.vs)
                self._execute(runtime.suspend(chk, suspended))
                if suspended:
                    await asyncio.sleep(chk.cfg.delay_loop or 1.0)
                    continue
                try:
                    result = await probe.run(recovering=not chk.fsm.up)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a checker bug must not kill the loop: count it as a failure
                    log.exception("%s on %s: internal error", chk.cfg.kind, chk.target.label)
                    result = Result(False, f"{chk.cfg.kind} internal error: {exc!r}")
                if generation != self._generation:
                    break
                eff, delay = runtime.on_result(chk, result)
                self._execute(eff)
                await asyncio.sleep(probe.next_delay(delay))
        except asyncio.CancelledError:
            pass
        finally:
            await probe.close()

    def _execute(self, eff: Effects) -> None:
        for level, message in eff.logs:
            log.log(level, "%s", message)
        if eff.requests:
            try:
                self._apply(list(eff.requests))
            except Exception:
                log.exception("apply of %d control requests failed", len(eff.requests))
        for script, why in eff.scripts:
            self._scripts.spawn(script, why)
        g = self.config.global_defs
        for fifo in {g.notify_fifo, g.lvs_notify_fifo} - {None}:
            for line in eff.fifo:
                write_fifo(fifo, line)
