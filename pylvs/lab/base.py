"""What every lab shares: its namespaces, lvsd in the director namespace, lvsadm, clients."""

from __future__ import annotations

import os
import subprocess
import sys

from pylvs.control.client import Client, ConnectFailed, ControlError
from pylvs.lab import servers
from pylvs.lab.netns import LabError, Netns, wait_for


class Lab:
    """Subclasses build the topology in `_build` and name the director's interfaces."""

    director_interfaces: tuple[str, ...] = ()

    def __init__(self, prefix: str | None = None) -> None:
        self.net = Netns(prefix)
        self.control = os.path.join(self.net.tmp, "lvsd.sock")
        self.lvsd: subprocess.Popen | None = None

    # -- the director -----------------------------------------------------------------------

    def start_lvsd(self, *extra: str) -> subprocess.Popen:
        if os.path.exists(self.control):
            os.unlink(self.control)
        interfaces = [arg for name in self.director_interfaces for arg in ("-i", name)]
        # $PYLVS_DATAPATH runs a whole test suite through one data path (lvsd's default is auto).
        datapath = os.environ.get("PYLVS_DATAPATH")
        if datapath and not any(arg.startswith("--datapath") for arg in extra):
            extra = ("--datapath", datapath, *extra)
        self.lvsd = self.net.popen("director", sys.executable, "-m", "pylvs.cli.lvsd", *interfaces,
                                   "--control", self.control, *extra, log="lvsd.log")
        try:
            wait_for(lambda: os.path.exists(self.control) or self.lvsd.poll() is not None, what="lvsd")
        except LabError:
            raise LabError(f"lvsd did not start: {self.lvsd_log()}") from None
        if self.lvsd.poll() is not None:
            raise LabError(f"lvsd exited: {self.lvsd_log()}")
        # The socket is bound first (it keeps a second lvsd out) and answered once the loop runs: only
        # then is start-up done (the data path set up, what a previous lvsd left removed or adopted).
        try:
            with Client(self.control, timeout=30) as client:
                client.request({"op": "get-info"})
        except (ConnectFailed, ControlError) as exc:
            raise LabError(f"lvsd did not answer ({exc}): {self.lvsd_log()}") from None
        return self.lvsd

    def stop_lvsd(self, sig: int = 15) -> int | None:
        if self.lvsd is None:
            return None
        code = self.net.kill(self.lvsd, sig)
        self.lvsd = None
        return code

    def lvsd_log(self) -> str:
        try:
            with open(os.path.join(self.net.tmp, "lvsd.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lvsadm(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.net.name("director"), sys.executable, "-m", "pylvs.cli.lvsadm",
               "--control", self.control, *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if check and result.returncode:
            raise LabError(f"lvsadm {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    # -- clients and servers ----------------------------------------------------------------

    def curl(self, url: str, *extra: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return self.net.exec("client", "curl", "-sS", "--max-time", str(timeout), *extra, url, check=False,
                             timeout=timeout + 5)

    def access_log(self, name: str) -> list[str]:
        return servers.access_log(self.net, name)

    def down(self) -> None:
        self.lvsd = None
        self.net.teardown()

    def __enter__(self):
        return self.up()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.down()
