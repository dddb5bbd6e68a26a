"""The BGP speaker of lvsd: a BIRD 2 child process, configured and driven by lvsd.

lvsd states which VIPs it wants announced (`want`, from the packet loop after each change of the
service table); a worker thread writes BIRD's configuration and has BIRD re-read it over its control
socket (`configure`: only the static protocol of VIPs changes, so the sessions stay up and only
UPDATEs go out), and every second reads the sessions' state for `lvsadm --bgp`.

BIRD dies with lvsd: it is started through `setpriv --pdeathsig KILL`, so even after `kill -9` of
lvsd the kernel kills BIRD, closes its TCP sessions, and the routers withdraw this director's routes
at once (graceful restart is off, so they keep nothing). If the whole host or its link dies, the
routers notice when the hold time runs out. A graceful stop withdraws every VIP first, then BIRD
ends its sessions with a Cease notification. If BIRD dies on its own, lvsd starts it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from pylvs.bgp import birdctl
from pylvs.bgp.config import BgpSettings, bird_config

log = logging.getLogger(__name__)

POLL = 1.0           # seconds between reads of the sessions' state
START_TIMEOUT = 5.0  # for BIRD's control socket to answer
RESTART_DELAY = 1.0  # after BIRD died on its own
STOP_TIMEOUT = 3.0   # for BIRD to end its sessions before it is killed
MISSING = "BGP needs BIRD 2 (Debian: apt-get install bird2)"


class SpeakerError(RuntimeError):
    pass


def _program(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)
    if path is None:
        raise SpeakerError(f"{name} not found: {MISSING if name == 'bird' else 'setpriv is in util-linux'}")
    return path


def default_runtime_dir() -> str:
    """BIRD's configuration and socket: one directory per network namespace, like lvsd itself (a
    second lvsd in a namespace refuses to start, so a directory found here is a dead one's)."""
    base = "/run/pylvs" if os.access("/run", os.W_OK) else os.path.join(tempfile.gettempdir(), "pylvs")
    return os.path.join(base, f"bgp-netns-{os.stat('/proc/self/ns/net').st_ino}")


class Speaker:
    def __init__(self, cfg: BgpSettings, router_id: str, runtime_dir: str | None = None) -> None:
        self.cfg, self.router_id = cfg, router_id
        self.command = [_program("setpriv"), "--pdeathsig", "KILL", _program("bird")]
        self.dir = runtime_dir or default_runtime_dir()
        shutil.rmtree(self.dir, ignore_errors=True)  # an lvsd of this namespace killed with -9 left it
        os.makedirs(self.dir, mode=0o700)
        self.conf, self.sock = os.path.join(self.dir, "bird.conf"), os.path.join(self.dir, "bird.ctl")
        self._lock = threading.Condition()
        self._wanted: frozenset[str] = frozenset()
        self._applied: frozenset[str] | None = None  # what BIRD's configuration holds
        self._status: dict[str, Any] = {"peers": [{"address": p.address, "as": p.asn, "state": "Unknown", "since": "",
                                                   "info": "not read yet", "exported": 0} for p in cfg.peers]}
        self._stopping = False
        self._withdrawn = False
        self.restarts = 0
        self.proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        try:
            self._start_bird()
        except BaseException:
            self._stop_bird()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._thread = threading.Thread(target=self._run, name="bgp", daemon=True)
        self._thread.start()

    # -- what the packet loop calls ----------------------------------------------------------

    def want(self, vips: frozenset[str]) -> None:
        with self._lock:
            if vips != self._wanted and not self._withdrawn:
                self._wanted = vips
                self._lock.notify()

    def withdraw(self) -> None:
        """Withdraw every VIP for good (lvsd is stopping); later `want` calls change nothing."""
        with self._lock:
            self._withdrawn = True
            self._wanted = frozenset()
            self._lock.notify()

    def status(self) -> dict[str, Any]:
        with self._lock:
            status = dict(self._status)
            status.update(speaker="bird", pid=self.proc.pid if self.proc else None, restarts=self.restarts,
                          runtime_dir=self.dir,
                          local_as=self.cfg.local_as, router_id=self.router_id, hold_time=self.cfg.hold_time,
                          next_hop=self.cfg.next_hop or "self", wanted=sorted(self._wanted),
                          announced=sorted(self._applied or ()))
        return status

    def close(self) -> None:
        """Withdraw everything and stop BIRD (its sessions end with a Cease notification)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT + 2)
        self._stop_bird()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- BIRD --------------------------------------------------------------------------------

    def _write_config(self, vips: frozenset[str]) -> None:
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(bird_config(self.cfg, self.router_id, vips))
        os.replace(tmp, self.conf)

    def _start_bird(self) -> None:
        with self._lock:
            vips = self._wanted
        self._write_config(vips)
        # stdout/stderr are lvsd's: BIRD's log lines land in lvsd's log. A session of its own: a signal
        # to lvsd's process group (Ctrl-C, kill -- -PGID) reaches lvsd, which withdraws, then stops BIRD.
        self.proc = subprocess.Popen([*self.command, "-f", "-c", self.conf, "-s", self.sock],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise SpeakerError(f"bird exited with code {self.proc.returncode} at start")
            try:
                birdctl.BirdControl(self.sock, timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SpeakerError("bird did not open its control socket") from None
                time.sleep(0.05)
        with self._lock:
            self._applied = vips
        log.info("bgp: BIRD started (pid %d), local AS %d, router id %s, peers %s", self.proc.pid,
                 self.cfg.local_as, self.router_id, ", ".join(f"{p.address} AS {p.asn}" for p in self.cfg.peers))

    def _stop_bird(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # BIRD's shutdown: a Cease notification on every session
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _apply(self, vips: frozenset[str]) -> None:
        before = self._applied or frozenset()
        self._write_config(vips)
        with birdctl.BirdControl(self.sock) as bird:
            bird.command("configure")
        with self._lock:
            self._applied = vips
        for vip in sorted(vips - before):
            log.info("bgp: announcing %s/32", vip)
        for vip in sorted(before - vips):
            log.info("bgp: withdrawing %s/32", vip)

    def _poll(self) -> None:
        peers = []
        with birdctl.BirdControl(self.sock) as bird:
            for peer in self.cfg.peers:
                reply = bird.command(f"show protocols all {peer.protocol}")
                rows, details = birdctl.protocol_rows(reply), birdctl.protocol_details(reply)
                row = rows.get(peer.protocol, {})
                routes = details.get("Routes", "")
                exported = int(routes.split(" exported")[0].split()[-1]) if " exported" in routes else 0
                peers.append({"address": peer.address, "as": peer.asn,
                              "state": details.get("BGP state", row.get("info", "?")),
                              "since": row.get("since", ""), "info": row.get("info", ""),
                              "exported": exported})
        with self._lock:
            before = {p["address"]: p["state"] for p in self._status.get("peers", [])}
            self._status = {"peers": peers}
        for p in peers:
            if before.get(p["address"]) != p["state"]:
                log.info("bgp: peer %s AS %d: %s", p["address"], p["as"], p["state"])

    def _run(self) -> None:
        next_poll = 0.0
        while True:
            with self._lock:
                if not self._stopping and self._wanted == self._applied and time.monotonic() < next_poll:
                    self._lock.wait(max(0.0, next_poll - time.monotonic()))
                wanted = frozenset() if self._stopping else self._wanted
            try:
                if self.proc is None or self.proc.poll() is not None:
                    if self._stopping:
                        return
                    self._restart()
                elif wanted != self._applied:
                    self._apply(wanted)
                    next_poll = 0.0  # lvsadm --bgp shows the sessions' export counts after the change
                if self._stopping:
                    return  # withdrawn: close() stops BIRD
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL
                    self._poll()
            except (OSError, SpeakerError) as exc:
                log.warning("bgp: %s", exc)
                self._pause()
            except Exception:  # noqa: BLE001 - the thread must go on: BIRD would die with it
                log.exception("bgp: unexpected error")
                self._pause()
            if self._stopping:
                return

    def _pause(self) -> None:
        """After a failure: try again in a second (or at once when lvsd stops), not in a busy loop."""
        with self._lock:
            if not self._stopping:
                self._lock.wait(POLL)

    def _restart(self) -> None:
        code = self.proc.returncode if self.proc is not None else None
        log.warning("bgp: BIRD exited (code %s); starting it again", code)
        self.proc = None
        time.sleep(RESTART_DELAY)
        self.restarts += 1
        self._start_bird()
