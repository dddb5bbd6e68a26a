"""Network-namespace plumbing for labs and tests: namespaces, veth pairs, bridges, processes.

Every object carries a per-run prefix so concurrent runs never collide, and `Netns.teardown`
removes everything it made (processes first, then namespaces), also after a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence

from pylvs.datapath.bpf import loader


class LabError(RuntimeError):
    pass


def run(cmd: Sequence[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and result.returncode:
        raise LabError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Netns:
    """A set of namespaces named `<prefix>-<role>` and the processes started in them."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"plvs{secrets.token_hex(3)}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.tmp = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        os.chmod(self.tmp, 0o755)  # servers that drop privileges (nginx workers) read files here
        self._links = 0

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def add(self, role: str) -> str:
        ns = self.name(role)
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self.ip(role, "link", "set", "lo", "up")
        return ns

    def ip(self, role: str, *args: str) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.name(role), *args])

    def exec(self, role: str, *cmd: str, check: bool = True, timeout: float | None = 60) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.name(role), *cmd], check=check, timeout=timeout)

    def popen(self, role: str, *cmd: str, log: str | None = None, **kw) -> subprocess.Popen:
        """Start a process in a namespace; it is killed at teardown. Output goes to `log` in tmp."""
        out = open(os.path.join(self.tmp, log), "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(["ip", "netns", "exec", self.name(role), *cmd], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def sysctl(self, role: str, key: str, value: str | int) -> None:
        self.exec(role, "sysctl", "-qw", f"{key}={value}")

    def veth(self, role_a: str, if_a: str, role_b: str, if_b: str) -> None:
        """A veth pair with one end in each namespace, both up."""
        self._links += 1
        tmp_a, tmp_b = f"{self.prefix}a{self._links}", f"{self.prefix}b{self._links}"
        run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        for tmp, role, name in ((tmp_a, role_a, if_a), (tmp_b, role_b, if_b)):
            run(["ip", "link", "set", tmp, "netns", self.name(role)])
            self.ip(role, "link", "set", tmp, "name", name)
            self.ip(role, "link", "set", name, "up")

    def bridge(self, role: str, name: str) -> None:
        self.ip(role, "link", "add", name, "type", "bridge")
        self.ip(role, "link", "set", name, "up")

    def mtu(self, role: str, ifname: str, mtu: int) -> None:
        self.ip(role, "link", "set", ifname, "mtu", str(mtu))

    def addr(self, role: str, ifname: str, cidr: str) -> None:
        self.ip(role, "addr", "add", cidr, "dev", ifname)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 5.0) -> int | None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(wait)
        return proc.returncode

    def bpffs(self) -> str:
        """A BPF filesystem of this run's own, outside /sys (which `ip netns exec` replaces), so that maps a
        process in a namespace pins there outlive it; unmounted, with its pins, at teardown."""
        path = os.path.join(self.tmp, "bpffs")
        loader.ensure_bpffs(path)
        return path

    def teardown(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.kill(proc)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        bpffs = os.path.join(self.tmp, "bpffs")
        if loader.is_bpffs(bpffs):
            run(["umount", bpffs], check=False)
        for ns in reversed(self.namespaces):
            # Anything still running inside (daemons that forked) goes before the namespace.
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Namespaces with this run's prefix that still exist (should be none after teardown)."""
        out = run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.prefix + "-")]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise LabError(f"timed out waiting for {what}")


class Capture:
    """tcpdump in a namespace for the duration of a `with` block; `packets()` reads it with scapy."""

    def __init__(self, net: Netns, role: str, iface: str, bpf: str = "", name: str = "capture") -> None:
        self.net, self.role, self.iface, self.bpf = net, role, iface, bpf
        self.path = os.path.join(net.tmp, f"{name}-{role}-{iface}.pcap")
        self.log = f"{name}-{role}-{iface}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Capture:
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        cmd = [tcpdump, "-i", self.iface, "-U", "-n", "--immediate-mode", "-s", "256", "-w", self.path]
        self.proc = self.net.popen(self.role, *cmd, *(self.bpf.split() if self.bpf else []), log=self.log)
        logfile = os.path.join(self.net.tmp, self.log)

        def listening() -> bool:
            try:
                with open(logfile) as f:
                    return "listening on" in f.read()
            except FileNotFoundError:
                return False

        wait_for(listening, what=f"tcpdump on {self.role}/{self.iface}")
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # let the last packets reach the file
        if self.proc is not None:
            self.net.kill(self.proc, signal.SIGINT)

    def packets(self) -> list:
        from scapy.utils import rdpcap  # scapy is a test/lab dependency, not a runtime one

        return list(rdpcap(self.path)) if os.path.exists(self.path) else []
