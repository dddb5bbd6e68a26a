"""Running MISC_CHECK and notify scripts: as whom, whether it is safe, and with a time limit.

* The user is the script's own `user [group]`, else global `script_user`, else the
  `keepalived_script` account when it exists, else lvsd's own user. Privileges are dropped in
  the child (subprocess `user=`/`group=`/`extra_groups=`), never in lvsd.
* With `enable_script_security`, a script that would run as root while it, or a directory above
  it, is writable by someone other than root is refused, as keepalived does.
* Each script runs in its own session; a time-out sends SIGTERM to its process group, then
  SIGKILL 2 s later, and counts as a failure.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import shutil
import signal
import stat
from dataclasses import dataclass

from pylvs.health.aio import within
from pylvs.keepalived.model import GlobalDefs, Script

log = logging.getLogger("pylvs.health")
DEFAULT_SCRIPT_USER = "keepalived_script"
KILL_DELAY = 2.0


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str


@dataclass(frozen=True)
class ScriptResult:
    status: int | None  # exit status; negative: killed by that signal; None: did not run or timed out
    timed_out: bool = False
    error: str | None = None

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.error:
            return self.error
        if self.status is not None and self.status < 0:
            return f"killed by signal {-self.status}"
        return f"exited with status {self.status}"


def lookup(user: str, group: str | None = None) -> Identity:
    """An account by name (or number), with its group and supplementary groups."""
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    gid = entry.pw_gid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return Identity(entry.pw_uid, gid, groups, entry.pw_name)


def unsafe_path(path: str) -> str | None:
    """The first of the script or its directories that a non-root user could change, if any."""
    current = os.path.realpath(path)
    while True:
        try:
            st = os.stat(current)
        except OSError:
            return current
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


class ScriptRunner:
    def __init__(self, global_defs: GlobalDefs) -> None:
        self._warned: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.configure(global_defs)

    def configure(self, global_defs: GlobalDefs) -> None:
        """(Re)read the global script settings, e.g. on reload."""
        self.security = global_defs.enable_script_security
        self.default_user = global_defs.script_user
        self.default_group = global_defs.script_group
        self._default: Identity | None | bool = False  # False: not resolved yet
        self._accounts: dict[tuple[str, str | None], Identity | None] = {}  # name lookups can be slow (NSS)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _default_identity(self) -> Identity | None:
        if self._default is False:
            self._default = None
            name = self.default_user or DEFAULT_SCRIPT_USER
            try:
                self._default = lookup(name, self.default_group)
            except (KeyError, ValueError):
                self._warn_once("default", f"Unable to resolve default script username '{name}' - ignoring")
        return self._default if isinstance(self._default, Identity) else None

    def identity(self, script: Script) -> Identity | None:
        """Whom to run as; None means lvsd's own user (nothing to change or nothing we may change)."""
        ident: Identity | None
        if script.user:
            key = (script.user, script.group)
            if key not in self._accounts:
                try:
                    self._accounts[key] = lookup(script.user, script.group)
                except (KeyError, ValueError):
                    self._accounts[key] = None
                    self._warn_once(f"user:{script.user}", f"Unknown script user {script.user} - running as "
                                                           f"default")
            ident = self._accounts[key] or self._default_identity()
        else:
            ident = self._default_identity()
        if ident is None or (ident.uid == os.geteuid() and ident.gid == os.getegid()):
            return None
        if os.geteuid() != 0:
            self._warn_once(f"noroot:{ident.name}", f"Cannot run scripts as {ident.name} without root - running "
                                                    f"them as uid {os.geteuid()}")
            return None
        return ident

    def refusal(self, script: Script, ident: Identity | None) -> str | None:
        """Why the script must not run, if it must not."""
        path = script.command[0]
        resolved = path if os.path.isabs(path) else shutil.which(path)
        if resolved is None or not os.path.exists(resolved):
            return f"script {path} not found"
        as_root = (ident.uid if ident else os.geteuid()) == 0
        if not as_root:
            return None
        bad = unsafe_path(resolved)
        if bad is None:
            return None
        if self.security:
            self._warn_once(f"unsafe:{resolved}", f"Unsafe permissions found for script '{resolved}' - disabling.")
            return f"unsafe permissions on {bad}"
        self._warn_once("violation", "SECURITY VIOLATION - scripts are being executed but script_security not "
                                     "enabled.")
        return None

    async def run(self, script: Script, timeout: float | None) -> ScriptResult:
        ident = self.identity(script)
        reason = self.refusal(script, ident)
        if reason is not None:
            return ScriptResult(None, error=reason)
        extra = {}
        if ident is not None:
            extra = {"user": ident.uid, "group": ident.gid, "extra_groups": list(ident.groups)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *script.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True, **extra)
        except OSError as exc:
            return ScriptResult(None, error=f"cannot run: {exc.strerror or exc}")
        try:
            status = await within(timeout, proc.wait())
        except TimeoutError:
            await self._kill(proc)
            return ScriptResult(None, timed_out=True)
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(proc))
            raise
        return ScriptResult(status)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        """SIGTERM to the script's process group, SIGKILL if it is still there 2 s later."""
        for sig, wait in ((signal.SIGTERM, KILL_DELAY), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                await within(wait, proc.wait())
                return
            except TimeoutError:
                continue

    def spawn(self, script: Script, why: str, timeout: float | None = None) -> asyncio.Task:
        """Start a notify script without waiting for it (keepalived does not wait either)."""
        async def go() -> None:
            result = await self.run(script, timeout)
            if result.status != 0:
                log.warning("%s script %s %s", why, script.text, result.describe())

        task = asyncio.get_running_loop().create_task(go())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """Give running notify scripts `timeout` seconds, then stop them."""
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=KILL_DELAY + 1)
