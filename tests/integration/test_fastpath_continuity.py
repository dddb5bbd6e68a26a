"""Flows the kernel fast path carries go on across what happens around them.

An lvsd restart (SIGTERM, then kill -9): the program stays attached and the flow map pinned, so the
kernel forwards the download while no lvsd runs; the next lvsd adopts the connection from the map
(listed, counted, offloaded) and the download completes with the server's bytes. A real server whose
MAC changes mid-download: the recipes, which copied the old MAC, are written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time

import pytest

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab

RATE = "2500K"  # bytes/s: the 64 MiB download lasts ~25 s, through two restarts


@pytest.fixture(scope="module")
def lab():
    yield from lab_with_rules(NatLab(n_rs=1), lambda lab: lab.up(udp=False), VIP, "rport", "-m")


def lab_with_rules(lab, up, vip: str, port_attr: str, method: str):
    """A lab brought `up`, with the --config file of one service at `vip` over its real servers
    (`method`: -m, -g); taken down, and nothing left, at the end."""
    try:
        up(lab)
        lab.vip, lab.rs_port = vip, getattr(lab, port_attr)
        lines = [f"-A -t {vip}:80 -s rr"] + [f"-a -t {vip}:80 -r {rip}:{lab.rs_port} {method} -w 1"
                                         for rip in lab.rips]
        with open(os.path.join(lab.net.tmp, "rules"), "w") as f:
            f.write("\n".join(lines) + "\n")
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def start(lab, *extra: str) -> None:
    lab.start_lvsd("--datapath", "bpf", "--bpffs", lab.net.bpffs(), "--config", os.path.join(lab.net.tmp, "rules"),
                   *extra)


def status(lab) -> dict:
    return json.loads(lab.lvsadm("--datapath", "--json").stdout)


def download(lab, name: str, size: int | None = None):
    """A paced download of /big (its first `size` bytes) into a file; curl fails (exit 28) if it stalls 3 s."""
    part = ("-r", f"0-{size - 1}") if size else ()
    return lab.net.popen("client", "curl", "-sS", "-o", os.path.join(lab.net.tmp, name), "--limit-rate", RATE,
                         "--speed-time", "3", "--speed-limit", "1000", *part, f"http://{lab.vip}/big",
                         log=f"{name}.log")


def acked(lab) -> int:
    """The bytes the client has acknowledged to the real servers on the download's connection."""
    total = 0
    for name in lab.rs_names:
        out = lab.net.exec(name, "ss", "-Htin", "state", "established", f"sport = :{lab.rs_port}").stdout
        total += sum(map(int, re.findall(r"bytes_acked:(\d+)", out)))
    return total


def acknowledged(lab, nbytes: int) -> None:
    """The download moves on by `nbytes` within 10 s (curl, ahead of its pace after a burst, may read
    nothing for seconds)."""
    before = acked(lab)
    wait_for(lambda: acked(lab) >= before + nbytes, timeout=10, what=f"{nbytes} more bytes acknowledged")


def sha256(path: str, size: int = -1) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


def finished(lab, proc, name: str, size: int = -1) -> None:
    """The download ended well, with the server's bytes."""
    with open(os.path.join(lab.net.tmp, f"{name}.log")) as log:
        assert proc.wait(40) == 0, log.read()
    assert sha256(os.path.join(lab.net.tmp, name)) == sha256(os.path.join(lab.net.tmp, "big.bin"), size)


def established(lab) -> list[str]:
    return [ln for ln in lab.lvsadm("-L", "-n", "-c").stdout.splitlines() if re.search(r" ESTABLISHED ", ln)]


def serving(lab) -> str:
    """The real server the download runs on (its own view)."""
    for name, rip in zip(lab.rs_names, lab.rips, strict=True):
        if lab.net.exec(name, "ss", "-Htn", "state", "established", f"sport = :{lab.rs_port}").stdout.strip():
            return rip
    return "none"


def outbytes(lab) -> int:
    line = lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines()[3]
    return int(line.split()[6])


def test_a_download_goes_on_across_a_stop_and_a_kill_of_lvsd(lab):
    start(lab)
    assert lab.curl(f"http://{lab.vip}/").returncode == 0  # the director learns its neighbours
    proc = download(lab, "restart.bin")
    try:
        wait_for(lambda: status(lab)["offloaded_conns"] == 1, timeout=5,
                 what=f"the download in the kernel map ({status(lab)})")
        for n, sig in enumerate((signal.SIGTERM, signal.SIGKILL), 1):
            code = lab.stop_lvsd(sig)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            # No lvsd: the kernel goes on forwarding it, both ways (the server's data is acknowledged).
            acknowledged(lab, 4 << 20)
            start(lab)
            wait_for(lambda n=n: lab.lvsd_log().count("adopted 1 connections") == n, timeout=3, what="the adoption")
            assert status(lab)["offloaded_conns"] == 1, lab.lvsd_log()
            listing = established(lab)
            assert len(listing) == 1 and f"{serving(lab)}:{lab.rs_port}" in listing[0], listing
            # The engine reads the kernel's counts back: statistics and expiry go on.
            first = outbytes(lab)
            if sig == signal.SIGTERM:
                wait_for(lambda first=first: outbytes(lab) > first + (1 << 20), timeout=10,
                         what="kernel-forwarded packets counted")
        finished(lab, proc, "restart.bin")
        assert outbytes(lab) > first + (1 << 20)
        assert status(lab)["counters"]["hit"] > 100  # this lvsd's program forwarded the rest
    finally:
        lab.net.kill(proc)
        lab.stop_lvsd()


def fast_path_left(lab) -> list[str]:
    """What of a fast path is in the director's kernel: pinned flow maps, our filter on interfaces."""
    left = os.listdir(os.path.join(lab.net.bpffs(), "pylvs"))
    for ifname in lab.director_interfaces:
        if "pylvs_fastpath" in lab.net.exec("director", "tc", "filter", "show", "dev", ifname, "ingress").stdout:
            left.append(ifname)
    return left


def test_flush_flows_or_the_python_datapath_take_the_fast_path_out(lab):
    start(lab, "--flush-flows")
    assert lab.curl(f"http://{lab.vip}/").returncode == 0
    assert lab.stop_lvsd() == 0
    assert fast_path_left(lab) == [], lab.lvsd_log()
    start(lab)
    assert lab.curl(f"http://{lab.vip}/").returncode == 0
    assert lab.stop_lvsd() == 0
    assert fast_path_left(lab)  # a plain stop leaves it for the next lvsd
    lab.start_lvsd("--datapath", "python", "--bpffs", lab.net.bpffs())
    try:
        assert fast_path_left(lab) == [], lab.lvsd_log()
        assert "removed the program and flows a previous lvsd left" in lab.lvsd_log()
    finally:
        lab.stop_lvsd()


def test_recipes_follow_a_real_server_whose_mac_changes(lab):
    start(lab)
    assert lab.curl(f"http://{lab.vip}/").returncode == 0
    proc = download(lab, "mac.bin", 24 << 20)
    try:
        wait_for(lambda: status(lab)["offloaded_conns"] == 1, timeout=5,
                 what=f"the download in the kernel map ({status(lab)})")
        time.sleep(0.5)
        # The real server's interface gets another MAC (it announces it with a gratuitous ARP).
        lab.net.ip(lab.rs_names[0], "link", "set", "eth0", "address", "02:00:5e:10:00:99")
        hits = status(lab)["counters"]["hit"]
        acknowledged(lab, 4 << 20)
        assert status(lab)["counters"]["hit"] > hits + 100  # still in the kernel, with the new MAC
        assert status(lab)["offloaded_conns"] == 1
        assert "02:00:5e:10:00:99" in lab.net.exec("director", "ip", "neigh", "show", lab.rips[0]).stdout
        finished(lab, proc, "mac.bin", 24 << 20)
    finally:
        lab.net.kill(proc)
        lab.stop_lvsd()
