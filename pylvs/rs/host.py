"""Make this host a real server for DR or TUN, undo it, and say what is missing (ipvs.md §4.3, §4.4).

Both methods: the VIP on lo (/32), so the host accepts packets for it and answers from it; ARP
kept quiet about it (arp_ignore=1: answer only for addresses of the asking interface;
arp_announce=2: never use it as the source of our own ARP requests), or the host would steal the
VIP from the director on a shared segment. TUN adds decapsulation: the kernel's tunnel device when
it has one (tunl0, gre0, fou for GUE), else the userspace decapsulator (decap.py) with a TUN
device, and rp_filter relaxed where the decapsulated packets come in (their source, the client,
is routed through another interface).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from pylvs.rs import net, state, sysctl
from pylvs.rs.net import NetError, Runner
from pylvs.rs.net import run as default_runner

METHODS = ("dr", "tun")
TUN_TYPES = ("ipip", "gue", "gre")
DECAP_MODES = ("auto", "kernel", "userspace")
KERNEL_DEVICE = {"ipip": "tunl0", "gue": "tunl0", "gre": "gre0"}  # fallback devices the modules create
ARP_IGNORE_OK = (1, 2, 8)  # values that keep the host from answering ARP for an address on lo
DEFAULT_DEV = "lvsrs0"


class SetupError(RuntimeError):
    pass


@dataclass
class Config:
    vips: list[str] = field(default_factory=list)
    method: str = "dr"
    tun_type: str = "ipip"
    tun_port: int = 0
    decap: str = "auto"
    dev: str = DEFAULT_DEV

    def validate(self) -> None:
        if not self.vips:
            raise SetupError("at least one --vip is needed")
        if self.method not in METHODS:
            raise SetupError(f"method must be one of {', '.join(METHODS)}")
        if self.method == "tun":
            if self.tun_type not in TUN_TYPES:
                raise SetupError(f"tunnel type must be one of {', '.join(TUN_TYPES)}")
            if self.tun_type == "gue" and not 0 < self.tun_port < 65536:
                raise SetupError("a GUE tunnel needs --tun-port")


class Host:
    """The current network namespace, as far as a real server is concerned."""

    def __init__(self, state_dir: str | None = None, runner: Runner = default_runner,
                 sysctl_root: str = sysctl.ROOT) -> None:
        self.dir = state_dir or state.default_dir()
        self.runner = runner
        self.root = sysctl_root
        self.log: list[str] = []

    def say(self, text: str) -> None:
        self.log.append(text)

    # -- up -----------------------------------------------------------------------------------

    def up(self, cfg: Config) -> list[str]:
        cfg.validate()
        st = state.State.load(self.dir) or state.State()
        st.method = cfg.method
        self._set(st, "all", "arp_ignore", 1, keep=ARP_IGNORE_OK)
        self._set(st, "lo", "arp_ignore", 1, keep=ARP_IGNORE_OK)
        self._set(st, "all", "arp_announce", 2)
        self._set(st, "lo", "arp_announce", 2)
        for vip in cfg.vips:
            if net.add_address("lo", vip, self.runner):
                self.say(f"added {vip}/32 to lo")
                if vip not in st.vips:
                    st.vips.append(vip)
            else:
                self.say(f"{vip} was already on lo")
        st.save(self.dir)
        if cfg.method == "tun":
            self._tunnel_up(st, cfg)
        elif st.decap:
            self._tunnel_down(st)  # switching from TUN to DR
        st.save(self.dir)
        return self.log

    def _set(self, st: state.State, iface: str, key: str, value: int, keep: tuple[int, ...] = ()) -> None:
        """Set a sysctl unless it already has an acceptable value; remember the original once."""
        old = sysctl.get(iface, key, self.root)
        if old is None:
            raise SetupError(f"no sysctl net.ipv4.conf.{iface}.{key}")
        if old == value or old in keep:
            return
        st.saved.setdefault(f"{iface}/{key}", old)
        sysctl.put(iface, key, value, self.root)
        self.say(f"net.ipv4.conf.{iface}.{key} = {value} (was {old})")

    def _tunnel_up(self, st: state.State, cfg: Config) -> None:
        same = (st.decap and st.tun_type == cfg.tun_type and st.tun_port == cfg.tun_port
                and (st.decap == "kernel" or state.running_decap(self.dir)))
        if same and cfg.decap in ("auto", st.decap):
            self._refresh_decap(st, cfg)
            return
        if st.decap:
            self._tunnel_down(st)
        st.tun_type, st.tun_port = cfg.tun_type, cfg.tun_port
        device = None if cfg.decap == "userspace" else self._kernel_tunnel(cfg)
        if device is None and cfg.decap == "kernel":
            raise SetupError(f"the kernel has no {cfg.tun_type} tunnel support (ipip/ip_gre/fou modules)")
        if device is not None:
            st.decap, st.device = "kernel", device
            st.fou_port = cfg.tun_port if cfg.tun_type == "gue" else 0
            net.set_up(device, self.runner)
            self._set(st, device, "rp_filter", 0)
            self.say(f"decapsulation by the kernel on {device}")
        else:
            st.decap = "userspace"
            st.device = self._spawn_decap(cfg)
            self.say(f"decapsulation in userspace: lvs-rs decap on TUN device {st.device} (pid "
                     f"{state.read_pid(self.dir)})")
        self._relax_all_rp_filter(st)

    def _relax_all_rp_filter(self, st: state.State) -> None:
        """The decapsulated packets come in on the tunnel device, which has no address, and the kernel
        drops every packet on an address-less device unless its rp_filter, max(all, device), is 0
        (fib_validate_source), loose mode (2) included. So `all` goes to 0, and each other interface
        that took its value from `all` gets that value of its own, so that it stays as strict."""
        old = sysctl.get("all", "rp_filter", self.root)
        if not old:
            return
        for iface in sysctl.interfaces(self.root):
            own = sysctl.get(iface, "rp_filter", self.root)
            if iface != st.device and own is not None and own < old:
                self._set(st, iface, "rp_filter", old)
        self._set(st, "all", "rp_filter", 0)

    def _refresh_decap(self, st: state.State, cfg: Config) -> None:
        """Already decapsulating this tunnel: a userspace decapsulator must learn new VIPs."""
        if st.decap == "userspace":
            pid = state.running_decap(self.dir)
            if pid is not None:
                state.stop(pid)
            st.device = self._spawn_decap(cfg, vips=sorted(set(cfg.vips) | set(st.vips)))
        self.say(f"decapsulation already set up ({st.decap}, {st.device})")

    def _kernel_tunnel(self, cfg: Config) -> str | None:
        """The kernel's fallback tunnel device for this type, if the kernel can decapsulate it (IPv6 VIPs:
        IPv6-in-IPv6, decapsulated in userspace by lvs-rs)."""
        if any(":" in vip for vip in cfg.vips):
            return None
        kind = "gre" if cfg.tun_type == "gre" else "ipip"
        probe = "lvsrs-probe"
        if net.ip("link", "add", "name", probe, "type", kind, runner=self.runner, check=False).returncode:
            return None
        net.ip("link", "del", probe, runner=self.runner, check=False)
        if cfg.tun_type == "gue":
            res = net.ip("fou", "add", "port", str(cfg.tun_port), "gue", runner=self.runner, check=False)
            if res.returncode and "exists" not in res.stderr.lower():
                return None
        return KERNEL_DEVICE[cfg.tun_type]

    def _spawn_decap(self, cfg: Config, vips: list[str] | None = None) -> str:
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        pidfile = state.pidfile(self.dir)
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        cmd = [sys.executable, "-m", "pylvs.cli.lvs_rs", "decap", "--tun-type", cfg.tun_type,
               "--tun-port", str(cfg.tun_port), "--dev", cfg.dev, "--pidfile", pidfile]
        for vip in vips or cfg.vips:
            cmd += ["--vip", vip]
        logpath = os.path.join(self.dir, "decap.log")
        with open(logpath, "ab") as logfile:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                                    start_new_session=True, close_fds=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if state.read_pid(self.dir) == proc.pid:
                return cfg.dev
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        with open(logpath, errors="replace") as f:
            tail = f.read()[-800:].strip()
        raise SetupError(f"the decapsulator did not start: {tail or 'no output'}")

    # -- down ---------------------------------------------------------------------------------

    def down(self, vips: list[str] | None = None) -> list[str]:
        st = state.State.load(self.dir)
        if st is None and not vips:
            self.say("nothing to undo (no state recorded for this namespace)")
            return self.log
        st = st or state.State()
        if st.decap:
            self._tunnel_down(st)
        for vip in sorted(set(st.vips) | set(vips or [])):
            if net.del_address("lo", vip, self.runner):
                self.say(f"removed {vip} from lo")
        for name, value in sorted(st.saved.items()):
            iface, key = name.split("/", 1)
            if sysctl.get(iface, key, self.root) is not None:
                sysctl.put(iface, key, value, self.root)
                self.say(f"net.ipv4.conf.{iface}.{key} = {value} (restored)")
        state.remove(self.dir)
        return self.log

    def _tunnel_down(self, st: state.State) -> None:
        if st.decap == "userspace":
            pid = state.running_decap(self.dir)
            if pid is not None:
                state.stop(pid)
                self.say(f"stopped the decapsulator (pid {pid}); {st.device} is gone with it")
        elif st.decap == "kernel":
            if st.fou_port:
                net.ip("fou", "del", "port", str(st.fou_port), runner=self.runner, check=False)
                self.say(f"removed the GUE receive port {st.fou_port}")
            saved = st.saved.pop(f"{st.device}/rp_filter", None)
            if saved is not None and sysctl.get(st.device, "rp_filter", self.root) is not None:
                sysctl.put(st.device, "rp_filter", saved, self.root)
        st.decap = st.device = ""
        st.fou_port = 0

    # -- check --------------------------------------------------------------------------------

    def check(self, cfg: Config | None = None) -> list[str]:
        """What keeps this host from being a working real server, in plain words (empty: nothing)."""
        st = state.State.load(self.dir)
        if cfg is None or not cfg.vips:
            if st is None:
                return ["nothing is set up here (lvs-rs up was not run in this namespace)"]
            cfg = Config(vips=list(st.vips), method=st.method or "dr", tun_type=st.tun_type or "ipip",
                         tun_port=st.tun_port, dev=st.device or DEFAULT_DEV)
        problems = []
        on_lo = net.addresses("lo", self.runner)
        for vip in cfg.vips:
            if vip not in on_lo:
                problems.append(f"VIP {vip} is not on lo: the host would drop packets for it")
        for iface in sysctl.interfaces(self.root):
            if iface == "lo" or iface == cfg.dev or iface in KERNEL_DEVICE.values():
                continue
            ignore = sysctl.effective(iface, "arp_ignore", self.root)
            if ignore not in ARP_IGNORE_OK:
                problems.append(f"arp_ignore on {iface} is {ignore}: the host would answer ARP for the VIP "
                                f"(needs 1, e.g. net.ipv4.conf.all.arp_ignore=1)")
            announce = sysctl.effective(iface, "arp_announce", self.root)
            if announce != 2:
                problems.append(f"arp_announce on {iface} is {announce}: the host may announce the VIP in "
                                f"its own ARP requests (needs 2)")
        if cfg.method == "tun":
            problems += self._check_tunnel(st, cfg)
        return problems

    def _check_tunnel(self, st: state.State | None, cfg: Config) -> list[str]:
        if st is None or not st.decap:
            return [f"nothing decapsulates {cfg.tun_type}: run lvs-rs up --method tun"]
        problems = []
        if st.tun_type != cfg.tun_type or st.tun_port != cfg.tun_port:
            problems.append(f"decapsulation is set up for {st.tun_type} (port {st.tun_port}), not for "
                            f"{cfg.tun_type} (port {cfg.tun_port})")
        if st.decap == "userspace" and state.running_decap(self.dir) is None:
            problems.append("the userspace decapsulator is not running (its TUN device is gone with it)")
        link = net.link_state(st.device, self.runner)
        if link != "up":
            problems.append(f"the tunnel device {st.device} is {'missing' if link is None else 'down'}")
        elif sysctl.effective(st.device, "rp_filter", self.root):
            problems.append(f"rp_filter is on for {st.device}, which has no address: the kernel drops every "
                            f"decapsulated packet (set net.ipv4.conf.all.rp_filter and .{st.device}.rp_filter to 0)")
        return problems


__all__ = ["Config", "Host", "SetupError", "NetError"]
