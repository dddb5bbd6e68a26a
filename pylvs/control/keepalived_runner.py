"""Running lvsd from keepalived.conf: load it, run its health checks, reload it on SIGHUP.

The checks live in their own thread (pylvs.health.manager); the changes they decide reach the
packet loop only through `apply`, which lvsd makes thread-safe by queueing. Reloads parse and
diff in a short-lived thread of their own, so a large or slow configuration never stalls packets;
a configuration that fails to load leaves the running table untouched, as keepalived does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pylvs import keepalived
from pylvs.health.manager import HealthManager

log = logging.getLogger("pylvs.keepalived")
EXIT_CONFIG = 4  # keepalived's KEEPALIVED_EXIT_CONFIG


class KeepalivedRunner:
    def __init__(self, path: str, apply: Callable[[list[dict[str, Any]]], None], config_id: str | None = None,
                 **manager_options: Any) -> None:
        self.path = path
        self.config_id = config_id
        self.config = keepalived.load(path, config_id)  # as loaded at start (VRRP is not reloaded)
        self.manager = HealthManager(self.config, apply, **manager_options)
        self._reloading = threading.Lock()

    def start(self) -> None:
        self.manager.start()

    def reload(self, done: Callable[[str], None] | None = None) -> bool:
        """Re-read the file and apply the difference, in the background. False if one is running.
        `done` hears the outcome in words from the reload's thread, after its changes were applied."""
        if not self._reloading.acquire(blocking=False):
            return False
        threading.Thread(target=self._reload, args=(done,), name="pylvs-reload", daemon=True).start()
        return True

    def _reload(self, done: Callable[[str], None] | None = None) -> None:
        outcome = f"reload of {self.path} did not finish"
        try:
            config = keepalived.load(self.path, self.config_id)
        except keepalived.ConfigError as exc:
            log.error("Reload failed, keeping the running configuration: %s", exc)
            outcome = f"reload failed, running configuration kept: {exc}"
            return
        else:
            changes = self.manager.reload(config)
            log.info("Reloaded %s: %d change(s) applied", self.path, len(changes))
            outcome = f"reloaded {self.path}: {len(changes)} change(s)"
        finally:
            self._reloading.release()
            if done is not None:
                done(outcome)

    def status(self) -> dict[str, Any]:
        return self.manager.status()

    def stop(self) -> None:
        self.manager.stop(release=False)  # lvsd's table goes with lvsd
