"""Flows the kernel fast path carries go on across what happens around them.

An lvsd restart (SIGTERM, then kill -9): the program stays attached and the flow map pinned, so the
kernel forwards the download while no lvsd runs; the next lvsd adopts the connection from the map
(listed, counted, offloaded) and the download completes with the server's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal

import pytest

from pylvs.lab.netns import wait_for
from pylvs.lab.topology import VIP, NatLab

RATE = "2500K"  # bytes/s: the 64 MiB download lasts ~25 s, through two restarts


@pytest.fixture(scope="module")
def lab():
    lab = NatLab(n_rs=1)
    try:
        lab.up(udp=False)
        with open(os.path.join(lab.net.tmp, "rules"), "w") as f:
            f.write(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {lab.rips[0]}:{lab.rport} -m -w 1\n")
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
                         "--speed-time", "3", "--speed-limit", "1000", *part, f"http://{VIP}/big",
                         log=f"{name}.log")


def received(lab, name: str) -> int:
    try:
        return os.path.getsize(os.path.join(lab.net.tmp, name))
    except FileNotFoundError:
        return 0


def grew(lab, name: str, nbytes: int) -> None:
    """The download's file grows by `nbytes` within a few seconds (curl's pacing writes in bursts)."""
    before = received(lab, name)
    wait_for(lambda: received(lab, name) >= before + nbytes, timeout=6, what=f"{name} to grow by {nbytes} bytes")


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


def outbytes(lab) -> int:
    line = lab.lvsadm("-L", "-n", "--stats", "--exact").stdout.splitlines()[3]
    return int(line.split()[6])


def test_a_download_goes_on_across_a_stop_and_a_kill_of_lvsd(lab):
    start(lab)
    assert lab.curl(f"http://{VIP}/").returncode == 0  # the director learns its neighbours
    proc = download(lab, "restart.bin")
    try:
        wait_for(lambda: status(lab)["offloaded_conns"] == 1, timeout=5, what="the download in the kernel map")
        for n, sig in enumerate((signal.SIGTERM, signal.SIGKILL), 1):
            code = lab.stop_lvsd(sig)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            # No lvsd: the kernel goes on forwarding it (8 MiB: more than the client's socket buffer holds).
            grew(lab, "restart.bin", 8 << 20)
            start(lab)
            wait_for(lambda n=n: lab.lvsd_log().count("adopted 1 connections") == n, timeout=3, what="the adoption")
            assert status(lab)["offloaded_conns"] == 1, lab.lvsd_log()
            listing = established(lab)
            assert len(listing) == 1 and f"{lab.rips[0]}:{lab.rport}" in listing[0], listing
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


def test_a_stop_with_flush_flows_takes_the_fast_path_out(lab):
    start(lab, "--flush-flows")
    assert lab.curl(f"http://{VIP}/").returncode == 0
    assert lab.stop_lvsd() == 0
    assert os.listdir(os.path.join(lab.net.bpffs(), "pylvs")) == []
    for ifname in lab.director_interfaces:
        filters = lab.net.exec("director", "tc", "filter", "show", "dev", ifname, "ingress").stdout
        assert "bpf" not in filters, filters
